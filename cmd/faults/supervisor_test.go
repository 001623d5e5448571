package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/internal/fleetproc"
)

// The test binary doubles as a fake gatewayd for the supervisor's tests:
// with FAULTS_FAKE_MODE_FILE set it reads its behaviour from that file.
func TestMain(m *testing.M) {
	if f := os.Getenv("FAULTS_FAKE_MODE_FILE"); f != "" {
		fakeDaemon(f)
		return
	}
	os.Exit(m.Run())
}

// fakeDaemon says READY=1 on NOTIFY_SOCKET, then: "exit78" exits 78;
// "silent" sends no WATCHDOG=1 and waits to be killed; anything else
// pings the watchdog until killed.
func fakeDaemon(modeFile string) {
	b, _ := os.ReadFile(modeFile)
	mode := strings.TrimSpace(string(b))
	c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
	if err != nil {
		os.Exit(3)
	}
	if mode == "exit78" {
		os.Exit(78)
	}
	_, _ = c.Write([]byte("READY=1"))
	for {
		time.Sleep(20 * time.Millisecond)
		if mode != "silent" {
			_, _ = c.Write([]byte("WATCHDOG=1"))
		}
	}
}

func testRig(t *testing.T) (*rig, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o700); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(bin, "gatewayd")); err != nil {
		t.Fatal(err)
	}
	mode := filepath.Join(dir, "mode")
	t.Setenv("FAULTS_FAKE_MODE_FILE", mode)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	t.Cleanup(cancel)
	r := &rig{out: io.Discard, errOut: io.Discard, ctx: ctx, bin: bin, dir: dir,
		unit: unitRules{restart: "on-failure", restartDelay: 100 * time.Millisecond, prevent: []int{78},
			watchdog: 500 * time.Millisecond, startTimeout: time.Minute, stopTimeout: 10 * time.Second}}
	t.Cleanup(r.procs.StopAll)
	return r, mode
}

func setMode(t *testing.T, file, mode string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(mode), 0o600); err != nil {
		t.Fatal(err)
	}
}

func startSup(t *testing.T, r *rig) *supervisor {
	t.Helper()
	ns, err := fleetproc.ListenNotify(r.path("notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	s := newSupervisor(r, ns)
	s.start()
	t.Cleanup(s.stop)
	return s
}

func whats(evs []supEvent) string {
	var w []string
	for _, e := range evs {
		w = append(w, e.What)
	}
	return strings.Join(w, ",")
}

// TestSupervisorRestartsAfterSIGKILL: a SIGKILL is a failure under
// Restart=on-failure: the daemon is started again and says READY=1.
func TestSupervisorRestartsAfterSIGKILL(t *testing.T) {
	r, mode := testRig(t)
	setMode(t, mode, "ping")
	s := startSup(t, r)
	first, err := s.waitReady(time.Time{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pid := s.pid()
	if err := s.kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.waitReady(first, time.Minute); err != nil {
		t.Fatalf("%v; events %s", err, whats(s.history()))
	}
	if s.pid() == pid || s.pid() == 0 {
		t.Errorf("pid %d after the restart, was %d", s.pid(), pid)
	}
}

// TestSupervisorWatchdog: a daemon that stops sending WATCHDOG=1 is killed
// after WatchdogSec and restarted, as systemd does.
func TestSupervisorWatchdog(t *testing.T) {
	r, mode := testRig(t)
	setMode(t, mode, "silent")
	s := startSup(t, r)
	first, err := s.waitReady(time.Time{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	setMode(t, mode, "ping")
	if _, err := s.waitReady(first, time.Minute); err != nil {
		t.Fatalf("%v; events %s", err, whats(s.history()))
	}
	if h := whats(s.history()); !strings.Contains(h, "ready,watchdog,exit,start,ready") {
		t.Errorf("events %s, want a watchdog kill and a restart", h)
	}
}

// TestSupervisorRestartPreventExitStatus: exit status 78 is not restarted;
// waitReady says so instead of waiting; startDaemon starts it again.
func TestSupervisorRestartPreventExitStatus(t *testing.T) {
	r, mode := testRig(t)
	setMode(t, mode, "exit78")
	s := startSup(t, r)
	_, err := s.waitReady(time.Time{}, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "will not restart") {
		t.Fatalf("waitReady = %v; events %s", err, whats(s.history()))
	}
	if h := whats(s.history()); h != "start,exit,not-restarted" {
		t.Errorf("events %s", h)
	}
	setMode(t, mode, "ping")
	before := time.Now()
	s.startDaemon()
	if _, err := s.waitReady(before, time.Minute); err != nil {
		t.Fatalf("after startDaemon: %v", err)
	}
	// A deliberate stop is not a failure, and is not restarted.
	s.stopDaemon()
	if h := whats(s.history()); !strings.HasSuffix(h, "ready,exit") {
		t.Errorf("events after stopDaemon %s", h)
	}
	if e := s.history(); !strings.Contains(e[len(e)-1].Note, "on purpose") {
		t.Errorf("last event %+v", e[len(e)-1])
	}
}
