package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/internal/admin"
)

var ctx = context.Background()

// newDB makes a database with one lock and one finished command whose
// payload is secret.
func newDB(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatewayd.db")
	db, err := bonds.Open(path, bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lock := bonds.LockID{0x4c, 0x4b, 0, 0, 0, 0, 0, 1}
	if err := db.PutLock(ctx, bonds.Lock{ID: lock, Address: "C0:00:00:00:00:01", Bond: bonds.BondBonded}); err != nil {
		t.Fatal(err)
	}
	c := bonds.Command{ID: bonds.CommandID{0xc0, 1}, LockID: lock, Operator: "op-1", Operation: "unlock", Payload: []byte("SECRET-SIGNATURE")}
	if _, err := db.Append(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Transition(ctx, c.ID, bonds.StateRejected, nil); err != nil {
		t.Fatal(err)
	}
	return path
}

func runT(args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	err := run(ctx, args, &out, &errb)
	return out.String(), errb.String(), err
}

// TestUsage: no command and unknown commands are usage errors that list
// the db subcommands; help is not an error.
func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"serve"}, {"db"}, {"db", "frobnicate", "-db", "x"}, {"db", "backup", "-db", "x"}, {"db", "check", "-db", "x", "extra"}} {
		_, stderr, err := runT(args...)
		if !errors.Is(err, errUsage) || !strings.Contains(stderr, "backup") {
			t.Errorf("run(%q) = %v, stderr %q; want a usage error", args, err, stderr)
		}
	}
	out, _, err := runT("help")
	if err != nil || !strings.Contains(out, "db check") || !strings.Contains(out, "db compact") {
		t.Errorf("help = %q, %v", out, err)
	}
}

// TestDBCommands: check, backup (mode 0600, itself checkable), export
// (JSON, no payload) and compact on a real database.
func TestDBCommands(t *testing.T) {
	path := newDB(t)
	if out, _, err := runT("db", "check", "-db", path); err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("db check = %q, %v", out, err)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	if _, _, err := runT("db", "backup", "-db", path, "-socket", filepath.Join(t.TempDir(), "none.sock"), backup); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v", fi, err)
	}
	if _, _, err := runT("db", "check", "-db", backup); err != nil {
		t.Errorf("check of the backup: %v", err)
	}
	out, _, err := runT("db", "export", "-db", path)
	if err != nil {
		t.Fatal(err)
	}
	var x map[string]any
	if err := json.Unmarshal([]byte(out), &x); err != nil || !strings.Contains(out, "c0010000000000000000000000000000") {
		t.Errorf("export is not the JSON expected (%v): %s", err, out)
	}
	if strings.Contains(out, "SECRET") || strings.Contains(out, "U0VDUkVU") {
		t.Error("export contains the command payload")
	}
	if out, _, err := runT("db", "compact", "-db", path); err != nil || !strings.Contains(out, "compacted") {
		t.Errorf("db compact = %q, %v", out, err)
	}
	if _, _, err := runT("db", "check", "-db", path); err != nil {
		t.Errorf("check after compact: %v", err)
	}
}

// TestDBCommandsWhileLocked: with the database open (as by a running
// daemon), the commands give up after -timeout with ErrLocked.
func TestDBCommandsWhileLocked(t *testing.T) {
	path := newDB(t)
	db, err := bonds.Open(path, bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, sub := range []string{"check", "export", "compact"} {
		if _, _, err := runT("db", sub, "-db", path, "-timeout", "10ms"); !errors.Is(err, bonds.ErrLocked) {
			t.Errorf("db %s while open = %v, want ErrLocked", sub, err)
		}
	}
}

// TestDBRefusesCorruptAndOpenFiles: an empty file and a world-readable
// file are refused with the way out in the message, and left as they are.
func TestDBRefusesCorruptAndOpenFiles(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"check", "export", "compact"} {
		_, _, err := runT("db", sub, "-db", empty)
		if !errors.Is(err, bonds.ErrCorrupt) || !strings.Contains(err.Error(), "gatewayd db check -db "+empty) || !strings.Contains(err.Error(), "gatewayd db backup") {
			t.Errorf("db %s on an empty file = %v", sub, err)
		}
	}
	if fi, _ := os.Stat(empty); fi.Size() != 0 {
		t.Error("the empty file was written to")
	}
	path := newDB(t)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runT("db", "check", "-db", path); !errors.Is(err, bonds.ErrPermissions) || !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Errorf("db check of a 0644 file = %v", err)
	}
}

// TestBinaryExitCodes builds gatewayd and runs it: a corrupt database is a
// clear message on stderr and exit status 1; a sound one exits 0; a usage
// error exits 2.
func TestBinaryExitCodes(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "gatewayd")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("garbage!"), 2048), 0o600); err != nil {
		t.Fatal(err)
	}
	sound := newDB(t)
	for _, c := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"db", "check", "-db", garbage}, 1, "gatewayd db check -db " + garbage},
		{[]string{"db", "export", "-db", garbage}, 1, "database corrupt or unreadable"},
		{[]string{"db", "check", "-db", sound}, 0, ""},
		{[]string{"nonsense"}, 2, "usage"},
	} {
		cmd := exec.Command(bin, c.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.WaitDelay = 10 * time.Second
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code || !strings.Contains(stderr.String(), c.stderr) {
			t.Errorf("gatewayd %q: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr.String(), c.code, c.stderr)
		}
	}
}

// TestDBBackupOfRunningDaemon: with the database held open (its file lock
// taken, as by a running gatewayd), db backup gets its copy online through
// the admin socket; without a socket it fails naming both.
func TestDBBackupOfRunningDaemon(t *testing.T) {
	path := newDB(t)
	db, err := bonds.Open(path, bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sock := filepath.Join(t.TempDir(), "run", "admin.sock")
	backup := filepath.Join(t.TempDir(), "backup.db")
	_, _, err = runT("db", "backup", "-db", path, "-timeout", "100ms", "-socket", sock, backup)
	if !errors.Is(err, bonds.ErrLocked) || !strings.Contains(err.Error(), sock) {
		t.Fatalf("locked database, no daemon: %v", err)
	}
	srv, err := admin.New(admin.Options{Socket: sock, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	out, _, err := runT("db", "backup", "-db", path, "-socket", sock, backup)
	if err != nil || !strings.Contains(out, "online") {
		t.Fatalf("online backup = %q, %v", out, err)
	}
	if _, _, err := runT("db", "check", "-db", backup); err != nil {
		t.Errorf("check of the online backup: %v", err)
	}
}

// TestDBAuditReset: audit-reset forgets a lock's audit cursor, refuses
// while its entries wait for the broker, and says what is wrong with a
// bad lock ID.
func TestDBAuditReset(t *testing.T) {
	path := newDB(t)
	lock := bonds.LockID{0x4c, 0x4b, 0, 0, 0, 0, 0, 1}
	db, err := bonds.Open(path, bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.AdvanceAudit(ctx, lock, bonds.AuditAdvance{Seq: 1, Head: []byte{1},
		Records: []bonds.AuditRecord{{Seq: 0, Entry: []byte{0xa8}}}}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, _, err := runT("db", "audit-reset", "-db", path, lock.String()); !errors.Is(err, bonds.ErrAuditBacklog) {
		t.Errorf("audit-reset with an entry pending = %v", err)
	}
	if _, _, err := runT("db", "audit-reset", "-db", path, "zz"); !errors.Is(err, bonds.ErrInvalid) {
		t.Errorf("audit-reset of a bad lock ID = %v", err)
	}
	db, err = bonds.Open(path, bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.AckAudit(ctx, []bonds.AuditAck{{LockID: lock, Seq: 0}}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if out, _, err := runT("db", "audit-reset", "-db", path, lock.String()); err != nil || !strings.Contains(out, "read again") {
		t.Fatalf("audit-reset = %q, %v", out, err)
	}
	db, err = bonds.Open(path, bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.AuditCursor(ctx, lock); !errors.Is(err, bonds.ErrNotFound) {
		t.Errorf("cursor after audit-reset: %v", err)
	}
}
