package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/internal/natstest"
)

// TestFleetShort is the short form of the fleet simulation (issue 17), as
// CI runs it: 5 real gatewayd processes, each with its own dbus-daemon,
// radio and database, on a 3-node nats-server cluster; a node is
// SIGKILLed while commands flow. run fails unless every gateway on the
// killed node came back online through another node, every acknowledged
// command got exactly one result from each gateway it went to, a new
// backend read every retained status and presence after the kill, a lock
// heard by two docks moved its bolt once for one unlock sent to both, a
// moved lock was routed by presence to its new dock and unlocked there,
// and every bolt moved exactly once per successful lock or unlock.
func TestFleetShort(t *testing.T) {
	if _, err := natstest.Binary(); err != nil {
		t.Fatal(natstest.NotFound)
	}
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Fatal("dbus-daemon not found: run scripts/deps.sh")
	}
	bin := t.TempDir()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goBin, "build", "-o", bin+string(os.PathSeparator), "./cmd/gatewayd")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var out, stderr bytes.Buffer
	if err := run(ctx, []string{"-bin", bin, "-short"}, &out, &stderr); err != nil {
		t.Fatalf("%v\n%s\nstderr:\n%s", err, out.String(), stderr.String())
	}
	s := out.String()
	for _, want := range []string{"killed node n1", "gateways back online via another node",
		"read every gateway's retained status (online) and presence", "bolt moved once",
		"routed there after", "every bolt moved exactly once"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Log(s)
	}
}

// TestParse: the short form's size, and bad sizes refused with the range.
func TestParse(t *testing.T) {
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "gatewayd"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	o, err := parse([]string{"-bin", bin, "-short"}, &errOut)
	if err != nil || o.gateways != 5 || o.locks != 20 {
		t.Fatalf("-short: %+v %v", o, err)
	}
	if o, err := parse([]string{"-bin", bin}, &errOut); err != nil || o.gateways != 50 {
		t.Fatalf("default: %+v %v", o, err)
	}
	for _, args := range [][]string{{"-bin", bin, "-gateways", "2"}, {"-bin", bin, "-locks", "1"}, {}, {"-bin", t.TempDir()}} {
		if _, err := parse(args, &errOut); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
