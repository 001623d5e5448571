package main

import (
	"bytes"
	"context"
	"fmt"
	"github.com/gatewayd/gatewayd/internal/mosquittotest"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFleetDemo builds the binaries and runs the README's main command as
// scripts/demo.sh does, so it cannot rot: run fails if any step does not
// behave (the key ceremony, READY=1, the commands' results, the four
// refusals, the two commands queued while the daemon was dead, the
// backup, the offline status), and the output must show each of them.
func TestFleetDemo(t *testing.T) {
	if _, err := mosquittotest.Binary(); err != nil {
		t.Fatal("mosquitto not found: run scripts/deps.sh")
	}
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Fatal("dbus-daemon not found: run scripts/deps.sh")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	bin := buildBinaries(t)

	var out, stderr bytes.Buffer
	if err := run(ctx, []string{"-bin", bin}, &out, &stderr); err != nil {
		t.Fatalf("%v\n%s\nstderr:\n%s", err, out.String(), stderr.String())
	}
	s := out.String()
	checkSteps(t, s, 1, Steps)
	for _, want := range []string{
		"$ gatewayctl keygen -o otto.key",
		`issued an operator credential for "otto"`,
		"$ gatewayctl issue -root fleet-root.key -kind gateway -subject dock-0042",
		"READY=1",
		`"operation": "unlock"`,
		`"state": "succeeded"`,
		`"user_id": "rider-7"`,
		"verified: command ",
		`"reason": "duplicate"`,
		`"reason": "bad_signature"`,
		`"reason": "forbidden"`,
		`"reason": "malformed"`,
		"result of background command 1:",
		"result of background command 2:",
		"gatewayd_mqtt_connected 1",
		`reason="bad_signature"} 1`,
		"backup.db: ok",
		`"state":"online"`,
		`"state":"offline"`,
		"all steps passed",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	// Both background commands, queued while the daemon was dead, have
	// their succeeded result after the restart.
	_, after, _ := strings.Cut(s, "restart gatewayd:")
	if n := strings.Count(after, `"state": "succeeded"`); n != 2 {
		t.Errorf("%d succeeded results after the restart, want 2:\n%s", n, s)
	}
}

func TestFleetDemoFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), nil, &out, &out); err == nil || !strings.Contains(err.Error(), "-bin") {
		t.Errorf("no -bin: %v", err)
	}
	if err := run(context.Background(), []string{"-bin", t.TempDir()}, &out, &out); err == nil {
		t.Error("a -bin without the binaries accepted")
	}
	if err := run(context.Background(), []string{"-bin", t.TempDir(), "-locks", "2"}, &out, &out); err == nil {
		t.Error("-locks 2 accepted")
	}
}

// checkSteps: the output numbers its steps first, first+1, ... with
// exactly n of them, as scripts/demo.sh expects from -first and -steps.
func checkSteps(t *testing.T, out string, first, n int) {
	t.Helper()
	var got []int
	for _, line := range strings.Split(out, "\n") {
		var k int
		if _, err := fmt.Sscanf(line, "== %d.", &k); err == nil {
			got = append(got, k)
		}
	}
	if len(got) != n {
		t.Errorf("%d numbered steps %v, Steps says %d", len(got), got, n)
	}
	for i, k := range got {
		if k != first+i {
			t.Errorf("steps numbered %v, want %d on", got, first)
			break
		}
	}
}

// buildBinaries builds gatewayd, gatewayctl and bluezemu as
// scripts/demo.sh does, into a temporary directory.
func buildBinaries(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	// go test puts its own go command first on the test's PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command: %v", err)
	}
	build := exec.CommandContext(t.Context(), goBin, "build", "-o", bin+string(os.PathSeparator),
		"./cmd/gatewayd", "./cmd/gatewayctl", "./cmd/bluezemu")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// syncBuffer is a bytes.Buffer for one writer and a concurrent reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFleetDemoServe: with -serve the demo runs its steps up to the
// operations, then leaves the fleet running and prints commands to paste.
// Each printed command works as printed, in the printed directory: the
// gatewayctl send to a named gateway and the one without -gateway (found
// from the retained lock presence) get verified results, mosquitto_sub
// receives what the gateway publishes, and the metrics and readiness URLs
// answer. Interrupted, the demo stops every process and returns.
func TestFleetDemoServe(t *testing.T) {
	for _, tool := range []string{"dbus-daemon", "mosquitto_sub"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run scripts/deps.sh", tool)
		}
	}
	if _, err := mosquittotest.Binary(); err != nil {
		t.Fatal("mosquitto not found: run scripts/deps.sh")
	}
	bin := buildBinaries(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-bin", bin, "-serve"}, &out, &stderr) }()
	deadline := time.After(5 * time.Minute)
	for !strings.Contains(out.String(), "Ctrl-C stops the fleet.") {
		select {
		case err := <-done:
			t.Fatalf("the demo returned before serving: %v\n%s\nstderr:\n%s", err, out.String(), stderr.String())
		case <-deadline:
			t.Fatalf("not serving after 5 minutes:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	s := out.String()
	checkSteps(t, s, 1, Steps-1)
	_, block, _ := strings.Cut(s, "== serving")
	var dir string
	var sends, subs, curls []string
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "cd "):
			dir = strings.TrimPrefix(line, "cd ")
		case strings.Contains(line, "gatewayctl send "):
			sends = append(sends, line)
		case strings.HasPrefix(line, "mosquitto_sub "):
			subs = append(subs, line)
		case strings.HasPrefix(line, "curl -s "):
			curls = append(curls, line)
		}
	}
	if dir == "" || len(sends) != 2 || len(subs) != 1 || len(curls) != 2 {
		t.Fatalf("serving block: dir %q, %d sends, %d mosquitto_sub, %d curl:\n%s", dir, len(sends), len(subs), len(curls), block)
	}
	if strings.Contains(sends[1], "-gateway") {
		t.Errorf("the second send names its gateway: %s", sends[1])
	}
	sh := func(line string) (string, error) {
		cmd := exec.CommandContext(ctx, "sh", "-c", line)
		cmd.Dir = dir
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	for _, line := range sends {
		got, err := sh(line)
		if err != nil || !strings.Contains(got, `"state": "succeeded"`) || !strings.Contains(got, "verified: command ") {
			t.Errorf("%s: %v\n%s", line, err, got)
		}
	}
	// The gateway's retained status and lock presence arrive at once.
	got, err := sh(subs[0] + " -C 2 -W 60")
	if err != nil || !strings.Contains(got, "gatewayd/v1/gw/dock-0042/") {
		t.Errorf("%s: %v\n%s", subs[0], err, got)
	}
	for _, line := range curls {
		url := strings.Fields(line)[2]
		resp, err := http.Get(url)
		if err != nil {
			t.Errorf("%s: %v", url, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || (strings.HasSuffix(url, "/metrics") && !strings.Contains(string(body), "gatewayd_fleet_results_total")) {
			t.Errorf("%s: %s\n%.300s", url, resp.Status, body)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("after the interrupt: %v\n%s", err, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the demo did not stop within 2 minutes of the interrupt")
	}
	if !strings.Contains(out.String(), "stopping the demo fleet") {
		t.Errorf("no stop message:\n%s", out.String())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the demo's directory %s is left after the stop: %v", dir, err)
	}
}
