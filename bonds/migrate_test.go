package bonds

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// There is one schema version so far, so there is no real migration to
// test; these tests run the migration runner with test-only tables on a
// real version-1 file. A v2 adds its migration to `migrations`, a v1
// fixture generator here, and a test that migrates it for real.

// v1File makes a version-1 file and opens it with bbolt alone. Its
// cleanup closes it and checks it against version want.
func v1File(t *testing.T, want int) (*bolt.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatewayd.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Append(bg, testCommand(1)); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkAtCleanup(t, path, want, func() { _ = b.Close() })
	return b, path
}

func version(t *testing.T, b *bolt.DB) int {
	t.Helper()
	var v int
	if err := b.View(func(tx *bolt.Tx) (err error) { v, err = readVersion(tx); return }); err != nil {
		t.Fatal(err)
	}
	return v
}

func appendLog(s string) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		return m.Put([]byte("test_log"), append(append([]byte(nil), m.Get([]byte("test_log"))...), s...))
	}
}

// TestMigrationsRunInOrder: from version 1 to 3, the runner applies 1→2
// then 2→3 (whatever their order in the table) and writes version 3.
func TestMigrationsRunInOrder(t *testing.T) {
	b, path := v1File(t, 3)
	table := []migration{{2, 3, appendLog("b")}, {1, 2, appendLog("a")}}
	if err := migrateOpen(b, path, table, 3, newClock().Now); err != nil {
		t.Fatal(err)
	}
	if v := version(t, b); v != 3 {
		t.Errorf("version %d, want 3", v)
	}
	_ = b.View(func(tx *bolt.Tx) error {
		if got := string(tx.Bucket(bucketMeta).Get([]byte("test_log"))); got != "ab" {
			t.Errorf("steps ran as %q, want \"ab\"", got)
		}
		return nil
	})
}

// TestMigrationFailureIsAtomic: a failing step leaves the file at the old
// version with none of the earlier steps' writes, and it still opens.
func TestMigrationFailureIsAtomic(t *testing.T) {
	b, path := v1File(t, 1)
	boom := errors.New("boom")
	table := []migration{{1, 2, appendLog("a")}, {2, 3, func(*bolt.Tx) error { return boom }}}
	if err := migrateOpen(b, path, table, 3, newClock().Now); !errors.Is(err, boom) {
		t.Fatalf("migrate = %v, want boom", err)
	}
	if v := version(t, b); v != 1 {
		t.Errorf("version %d after a failed migration, want 1", v)
	}
	_ = b.View(func(tx *bolt.Tx) error {
		if got := tx.Bucket(bucketMeta).Get([]byte("test_log")); got != nil {
			t.Errorf("step 1→2 left %q behind", got)
		}
		return nil
	})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open after a failed migration: %v", err)
	}
	if _, err := db.Entry(bg, cid(1)); err != nil {
		t.Errorf("entry lost: %v", err)
	}
	_ = db.Close()
}

// TestMigrationGapRefused: a table with no step from the file's version
// fails without writing.
func TestMigrationGapRefused(t *testing.T) {
	b, path := v1File(t, 1)
	if err := migrateOpen(b, path, []migration{{2, 3, appendLog("b")}}, 3, newClock().Now); err == nil {
		t.Fatal("migration with a gap succeeded")
	}
	if v := version(t, b); v != 1 {
		t.Errorf("version %d, want 1", v)
	}
}

// TestCurrentVersionNeedsNoMigration: the real table brings nothing to a
// current file, and opening it does not write.
func TestCurrentVersionNeedsNoMigration(t *testing.T) {
	b, path := v1File(t, 1)
	st := b.Stats()
	before := st.TxStats.GetWrite()
	if err := migrateOpen(b, path, migrations, schemaVersion, newClock().Now); err != nil {
		t.Fatal(err)
	}
	st = b.Stats()
	if after := st.TxStats.GetWrite(); after != before {
		t.Errorf("opening a current file wrote %d pages", after-before)
	}
}
