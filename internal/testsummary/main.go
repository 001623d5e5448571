// Command testsummary turns `go test -json` into a run a person can
// follow: each package's closing line as it completes (go test's own
// "ok  \tpkg\t1.2s" and "FAIL\tpkg\t…" lines, which CI parses), the full
// output of every failed test and of every build failure, and once a
// minute the packages still running, so a ten-minute run is never silent.
// It exits 1 when a package or test failed.
//
//	go test -json -count=1 ./... | go run ./internal/testsummary
//
// scripts/test.sh uses it. Standard library only.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	failed, err := summarize(os.Stdin, os.Stdout, time.Minute)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

// event is one line of test2json (go doc test2json).
type event struct {
	Time       time.Time
	Action     string
	Package    string
	ImportPath string
	Test       string
	Output     string
}

type summary struct {
	mu      sync.Mutex
	w       io.Writer
	started map[string]time.Time // packages running
	output  map[string][]string  // "pkg\x00Test": its output so far
	failed  bool
}

// summarize reads test2json events from r and writes the summary to w,
// listing the running packages every heartbeat. It returns whether
// anything failed.
func summarize(r io.Reader, w io.Writer, heartbeat time.Duration) (bool, error) {
	s := &summary{w: w, started: map[string]time.Time{}, output: map[string][]string{}}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(heartbeat)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				s.beat()
			}
		}
	}()
	defer func() { close(done); wg.Wait() }()

	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not an event (go vet's or the build's own text): pass it on.
			s.print(string(line) + "\n")
			continue
		}
		s.handle(e)
	}
	if err := sc.Err(); err != nil {
		return true, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed, nil
}

func (s *summary) print(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprint(s.w, text)
}

func (s *summary) handle(e event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := e.Package + "\x00" + e.Test
	switch e.Action {
	case "build-output":
		fmt.Fprint(s.w, e.Output)
	case "build-fail":
		s.failed = true
	case "start":
		s.started[e.Package] = time.Now()
	case "run":
	case "output":
		if e.Test == "" {
			// The package's own lines: its closing ok/FAIL line, a panic
			// outside a test, "no test files". Its PASS/FAIL verdict lines
			// are go test -v's, which go test without -json would not print.
			if t := strings.TrimSpace(e.Output); t != "PASS" && t != "FAIL" {
				fmt.Fprint(s.w, e.Output)
			}
			return
		}
		s.output[key] = append(s.output[key], e.Output)
	case "pass", "skip":
		if e.Test != "" {
			delete(s.output, key)
			return
		}
		delete(s.started, e.Package)
	case "fail":
		s.failed = true
		if e.Test != "" {
			// A subtest's failure is printed with its parent's, in full.
			if !strings.Contains(e.Test, "/") {
				fmt.Fprint(s.w, strings.Join(s.testOutput(e.Package, e.Test), ""))
			}
			return
		}
		// Tests that never ended (a timeout's panic): their output too.
		var left []string
		for k := range s.output {
			if p, t, _ := strings.Cut(k, "\x00"); p == e.Package && !strings.Contains(t, "/") {
				left = append(left, t)
			}
		}
		sort.Strings(left)
		for _, t := range left {
			fmt.Fprint(s.w, strings.Join(s.testOutput(e.Package, t), ""))
		}
		delete(s.started, e.Package)
	}
}

// testOutput is the output of test and its subtests, in the order it was
// written, and forgets it.
func (s *summary) testOutput(pkg, test string) []string {
	var keys []string
	for k := range s.output {
		p, t, _ := strings.Cut(k, "\x00")
		if p == pkg && (t == test || strings.HasPrefix(t, test+"/")) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys) // the parent first, then its subtests by name
	var out []string
	for _, k := range keys {
		out = append(out, s.output[k]...)
		delete(s.output, k)
	}
	return out
}

func (s *summary) beat() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.started) == 0 {
		return
	}
	var names []string
	for p, t := range s.started {
		names = append(names, fmt.Sprintf("%s (%s)", p, time.Since(t).Round(time.Second)))
	}
	sort.Strings(names)
	fmt.Fprintf(s.w, "... still running: %s\n", strings.Join(names, ", "))
}
