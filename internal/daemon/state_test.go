package daemon

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/internal/filetrust"
)

var discard = slog.New(slog.DiscardHandler)

// stateDir makes an empty state directory, as systemd's StateDirectory=
// does, and returns the database path in it.
func stateDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "gatewayd.db")
}

func openState(path string, init bool) error {
	db, err := openStateDB(path, init, bonds.Open, bonds.Options{NoSync: true}, discard)
	if err == nil {
		err = db.Close()
	}
	return err
}

// TestAttackLostDatabaseRefused: a database that disappears from a state
// directory that held one (a mistaken rm, a file system repair) is not
// silently re-created with an empty journal and outbox: the start is
// refused (ErrConfig, exit 78), naming the restore and -init. A first
// start (an empty state directory, or -init) creates it.
func TestAttackLostDatabaseRefused(t *testing.T) {
	path := stateDir(t)
	if err := openState(path, false); err != nil {
		t.Fatalf("first start in an empty state directory: %v", err)
	}
	if _, err := os.Stat(path + markerSuffix); err != nil {
		t.Fatalf("no marker after the first start: %v", err)
	}
	if err := openState(path, false); err != nil {
		t.Fatalf("second start: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	err := openState(path, false)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "gatewayd run -init") ||
		!strings.Contains(err.Error(), "Restore the newest backup") {
		t.Fatalf("lost database: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the refused start created a database")
	}
	// Installed before the marker existed: anything else in the
	// directory also says this is not a first start.
	if err := os.Remove(path + markerSuffix); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "gatewayd.db.old"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := openState(path, false); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "not empty (gatewayd.db.old)") {
		t.Fatalf("missing database, directory not empty: %v", err)
	}
	if err := openState(path, true); err != nil {
		t.Fatalf("-init: %v", err)
	}
}

// TestAttackStateTrust: a state directory, or one above it, that another
// user can write (directly or through a symlink), or that another user
// owns, and a database owned by another user, are refused, each naming
// the command that fixes it.
func TestAttackStateTrust(t *testing.T) {
	const nobody = 65534
	cases := []struct {
		name string
		do   func(t *testing.T, path string)
		want string
	}{
		{"state directory 0777", func(t *testing.T, path string) { chmod(t, filepath.Dir(path), 0o777) }, "chmod go-w DIR"},
		{"directory above 0777", func(t *testing.T, path string) { chmod(t, filepath.Dir(filepath.Dir(path)), 0o777) }, "chmod go-w"},
		{"state directory owned by another user", func(t *testing.T, path string) { chown(t, filepath.Dir(path), nobody) }, "chown root DIR"},
		{"database owned by another user", func(t *testing.T, path string) { chown(t, path, nobody) }, "chown root DB"},
		{"symlinked state directory, 0777", func(t *testing.T, path string) {
			dir := filepath.Dir(path)
			open := filepath.Join(t.TempDir(), "open")
			if err := os.Rename(dir, open); err != nil {
				t.Fatal(err)
			}
			chmod(t, open, 0o777)
			if err := os.Symlink(open, dir); err != nil {
				t.Fatal(err)
			}
		}, "chmod go-w"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := stateDir(t)
			if err := openState(path, false); err != nil {
				t.Fatal(err)
			}
			c.do(t, path)
			err := openState(path, false)
			want := strings.NewReplacer("DIR", filepath.Dir(path), "DB", path).Replace(c.want)
			if !errors.Is(err, ErrConfig) || !errors.Is(err, filetrust.ErrUntrusted) || !strings.Contains(err.Error(), want) {
				t.Errorf("got %v, want ErrConfig saying %q", err, want)
			}
		})
	}
}

func chmod(t *testing.T, p string, m os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, m); err != nil {
		t.Fatal(err)
	}
}

// chown gives p to uid; tests run as root here, and as another user
// cannot give files away, so they say so instead of passing silently.
func chown(t *testing.T, p string, uid int) {
	t.Helper()
	if err := os.Chown(p, uid, -1); err != nil {
		t.Fatalf("chown %d %s: %v (the owner checks need the tests to run as root)", uid, p, err)
	}
}

// TestAttackDatabaseCorruptWhileRunning: the journal's pages go bad under
// a running daemon. The next command that reaches the journal makes bbolt
// panic; the daemon does not crash (exit 2, restarted by systemd every
// 5 s): it stops in order with ErrConfig wrapping bonds.ErrCorrupt (exit
// 78, not restarted), naming db check, and a start on the same file is
// refused the same way.
func TestAttackDatabaseCorruptWhileRunning(t *testing.T) {
	d := newDock(t, 1, emulator.Options{})
	r := d.run()
	// Every leaf and branch page past the meta pages loses its type
	// (written behind bbolt's back, as a failing SD card would).
	path := d.cfg.Database.Path
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	ps := int64(os.Getpagesize())
	var hdr [16]byte
	for off := 2 * ps; off < fi.Size(); off += ps {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			t.Fatal(err)
		}
		if fl := binary.NativeEndian.Uint16(hdr[8:]); fl == 0x01 || fl == 0x02 {
			binary.NativeEndian.PutUint16(hdr[8:], 0x77)
			if _, err := f.WriteAt(hdr[:], off); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	_, s := d.sign(0, command.OpUnlock, command.Args{})
	d.client.publish(s)
	var runErr error
	select {
	case runErr = <-r.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the daemon kept running on a corrupt database")
	}
	r.cancel()
	r.cancel = nil // stopped already; the cleanup's stop has nothing to do
	if !errors.Is(runErr, ErrConfig) || !errors.Is(runErr, bonds.ErrCorrupt) || !strings.Contains(runErr.Error(), "gatewayd db check -db "+path) {
		t.Fatalf("daemon stopped with %v, want ErrConfig wrapping ErrCorrupt naming db check", runErr)
	}
	if err := Run(t.Context(), Options{Config: d.cfg, Now: d.now}); !errors.Is(err, ErrConfig) || !errors.Is(err, bonds.ErrCorrupt) {
		t.Fatalf("start on the corrupt file: %v", err)
	}
}
