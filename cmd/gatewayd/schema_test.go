package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/gatewayd/gatewayd/bonds"
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
