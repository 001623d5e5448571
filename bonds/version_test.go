package bonds

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestFileSchemaVersion: the version of a current file and of a newer one
// (which Open refuses) are read without changing either file.
func TestFileSchemaVersion(t *testing.T) {
	_, path := openTest(t, Options{})
	// openTest's DB is still open: FileSchemaVersion waits for the lock,
	// so read a copy.
	cur := boltFile(t, func(tx *bolt.Tx) error { return initSchema(tx, newClock().Now()) })
	newer := boltFile(t, func(tx *bolt.Tx) error {
		if err := initSchema(tx, newClock().Now()); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyVersion, u64(SchemaVersion+1))
	})
	for _, c := range []struct {
		name    string
		content []byte
		want    int
	}{{"current", cur, SchemaVersion}, {"newer", newer, SchemaVersion + 1}} {
		p := filepath.Join(t.TempDir(), "gatewayd.db")
		if err := os.WriteFile(p, c.content, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := FileSchemaVersion(p, Options{})
		if err != nil || got != c.want {
			t.Errorf("%s: FileSchemaVersion = %d, %v; want %d", c.name, got, err, c.want)
		}
		if after, _ := os.ReadFile(p); !bytes.Equal(after, c.content) {
			t.Errorf("%s: FileSchemaVersion changed the file", c.name)
		}
	}
	if _, err := FileSchemaVersion(filepath.Join(filepath.Dir(path), "missing.db"), Options{}); err == nil {
		t.Error("FileSchemaVersion of a missing file: no error")
	}
}
