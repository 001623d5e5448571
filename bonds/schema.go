package bonds

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// schemaVersion is the version this build writes and reads; see
// docs/database.md.
const schemaVersion = 1

// Bucket names and meta keys.
var (
	bucketMeta    = []byte("meta")
	bucketLocks   = []byte("locks")
	bucketUsers   = []byte("users")
	bucketJournal = []byte("journal")
	bucketOutbox  = []byte("outbox")
	bucketAudit   = []byte("audit")

	keyVersion   = []byte("schema_version")
	keyCreatedAt = []byte("created_at")

	allBuckets = [][]byte{bucketMeta, bucketLocks, bucketUsers, bucketJournal, bucketOutbox, bucketAudit}
)

// migration moves a database from one schema version to the next, inside
// the one write transaction that also writes the new version.
type migration struct {
	from, to int
	fn       func(tx *bolt.Tx) error
}

// migrations is the ordered table of every migration. Version 1 is the
// first schema, so it is empty; a v2 adds {1, 2, fn} and a test that builds
// a v1 file and migrates it.
var migrations []migration

// initSchema creates every bucket of a new database and writes its version.
func initSchema(tx *bolt.Tx, now time.Time) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	m := tx.Bucket(bucketMeta)
	if err := m.Put(keyCreatedAt, []byte(now.UTC().Format(time.RFC3339Nano))); err != nil {
		return err
	}
	return m.Put(keyVersion, u64(schemaVersion))
}

// readVersion returns the schema version in tx, or an error saying what is
// missing or garbled.
func readVersion(tx *bolt.Tx) (int, error) {
	m := tx.Bucket(bucketMeta)
	if m == nil {
		return 0, errors.New("no meta bucket: not a gatewayd database, or a damaged one")
	}
	v := m.Get(keyVersion)
	if v == nil {
		return 0, errors.New("meta bucket has no schema_version")
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("schema_version is %d bytes, want 8", len(v))
	}
	n := binary.BigEndian.Uint64(v)
	if n == 0 || n > 1<<20 {
		return 0, fmt.Errorf("schema_version %d is garbled", n)
	}
	return int(n), nil
}

// migrateOpen checks the version of a freshly opened file and runs the
// migrations from it to target in one write transaction: either every
// step and the new version commit, or nothing does. A file that already is
// at target is not written to at all.
func migrateOpen(b *bolt.DB, path string, table []migration, target int, now func() time.Time) error {
	err := guard(func() error { return migrate(b, path, table, target) })
	if errors.Is(err, errPanicked) {
		return corrupt(path, err)
	}
	return err
}

func migrate(b *bolt.DB, path string, table []migration, target int) (err error) {
	var v int
	if err := b.View(func(tx *bolt.Tx) error {
		var err error
		v, err = readVersion(tx)
		return err
	}); err != nil {
		return corrupt(path, err)
	}
	switch {
	case v == target:
		return checkBuckets(b, path)
	case v > target:
		return fmt.Errorf("bonds: open %s: schema version %d, this build knows up to %d; run the newer gatewayd, or restore a backup made by this version: %w", path, v, target, ErrSchemaTooNew)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		for v < target {
			step := -1
			for i, m := range table {
				if m.from == v {
					step = i
					break
				}
			}
			if step < 0 {
				return fmt.Errorf("no migration from schema version %d", v)
			}
			m := table[step]
			if m.to <= m.from {
				return fmt.Errorf("migration %d→%d goes backwards", m.from, m.to)
			}
			if err := m.fn(tx); err != nil {
				return fmt.Errorf("migration %d→%d: %w", m.from, m.to, err)
			}
			v = m.to
		}
		if v != target {
			return fmt.Errorf("migrations end at version %d, want %d", v, target)
		}
		return tx.Bucket(bucketMeta).Put(keyVersion, u64(uint64(target)))
	})
	if err != nil {
		return fmt.Errorf("bonds: open %s: migrating to schema %d (the file is unchanged): %w", path, target, err)
	}
	return checkBuckets(b, path)
}

func checkBuckets(b *bolt.DB, path string) error {
	return b.View(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return corrupt(path, fmt.Errorf("bucket %q is missing", name))
			}
		}
		return nil
	})
}

func u64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

// encode is the one value encoding: JSON of the record's struct.
func encode(v any) ([]byte, error) { return json.Marshal(v) }

// decode is strict: unknown fields and trailing data are errors, so a
// record written by a newer schema is never half-read.
func decode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the record")
	}
	return nil
}

// eachRecord decodes every record of the bucket name into a fresh T (with
// dec; nil is decode) and hands it, with its key, to fn, checking ctx
// between records. A record that does not decode is an error naming what
// it is and its key.
func eachRecord[T any](ctx context.Context, tx *bolt.Tx, name []byte, what string,
	dec func([]byte, *T) error, fn func(k []byte, r *T) error) error {
	return forEachResident(tx, tx.Bucket(name), func(k, v []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		var r T
		var err error
		if dec != nil {
			err = dec(v, &r)
		} else {
			err = decode(v, &r)
		}
		if err != nil {
			return fmt.Errorf("%s %x: %w", what, k, err)
		}
		return fn(k, &r)
	})
}

// journalKey is the journal's key: received_at (Unix nanoseconds,
// big-endian) then the command ID, so the journal is in arrival order, an
// Append touches only its last leaf, and Prune reads from the left.
func journalKey(ns int64, id CommandID) []byte {
	k := make([]byte, journalKeyLen)
	binary.BigEndian.PutUint64(k, uint64(ns))
	copy(k[8:], id[:])
	return k
}

const journalKeyLen = 8 + 16

// splitJournalKey returns a journal key's time and command ID.
func splitJournalKey(k []byte) (int64, CommandID, bool) {
	if len(k) != journalKeyLen {
		return 0, CommandID{}, false
	}
	return int64(binary.BigEndian.Uint64(k)), CommandID(k[8:]), true
}

// userKey is the users key: lock ID then the user ID's bytes.
func userKey(lock LockID, user string) []byte {
	return append(append(make([]byte, 0, 8+len(user)), lock[:]...), user...)
}
