package bonds

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestOpenCreatesPrivateFile: a new database is mode 0600, at the current
// schema, with no temporary file left beside it.
func TestOpenCreatesPrivateFile(t *testing.T) {
	_, path := openTest(t, Options{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %#o, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(path + ".creating"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left behind: %v", err)
	}
}

// TestOpenRefusesOpenPermissions: a file the group or others can read is
// refused with ErrPermissions and a message with the chmod to run.
func TestOpenRefusesOpenPermissions(t *testing.T) {
	db, path := openTest(t, Options{})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o666} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Open(path, Options{})
		if !errors.Is(err, ErrPermissions) || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %#o: Open = %v, want ErrPermissions naming chmod 600", mode, err)
		}
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

// refusedUnchanged writes content to a fresh path, opens it, and checks
// that Open fails with want and leaves the bytes unchanged.
func refusedUnchanged(t *testing.T, content []byte, want error) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatewayd.db")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := Open(path, Options{})
	if err == nil {
		_ = db.Close()
		t.Fatalf("Open accepted the file")
	}
	if !errors.Is(err, want) {
		t.Fatalf("Open = %v, want %v", err, want)
	}
	got, rerr := os.ReadFile(path)
	if rerr != nil || !bytes.Equal(got, content) {
		t.Errorf("Open modified the refused file (%d bytes, was %d)", len(got), len(content))
	}
	return err
}

func wantRepairAdvice(t *testing.T, err error) {
	t.Helper()
	for _, s := range []string{"gatewayd db check -db ", "gatewayd db backup", "restore"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not say %q: %v", s, err)
		}
	}
}

// TestOpenRefusesEmptyFile: a 0-byte file is corrupt (we never create
// one), refused and kept, not initialised as a new database.
func TestOpenRefusesEmptyFile(t *testing.T) {
	openTest(t, Options{})
	err := refusedUnchanged(t, nil, ErrCorrupt)
	wantRepairAdvice(t, err)
	if !strings.Contains(err.Error(), "empty") {
		t.Errorf("error does not say the file is empty: %v", err)
	}
}

// TestOpenRefusesGarbage: a file that is not bbolt is ErrCorrupt, with
// the repair commands, and untouched.
func TestOpenRefusesGarbage(t *testing.T) {
	openTest(t, Options{})
	garbage := bytes.Repeat([]byte("not a bbolt file "), 1000)
	wantRepairAdvice(t, refusedUnchanged(t, garbage, ErrCorrupt))
}

// TestOpenRefusesDamagedMetaPages: a real database whose two meta pages
// are overwritten is ErrCorrupt and untouched.
func TestOpenRefusesDamagedMetaPages(t *testing.T) {
	db, path := openTest(t, Options{})
	if _, err := db.Append(bg, testCommand(1)); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := db.Backup(bg, &buf); err != nil {
		t.Fatal(err)
	}
	_ = path
	b := buf.Bytes()
	for i := 16; i < 2*4096 && i < len(b); i += 4096 {
		copy(b[i:i+64], bytes.Repeat([]byte{0xff}, 64))
	}
	refusedUnchanged(t, b, ErrCorrupt)
}

// TestOpenRefusesTruncatedFile: a database cut short (a copy that
// stopped half way) is ErrCorrupt, untouched, and does not crash the
// process: bbolt alone would read past the end of its mapping (SIGSEGV).
// CheckFile, which `gatewayd db backup` runs on a streamed copy, refuses it
// the same way.
func TestOpenRefusesTruncatedFile(t *testing.T) {
	db, _ := openTest(t, Options{})
	for i := uint64(1); i <= 200; i++ {
		if _, err := db.Append(bg, testCommand(i)); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := db.Backup(bg, &buf); err != nil {
		t.Fatal(err)
	}
	half := buf.Bytes()[:buf.Len()/2]
	err := refusedUnchanged(t, half, ErrCorrupt)
	wantRepairAdvice(t, err)
	if !strings.Contains(err.Error(), "cut short") {
		t.Errorf("error does not say the file was cut short: %v", err)
	}
	path := filepath.Join(t.TempDir(), "half.db")
	if err := os.WriteFile(path, half, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckFile(bg, path, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("CheckFile = %v, want ErrCorrupt", err)
	}
}

// boltFile writes a bbolt file (not through Open) with fn and returns its
// bytes.
func boltFile(t *testing.T, fn func(tx *bolt.Tx) error) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raw.db")
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestOpenRefusesMissingVersion: a valid bbolt file without our meta
// bucket, or without schema_version, is ErrCorrupt, and untouched.
func TestOpenRefusesMissingVersion(t *testing.T) {
	openTest(t, Options{})
	noMeta := boltFile(t, func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("something"))
		return err
	})
	wantRepairAdvice(t, refusedUnchanged(t, noMeta, ErrCorrupt))
	noVersion := boltFile(t, func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket(bucketMeta)
		return err
	})
	refusedUnchanged(t, noVersion, ErrCorrupt)
	garbled := boltFile(t, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err == nil {
			err = b.Put(keyVersion, []byte("1"))
		}
		return err
	})
	refusedUnchanged(t, garbled, ErrCorrupt)
}

// TestOpenRefusesNewerSchema: a version this build does not know is
// ErrSchemaTooNew, and the file is not touched.
func TestOpenRefusesNewerSchema(t *testing.T) {
	openTest(t, Options{})
	newer := boltFile(t, func(tx *bolt.Tx) error {
		if err := initSchema(tx, newClock().Now()); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyVersion, u64(schemaVersion+1))
	})
	refusedUnchanged(t, newer, ErrSchemaTooNew)
}

// TestOpenRefusesMissingDirectory: Open does not create directories.
func TestOpenRefusesMissingDirectory(t *testing.T) {
	openTest(t, Options{})
	dir := filepath.Join(t.TempDir(), "missing")
	if _, err := Open(filepath.Join(dir, "gatewayd.db"), Options{}); err == nil {
		t.Fatal("Open created a database in a missing directory")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the directory was created: %v", err)
	}
}

// TestOpenRefusesSecondOpener: the file lock keeps a second process (here
// a second handle) out, with ErrLocked, after Timeout.
func TestOpenRefusesSecondOpener(t *testing.T) {
	_, path := openTest(t, Options{})
	_, err := Open(path, Options{Timeout: -1})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

// TestReopenKeepsEverything: what was written is there after Close and
// Open, and a closed DB says ErrClosed.
func TestReopenKeepsEverything(t *testing.T) {
	db, _ := openTest(t, Options{})
	if err := db.PutLock(bg, Lock{ID: lid(1), Address: "c0:00:00:00:00:01", Bond: BondBonded}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Append(bg, testCommand(1)); err != nil {
		t.Fatal(err)
	}
	db2 := reopen(t, db, Options{})
	if _, err := db.Append(bg, testCommand(2)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	if err := db.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	l, err := db2.Lock(bg, lid(1))
	if err != nil || l.Address != "C0:00:00:00:00:01" || l.Bond != BondBonded || l.BondedAt.IsZero() {
		t.Errorf("Lock after reopen = %+v, %v", l, err)
	}
	if e, err := db2.Entry(bg, cid(1)); err != nil || e.State != StateReceived {
		t.Errorf("Entry after reopen = %+v, %v", e, err)
	}
}
