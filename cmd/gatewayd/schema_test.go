package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/gatewayd/gatewayd/bonds"
	bolt "go.etcd.io/bbolt"
)

// TestDBSchema: `db schema -build` prints this build's schema version and
// `db schema -db` a file's, each as a bare number a shell script can
// compare (the package's preinst does).
func TestDBSchema(t *testing.T) {
	want := strconv.Itoa(bonds.SchemaVersion) + "\n"
	if out, _, err := runT("db", "schema", "-build"); err != nil || out != want {
		t.Errorf("db schema -build = %q, %v; want %q", out, err, want)
	}
	path := newDB(t)
	if out, _, err := runT("db", "schema", "-db", path); err != nil || out != want {
		t.Errorf("db schema -db = %q, %v; want %q", out, err, want)
	}
	if _, _, err := runT("db", "schema", "-db", path+".missing"); err == nil || !strings.Contains(err.Error(), "db schema") {
		t.Errorf("db schema of a missing file = %v, want an error naming db schema", err)
	}
}

// TestDaemonRefusesNewerSchema: `gatewayd run` on a database written by a
// newer gatewayd (a downgrade) exits 78, which the unit does not restart,
// saying what to do, and leaves the file as it was.
func TestDaemonRefusesNewerSchema(t *testing.T) {
	in := newInstall(t)
	db, err := bonds.Open(in.db, bonds.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := bolt.Open(in.db, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	newer := bonds.SchemaVersion + 1
	err = b.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema_version"), binary.BigEndian.AppendUint64(nil, uint64(newer)))
	})
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(in.db)
	if err != nil {
		t.Fatal(err)
	}
	code, stderr := runBinary(t, in)
	want := fmt.Sprintf("schema version %d, this build knows up to %d; run the newer gatewayd, or restore a backup", newer, bonds.SchemaVersion)
	if code != 78 || !strings.Contains(stderr, want) {
		t.Errorf("gatewayd run on a schema-%d database: exit %d, stderr:\n%s\nwant exit 78 and %q", newer, code, stderr, want)
	}
	if after, err := os.ReadFile(in.db); err != nil || !bytes.Equal(after, before) {
		t.Errorf("gatewayd run changed the newer database (%v)", err)
	}
}
