package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/systemd"
)

// readOnly is bonds.Open on a file system that is read-only for the
// first n opens: the error bbolt's open gives there.
func readOnly(n int64) func(string, bonds.Options) (*bonds.DB, error) {
	var left atomic.Int64
	left.Store(n)
	return func(path string, o bonds.Options) (*bonds.DB, error) {
		if left.Add(-1) >= 0 {
			return nil, fmt.Errorf("bonds: open %s: %w", path, &os.PathError{Op: "open", Path: path, Err: syscall.EROFS})
		}
		return bonds.Open(path, o)
	}
}

// notifySocket listens where a Notifier made from the environment sends
// (without a watchdog).
func notifySocket(t *testing.T, dir string) (*net.UnixConn, *systemd.Notifier) {
	t.Helper()
	return notifySocketWatchdog(t, dir, "")
}

// notifySocketWatchdog is notifySocket with WATCHDOG_USEC=usec.
func notifySocketWatchdog(t *testing.T, dir, usec string) (*net.UnixConn, *systemd.Notifier) {
	t.Helper()
	sock := filepath.Join(dir, "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", usec)
	t.Setenv("WATCHDOG_PID", "")
	n, err := systemd.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	return ln, n
}

// TestStartWaitsForReadOnlyDatabase: started while the database's file
// system is read-only, gatewayd does not refuse to start as for a bad
// configuration (exit 78, which systemd never restarts): it says in
// STATUS= that it waits for the file system, retries, and starts once the
// file system is writable.
func TestStartWaitsForReadOnlyDatabase(t *testing.T) {
	d := newDock(t, 1, emulator.Options{})
	ln, n := notifySocket(t, d.dir)
	d.launch(func(o *Options) { o.Notifier, o.OpenDB = n, readOnly(2) })
	var got []string
	buf := make([]byte, 512)
	_ = ln.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		k, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("no READY=1 (got %q): %v", got, err)
		}
		got = append(got, string(buf[:k]))
		if strings.Contains(string(buf[:k]), "READY=1") {
			break
		}
	}
	waiting := 0
	for _, m := range got {
		if strings.Contains(m, "STATUS=waiting for the database: its file system is read-only") {
			waiting++
		}
	}
	if waiting != 2 {
		t.Errorf("notifications %q: want 2 STATUS= lines saying it waits for a read-only file system", got)
	}
}

// TestStartGivesUpTemporarily: a file system that stays read-only makes
// Run give up after OpenRetryFor with ErrTemporary (exit 75, which systemd
// restarts), not ErrConfig (exit 78, which it does not).
func TestStartGivesUpTemporarily(t *testing.T) {
	d := newDock(t, 1, emulator.Options{})
	_, n := notifySocket(t, d.dir)
	err := Run(t.Context(), Options{Config: d.cfg, Now: d.now, Logger: testLogger(t), Notifier: n,
		OpenDB: readOnly(1 << 30), OpenRetryFor: 300 * time.Millisecond})
	if !errors.Is(err, ErrTemporary) || errors.Is(err, ErrConfig) || !errors.Is(err, syscall.EROFS) {
		t.Fatalf("Run on a read-only file system: %v, want ErrTemporary wrapping EROFS", err)
	}
}
