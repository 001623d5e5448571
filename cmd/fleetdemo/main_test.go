package main

import (
	"bytes"
	"context"
	"github.com/gatewayd/gatewayd/internal/mosquittotest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	bin := t.TempDir()
	// go test puts its own go command first on the test's PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goBin, "build", "-o", bin+string(os.PathSeparator),
		"./cmd/gatewayd", "./cmd/gatewayctl", "./cmd/bluezemu")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	var out, stderr bytes.Buffer
	if err := run(ctx, []string{"-bin", bin}, &out, &stderr); err != nil {
		t.Fatalf("%v\n%s\nstderr:\n%s", err, out.String(), stderr.String())
	}
	s := out.String()
	for _, want := range []string{
		"$ gatewayctl keygen -o otto.key",
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
