package bonds

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// openTest opens a new database in t.TempDir. Its cleanup closes it (if
// the test did not) and runs CheckFile on the file: bbolt's check and
// every schema invariant, after every test, as bbolt's internal/btesting
// does.
func openTest(t testing.TB, opts Options) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatewayd.db")
	db, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	checkAtCleanup(t, path, schemaVersion, func() {
		if err := db.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return db, path
}

// checkAtCleanup registers a cleanup that runs closeFn, then checks the
// file at path against schema version.
func checkAtCleanup(t testing.TB, path string, version int, closeFn func()) {
	t.Helper()
	t.Cleanup(func() {
		if closeFn != nil {
			closeFn()
		}
		if err := checkFile(context.Background(), path, Options{}, version); err != nil {
			t.Errorf("check after test: %v", err)
		}
	})
}

// reopen closes db and opens its file again with opts.
func reopen(t testing.TB, db *DB, opts Options) *DB {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	db2, err := Open(db.Path(), opts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() {
		if err := db2.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return db2
}

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func cid(n uint64) CommandID {
	var id CommandID
	id[0] = 0xc0
	binary.BigEndian.PutUint64(id[8:], n)
	return id
}

func lid(n uint64) LockID {
	var id LockID
	binary.BigEndian.PutUint64(id[:], n|0x4c4b000000000000)
	return id
}

func testCommand(n uint64) Command {
	return Command{ID: cid(n), LockID: lid(n % 7), Operator: "op-1", Operation: "unlock",
		Payload: []byte("signed-command-bytes")}
}

var bg = context.Background()

func (id LockID) bytes() []byte { return id[:] }
