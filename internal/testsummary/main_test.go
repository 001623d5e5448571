package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRealRun runs go test -json on a module with a passing package, a
// failing one and one that does not build: the summary has go test's
// closing ok and FAIL lines, the full output of the failed test and its
// failed subtest, the build error, none of the passing tests' output, and
// reports failure.
func TestRealRun(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":            "module m\n\ngo 1.22\n",
		"good/good_test.go": "package good\nimport \"testing\"\nfunc TestQuiet(t *testing.T) { t.Log(\"quiet-output\") }\n",
		"bad/bad_test.go": "package bad\nimport \"testing\"\n" +
			"func TestOK(t *testing.T) { t.Log(\"ok-output\") }\n" +
			"func TestBoom(t *testing.T) {\n t.Log(\"before-boom\")\n t.Run(\"sub\", func(t *testing.T) { t.Error(\"sub-boom\") })\n t.Run(\"fine\", func(t *testing.T) { t.Log(\"fine-output\") })\n}\n",
		"broken/broken_test.go": "package broken\nimport \"testing\"\nfunc TestX(t *testing.T) { undefinedThing() }\n",
	}
	for name, src := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "test", "-json", "-count=1", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	js, _ := cmd.Output() // fails: a package fails
	var out bytes.Buffer
	failed, err := summarize(bytes.NewReader(js), &out, time.Hour)
	if err != nil || !failed {
		t.Errorf("summarize: failed=%v err=%v", failed, err)
	}
	s := out.String()
	for _, want := range []string{"ok  \tm/good\t", "FAIL\tm/bad\t", "before-boom", "sub-boom", "--- FAIL: TestBoom", "undefinedThing", "FAIL\tm/broken"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	for _, no := range []string{"quiet-output", "ok-output", "fine-output"} {
		if strings.Contains(s, no) {
			t.Errorf("summary has a passing test's output %q:\n%s", no, s)
		}
	}
}

// TestHeartbeat: a package that runs long is named with its running time.
func TestHeartbeat(t *testing.T) {
	var out bytes.Buffer
	s := &summary{w: &out, started: map[string]time.Time{}, output: map[string][]string{}}
	s.handle(event{Action: "start", Package: "m/slow"})
	s.handle(event{Action: "start", Package: "m/quick"})
	s.handle(event{Action: "output", Package: "m/quick", Output: "ok  \tm/quick\t0.1s\n"})
	s.handle(event{Action: "pass", Package: "m/quick"})
	s.beat()
	if got := out.String(); !strings.Contains(got, "ok  \tm/quick\t0.1s\n... still running: m/slow (") || strings.Contains(got, "m/quick (") {
		t.Errorf("%q", got)
	}
}
