package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// syncBuf is a bytes.Buffer a process writes to while the test reads.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSIGHUPReloads runs the real gatewayd binary against a real
// mosquitto and a dbus-daemon with the BlueZ emulator, and sends it
// SIGHUP as systemd's ExecReload does: it no longer dies (it did, with
// exit 129 and no log line); it logs the reload, names the change that
// needs a restart, applies the log level (debug lines appear) and a fleet
// root added to keys.fleet_roots, and stops cleanly (exit 0) on SIGTERM
// afterwards.
func TestSIGHUPReloads(t *testing.T) {
	bin := buildGatewayd(t)
	dir, conf := checkDir(t)
	broker := mosquittotest.Start(t, mosquittotest.Options{})
	bus, err := emulator.StartBus(t.Context(), dir)
	if err != nil {
		t.Fatalf("%v (the BlueZ emulator needs dbus-daemon: run scripts/deps.sh)", err)
	}
	t.Cleanup(func() { bus.Close() })
	emu, err := emulator.Start(t.Context(), emulator.Options{Addr: bus.Addr, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })

	conf = strings.Replace(conf, `brokers = ["tcp://127.0.0.1:1883"]`, `brokers = ["`+broker.URL()+`"]`, 1) +
		"[metrics]\nlisten = \"127.0.0.1:0\"\n[admin]\nsocket = \"" + filepath.Join(dir, "admin.sock") + "\"\n[log]\nlevel = \"info\"\n"
	path := filepath.Join(dir, "gatewayd.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr syncBuf
	cmd := exec.Command(bin, "run", "-init", "-config", path)
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+bus.Addr, "NOTIFY_SOCKET=")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("gatewayd's log:\n%s", stderr.String())
		}
	})
	waitLog := func(what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(stderr.String(), what) {
			select {
			case err := <-exited:
				exited <- err
				t.Fatalf("gatewayd exited (%v) before logging %q", err, what)
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log within a minute", what)
			}
		}
	}
	waitLog("gatewayd running")
	if strings.Contains(stderr.String(), "level=DEBUG") {
		t.Fatal("debug lines at level info")
	}

	changed := strings.Replace(conf, `level = "info"`, `level = "debug"`, 1)
	changed = strings.Replace(changed, `brokers = ["`, `brokers = ["tcp://127.0.0.1:1", "`, 1)
	// A second fleet root (a rollover): taken by the reload, no restart.
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	newRoot := filepath.Join(dir, "new-root.pem")
	if err := config.WritePublicKey(newRoot, pub); err != nil {
		t.Fatal(err)
	}
	withRoot := strings.Replace(changed, "fleet_roots = [", fmt.Sprintf("fleet_roots = [%q, ", newRoot), 1)
	if withRoot == changed {
		t.Fatal("test configuration has no fleet_roots")
	}
	changed = withRoot
	if err := os.WriteFile(path, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog("mqtt.brokers changed: restart gatewayd to apply")
	waitLog("log level changed")
	waitLog("fleet roots reloaded")
	if strings.Contains(stderr.String(), "keys.fleet_roots changed: restart") {
		t.Error("keys.fleet_roots named as needing a restart")
	}
	// The new level applies: with the broker gone, the session's debug
	// line of each reconnection attempt shows.
	broker.Stop()
	waitLog(`level=DEBUG msg="mqtt connecting"`)
	broker.Restart(t)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		var ee *exec.ExitError
		if err != nil && (!errors.As(err, &ee) || ee.ExitCode() != 0) {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("gatewayd did not stop within a minute of SIGTERM")
	}
}
