package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
)

func openDB(t *testing.T) *bonds.DB {
	t.Helper()
	db, err := bonds.Open(filepath.Join(t.TempDir(), "g.db"), bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func start(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Socket == "" {
		opts.Socket = filepath.Join(t.TempDir(), "run", "admin.sock")
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func cmd(i int) bonds.Command {
	return bonds.Command{ID: bonds.CommandID{byte(i >> 8), byte(i), 1}, LockID: bonds.LockID{1}, Operator: "otto", Operation: "unlock"}
}

// TestOnlineBackupUnderLoad: a backup taken through the socket while
// writers append is a database that passes bbolt's check and the schema's
// invariants, holds every entry acknowledged before the backup began, and
// is mode 0600.
func TestOnlineBackupUnderLoad(t *testing.T) {
	db := openDB(t)
	s := start(t, Options{DB: db})
	ctx := t.Context()
	for i := range 100 {
		if _, err := db.Append(ctx, cmd(i)); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1000 * (w + 1); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := db.Append(ctx, cmd(i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	dst := filepath.Join(t.TempDir(), "backup.db")
	n, err := Backup(ctx, s.opts.Socket, dst)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dst)
	if err != nil || st.Size() != n || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file %v %v, %d bytes written", st, err, n)
	}
	if err := bonds.CheckFile(ctx, dst, bonds.Options{}); err != nil {
		t.Fatal(err)
	}
	b, err := bonds.Open(dst, bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := range 100 {
		if _, err := b.Entry(ctx, cmd(i).ID); err != nil {
			t.Errorf("entry %d missing from the backup: %v", i, err)
		}
	}
}

// TestSocketMode: the socket is 0600 and its directory 0700.
func TestSocketMode(t *testing.T) {
	s := start(t, Options{DB: openDB(t)})
	st, err := os.Lstat(s.opts.Socket)
	if err != nil || st.Mode()&fs.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("socket %v %v", st.Mode(), err)
	}
	dst, _ := os.Stat(filepath.Dir(s.opts.Socket))
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("socket dir mode %v", dst.Mode())
	}
}

// TestSecondDaemonRefused: a live socket is not stolen; a stale one (left
// by a crash) is replaced; Close removes it.
func TestSecondDaemonRefused(t *testing.T) {
	db := openDB(t)
	s := start(t, Options{DB: db})
	s2, _ := New(Options{Socket: s.opts.Socket, DB: db})
	if err := s2.Start(); !errors.Is(err, ErrInUse) {
		t.Errorf("second Start: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.opts.Socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Close left the socket: %v", err)
	}
	// A stale socket: bound, then its listener gone without unlinking.
	ln, err := net.Listen("unix", s.opts.Socket)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	start(t, Options{Socket: s.opts.Socket, DB: db})
}

// TestOtherUserRefused: a peer that is neither root nor the allowed uid
// gets 403 and no bytes of the database.
func TestOtherUserRefused(t *testing.T) {
	uid := uint32(1000)
	s := start(t, Options{DB: openDB(t), AllowUID: &uid, peerUID: func(net.Conn) int64 { return 1001 }})
	_, err := Backup(t.Context(), s.opts.Socket, filepath.Join(t.TempDir(), "b.db"))
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("got %v, want 403", err)
	}
}

// cut serves the first half of a real backup, then stops.
type cut struct{ db *bonds.DB }

func (c cut) Backup(ctx context.Context, w io.Writer) (int64, error) {
	var buf bytes.Buffer
	if _, err := c.db.Backup(ctx, &buf); err != nil {
		return 0, err
	}
	n, _ := w.Write(buf.Bytes()[:buf.Len()/2])
	return int64(n), fmt.Errorf("disk error")
}

// TestCutStreamLeavesNoFile: a stream cut short fails the check, and dst
// (an older good backup) is left untouched.
func TestCutStreamLeavesNoFile(t *testing.T) {
	db := openDB(t)
	for i := range 50 {
		if _, err := db.Append(t.Context(), cmd(i)); err != nil {
			t.Fatal(err)
		}
	}
	s := start(t, Options{DB: cut{db}})
	dst := filepath.Join(t.TempDir(), "b.db")
	if err := os.WriteFile(dst, []byte("older backup"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Backup(t.Context(), s.opts.Socket, dst); err == nil {
		t.Fatal("a cut stream was saved")
	}
	if b, _ := os.ReadFile(dst); string(b) != "older backup" {
		t.Errorf("dst overwritten: %q", b)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestNotRunning(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := Backup(ctx, filepath.Join(t.TempDir(), "none.sock"), filepath.Join(t.TempDir(), "b"))
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("got %v", err)
	}
}

func TestStatus(t *testing.T) {
	s := start(t, Options{DB: openDB(t), Status: func() any { return map[string]int{"queued": 3} }})
	b, err := Status(t.Context(), s.opts.Socket)
	if err != nil || !strings.Contains(string(b), `"queued": 3`) {
		t.Errorf("status %s %v", b, err)
	}
}
