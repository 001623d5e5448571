package bonds

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestBackupOnlineIsConsistent: a backup taken while writers run is a
// database that opens and passes every check, and holds every entry
// acknowledged before it started.
func TestBackupOnlineIsConsistent(t *testing.T) {
	db, _ := openTest(t, Options{})
	for i := uint64(1); i <= 100; i++ {
		if _, err := db.Append(bg, testCommand(i)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range uint64(4) {
		wg.Go(func() {
			for i := uint64(0); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := 1000 + g*100000 + i
				if _, err := db.Append(bg, testCommand(n)); err != nil {
					t.Error(err)
					return
				}
				if _, err := db.Transition(bg, cid(n), StateRejected, nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	dir := t.TempDir()
	backup := filepath.Join(dir, "backup.db")
	err := writeFileAtomic(backup, func(w io.Writer) error { _, err := db.Backup(bg, w); return err })
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckFile(bg, backup, Options{}); err != nil {
		t.Fatalf("the backup fails its check: %v", err)
	}
	b, err := Open(backup, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := uint64(1); i <= 100; i++ {
		if _, err := b.Entry(bg, cid(i)); err != nil {
			t.Fatalf("entry %d missing from the backup: %v", i, err)
		}
	}
}

// TestBackupFile: the offline copy is mode 0600, complete, and refuses to
// overwrite the database itself.
func TestBackupFile(t *testing.T) {
	db, path := openTest(t, Options{})
	if _, err := db.Append(bg, testCommand(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := BackupFile(bg, path, filepath.Join(t.TempDir(), "b.db"), Options{Timeout: -1}); !errors.Is(err, ErrLocked) {
		t.Errorf("BackupFile while open = %v, want ErrLocked", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "b.db")
	if _, err := BackupFile(bg, path, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup: %v, %v", fi, err)
	}
	if err := CheckFile(bg, dst, Options{}); err != nil {
		t.Error(err)
	}
	if _, err := BackupFile(bg, path, path, Options{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("backup over the database = %v, want ErrInvalid", err)
	}
}

// TestExportHasNoSecrets: command payloads (signatures), result payloads
// and credential bytes appear in no form in the export; the rest does.
func TestExportHasNoSecrets(t *testing.T) {
	db, path := openTest(t, Options{})
	secrets := [][]byte{[]byte("SIGNATURE-0123456789abcdef"), []byte("RESULT-PAYLOAD-fedcba9876"), []byte("CREDENTIAL-BYTES-424242")}
	if err := db.PutLock(bg, Lock{ID: lid(1), Credential: secrets[2], Address: addr(1), Bond: BondBonded, Counters: map[string]uint64{"kid1": 3}}); err != nil {
		t.Fatal(err)
	}
	c := testCommand(1)
	c.Payload = secrets[0]
	if _, err := db.Append(bg, c); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Transition(bg, cid(1), StateRejected, func(e *Entry) { e.Result = &Result{Status: "bad_signature", Payload: secrets[1]} }); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SetDesiredUser(bg, lid(1), "rider-1", 1, Present, cid(1)); err != nil {
		t.Fatal(err)
	}
	if err := db.SetAuditCursor(bg, lid(1), AuditCursor{Seq: 1, Head: []byte{9, 9}}); err != nil {
		t.Fatal(err)
	}
	var online bytes.Buffer
	if err := db.Export(bg, &online); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var offline bytes.Buffer
	if err := ExportFile(bg, path, &offline, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{online.String(), offline.String()} {
		for _, s := range secrets {
			for _, form := range []string{string(s), hex.EncodeToString(s), base64.StdEncoding.EncodeToString(s), base64.RawStdEncoding.EncodeToString(s)} {
				if strings.Contains(out, form) {
					t.Errorf("export contains a secret (%q)", form)
				}
			}
		}
		var x map[string]any
		if err := json.Unmarshal([]byte(out), &x); err != nil {
			t.Fatalf("export is not JSON: %v", err)
		}
		for _, want := range []string{lid(1).String(), cid(1).String(), "rider-1", "bad_signature", "credential_sha256", `"payload_size": 26`, "kid1"} {
			if !strings.Contains(out, want) {
				t.Errorf("export lacks %q", want)
			}
		}
	}
}

// TestCompact: the compacted file keeps every record and the outbox
// sequence, passes its check, and is mode 0600.
func TestCompact(t *testing.T) {
	clk := newClock()
	db, path := openTest(t, Options{Now: clk.Now, PruneInterval: -1})
	for i := uint64(1); i <= 300; i++ {
		c := testCommand(i)
		c.Payload = bytes.Repeat([]byte{byte(i)}, 2000)
		if _, err := db.Append(bg, c); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Transition(bg, cid(i), StateRejected, nil); err != nil {
			t.Fatal(err)
		}
		if i > 1 {
			if err := db.Ack(bg, cid(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	clk.Add(48 * time.Hour)
	if n, err := db.Prune(bg); err != nil || n != 299 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
	if err := Compact(bg, path, path, Options{Timeout: -1}); !errors.Is(err, ErrLocked) {
		t.Errorf("Compact while open = %v, want ErrLocked", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	if err := Compact(bg, path, path, Options{}); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if after.Size() >= before.Size() || after.Mode().Perm() != 0o600 {
		t.Errorf("compacted %d → %d bytes, mode %#o", before.Size(), after.Size(), after.Mode().Perm())
	}
	db = reopenPath(t, path, Options{Now: clk.Now})
	out, err := db.Outbox(bg)
	if err != nil || len(out) != 1 || out[0].CommandID != cid(1) {
		t.Fatalf("Outbox after compact = %+v, %v", out, err)
	}
	if _, err := db.Append(bg, testCommand(1000)); err != nil {
		t.Fatal(err)
	}
	e, err := db.Transition(bg, cid(1000), StateRejected, nil)
	if err != nil || e.OutboxSeq <= 300 {
		t.Errorf("outbox sequence after compact: %d, %v; want > 300", e.OutboxSeq, err)
	}
}

func reopenPath(t *testing.T, path string, opts Options) *DB {
	t.Helper()
	db, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Error(err)
		}
	})
	return db
}

// TestCheckFindsBrokenInvariants: each broken invariant, written behind
// the package's back into a copy, is reported by CheckFile; the copy is
// otherwise a sound bbolt file.
func TestCheckFindsBrokenInvariants(t *testing.T) {
	db, _ := openTest(t, Options{})
	if err := db.PutLock(bg, Lock{ID: lid(1)}); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 3; i++ {
		if _, err := db.Append(bg, testCommand(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Transition(bg, cid(2), StateRejected, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Check(bg); err != nil {
		t.Fatalf("Check of a sound database: %v", err)
	}
	for _, c := range []struct {
		name, want string
		fn         func(tx *bolt.Tx) error
	}{
		{"command twice in the journal", "in the journal twice", func(tx *bolt.Tx) error {
			k, v := journalEntry(tx, cid(3))
			return tx.Bucket(bucketJournal).Put(journalKey(int64(binary.BigEndian.Uint64(k))+1, cid(3)), v)
		}},
		{"key time is not received_at", "key says", func(tx *bolt.Tx) error {
			k, v := journalEntry(tx, cid(3))
			if err := tx.Bucket(bucketJournal).Delete(k); err != nil {
				return err
			}
			return tx.Bucket(bucketJournal).Put(journalKey(int64(binary.BigEndian.Uint64(k))+1, cid(3)), v)
		}},
		{"outbox without its journal entry", "not in the journal", func(tx *bolt.Tx) error {
			k, _ := journalEntry(tx, cid(2))
			return tx.Bucket(bucketJournal).Delete(k)
		}},
		{"user of an unknown lock", "is not in locks", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketUsers).Put(userKey(lid(5), "x"), []byte(`{}`))
		}},
		{"unknown state", `state "limbo"`, func(tx *bolt.Tx) error {
			k, v := journalEntry(tx, cid(3))
			return tx.Bucket(bucketJournal).Put(k, bytes.Replace(v, []byte(`"received"`), []byte(`"limbo"`), 1))
		}},
		{"unknown field", "unknown field", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketLocks).Put(lid(1).bytes(), []byte(`{"id":"`+lid(1).String()+`","bond":"none","passkey":"123456"}`))
		}},
		{"missing version", "schema_version", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Delete(keyVersion)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "broken.db")
			if err := writeFileAtomic(path, func(w io.Writer) error { _, err := db.Backup(bg, w); return err }); err != nil {
				t.Fatal(err)
			}
			b, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Update(c.fn); err != nil {
				t.Fatal(err)
			}
			_ = b.Close()
			err = CheckFile(bg, path, Options{})
			if !errors.Is(err, ErrCheck) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("CheckFile = %v, want ErrCheck mentioning %q", err, c.want)
			}
		})
	}
}

// journalEntry finds a command's key and value by scanning the journal.
func journalEntry(tx *bolt.Tx, id CommandID) (k, v []byte) {
	c := tx.Bucket(bucketJournal).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if bytes.Equal(k[8:], id[:]) {
			return append([]byte(nil), k...), append([]byte(nil), v...)
		}
	}
	panic("no entry " + id.String())
}
