package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
)

// TestStateAndControl runs bluezemu with -state and -control on a private
// bus: each lock gets a flash image and a boot line in the ledger, the
// control socket injects faults and refuses nonsense, and a second run on
// the same directory boots the locks from their flash again.
func TestStateAndControl(t *testing.T) {
	dir := t.TempDir()
	bus, err := emulator.StartBus(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	state := filepath.Join(dir, "state")
	sock := filepath.Join(dir, "ctl.sock")
	for round := 1; round <= 2; round++ {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		var out bytes.Buffer
		go func() {
			done <- run(ctx, []string{"-bus", bus.Addr, "-locks", "2", "-state", state, "-control", sock}, &out)
		}()
		var c net.Conn
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if c, err = net.Dial("unix", sock); err == nil {
				break
			}
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("no control socket: %v\n%s", err, <-done)
			}
		}
		rd := bufio.NewReader(c)
		for cmd, want := range map[string]string{
			"ping":                         "ok",
			"abort C0:00:00:00:00:01 3":    "ok",
			"drop C0:00:00:00:00:00 1":     "ok",
			"leave C0:00:00:00:00:01":      "ok",
			"enter C0:00:00:00:00:01":      "ok",
			"clear C0:00:00:00:00:01":      "ok",
			"leave C0:00:00:00:00:09":      "error: ",
			"abort nonsense 1":             "error: ",
			"frobnicate C0:00:00:00:00:00": "error: unknown command",
			"abort C0:00:00:00:00:01 x":    "error: count",
		} {
			if _, err := c.Write([]byte(cmd + "\n")); err != nil {
				t.Fatal(err)
			}
			ans, err := rd.ReadString('\n')
			if err != nil || !strings.HasPrefix(ans, want) {
				t.Errorf("%q: %q, %v; want %q…", cmd, ans, err, want)
			}
		}
		c.Close()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("round %d: %v\n%s", round, err, out.String())
		}
		for _, id := range []uint64{FirstLockID, FirstLockID + 1} {
			if st, err := os.Stat(flashPath(state, id)); err != nil || st.Size() == 0 {
				t.Errorf("round %d: flash image of %x: %v", round, id, err)
			}
		}
		b, err := os.ReadFile(filepath.Join(state, "ledger.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		boots := 0
		for l := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
			var e LedgerEntry
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("ledger line %q: %v", l, err)
			}
			if e.Kind == "boot" {
				boots++
			}
		}
		if boots != 2*round {
			t.Errorf("round %d: %d boot lines, want %d", round, boots, 2*round)
		}
	}
}

func TestBondsFile(t *testing.T) {
	b := bondsFile{filepath.Join(t.TempDir(), "adapter-bonds")}
	if got, err := b.load(); err != nil || got != nil {
		t.Fatalf("missing file: %v, %v", got, err)
	}
	want := []string{"C0:00:00:00:00:00", "C0:00:00:00:00:01"}
	if err := b.save(want); err != nil {
		t.Fatal(err)
	}
	got, err := b.load()
	if err != nil || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("load = %v, %v; want %v", got, err, want)
	}
}
