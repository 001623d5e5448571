package bonds

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// errRollback ends a transaction that must not commit.
var errRollback = errors.New("rollback")

// maxCheckErrors bounds how many problems a check reports.
const maxCheckErrors = 100

// Check runs bbolt's consistency check (every page reachable or free,
// none twice) and the schema's invariants (docs/database.md) on the open
// database. It reads the whole file inside a write transaction that it
// rolls back: bbolt's check reads the freelist, which is only safe with
// writers held off, so writes wait while it runs.
func (db *DB) Check(ctx context.Context) error {
	var errs []error
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return fmt.Errorf("bonds: check %s: %w", db.path, ErrClosed)
	}
	if err := db.Err(); err != nil {
		return err
	}
	err := guard(func() error {
		return db.bolt.Update(func(tx *bolt.Tx) error {
			errs = checkTx(ctx, tx, schemaVersion)
			return errRollback
		})
	})
	if errors.Is(err, errPanicked) {
		return db.fail(err)
	}
	if err != nil && !errors.Is(err, errRollback) {
		return fmt.Errorf("bonds: check %s: %w", db.path, err)
	}
	return checkResult(db.path, errs)
}

// CheckFile checks the database file at path without opening it for
// writing (a shared lock: it waits for, or times out against, a running
// gatewayd). It reports what Check does, and also works on a file whose
// schema Open would refuse.
func CheckFile(ctx context.Context, path string, opts Options) error {
	return checkFile(ctx, path, opts, schemaVersion)
}

func checkFile(ctx context.Context, path string, opts Options, version int) error {
	opts = opts.withDefaults()
	b, err := openFile(path, opts, true, nil)
	if err != nil {
		return err
	}
	defer func() { _ = b.Close() }()
	var errs []error
	err = guard(func() error {
		return b.View(func(tx *bolt.Tx) error {
			errs = checkTx(ctx, tx, version)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("bonds: check %s: %w: %w", path, ErrCheck, err)
	}
	return checkResult(path, errs)
}

func checkResult(path string, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("bonds: check %s: %w: %d problem(s):\n%w", path, ErrCheck, len(errs), errors.Join(errs...))
}

// checkTx returns every problem found, up to maxCheckErrors.
func checkTx(ctx context.Context, tx *bolt.Tx, version int) []error {
	var errs []error
	add := func(format string, a ...any) bool {
		errs = append(errs, fmt.Errorf(format, a...))
		return len(errs) < maxCheckErrors
	}
	full := false
	for err := range tx.Check() { // drained: its goroutine reads the transaction's pages until done
		if !full {
			full = !add("bbolt: %v", err)
		}
	}
	if full {
		return errs
	}
	v, err := readVersion(tx)
	if err != nil {
		add("meta: %v", err)
		return errs
	}
	if v != version {
		add("meta: schema_version %d, want %d", v, version)
		return errs
	}
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil {
			add("bucket %q is missing", name)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	if err := ctx.Err(); err != nil {
		add("check interrupted: %v", err)
		return errs
	}
	locks := tx.Bucket(bucketLocks)
	stop := errors.New("too many problems")
	walk := func(name []byte, fn func(k, v []byte) bool) {
		_ = tx.Bucket(name).ForEach(func(k, v []byte) error {
			if v == nil {
				if !add("%s: nested bucket %x", name, k) {
					return stop
				}
				return nil
			}
			if !fn(k, v) {
				return stop
			}
			return nil
		})
	}

	walk(bucketLocks, func(k, v []byte) bool {
		var l Lock
		if len(k) != 8 {
			return add("locks %x: key is %d bytes, want 8", k, len(k))
		}
		if err := decode(v, &l); err != nil {
			return add("locks %x: %v", k, err)
		}
		if !bytes.Equal(l.ID[:], k) {
			return add("locks %x: record has ID %s", k, l.ID)
		}
		if err := validLock(&l); err != nil {
			return add("locks %x: %v", k, err)
		}
		if l.Bond == BondBonded && l.BondedAt.IsZero() {
			return add("locks %x: bonded without bonded_at", k)
		}
		return true
	})
	walk(bucketUsers, func(k, v []byte) bool {
		var u User
		if len(k) <= 8 || len(k) > 8+MaxUserID {
			return add("users %x: key is %d bytes, want 9..%d", k, len(k), 8+MaxUserID)
		}
		if locks.Get(k[:8]) == nil {
			return add("users %x: lock %x is not in locks", k, k[:8])
		}
		if err := decode(v, &u); err != nil {
			return add("users %x: %v", k, err)
		}
		if !bytes.Equal(userKey(u.LockID, u.UserID), k) {
			return add("users %x: record is for %s/%q", k, u.LockID, u.UserID)
		}
		if !u.Desired.validDesired() || !u.Confirmed.validConfirmed() {
			return add("users %x: desired %q, confirmed %q", k, u.Desired, u.Confirmed)
		}
		return true
	})
	walk(bucketAudit, func(k, v []byte) bool {
		var c AuditCursor
		if len(k) != 8 || locks.Get(k) == nil {
			return add("audit %x: not the key of a known lock", k)
		}
		if err := decode(v, &c); err != nil {
			return add("audit %x: %v", k, err)
		}
		if len(c.Pending) > MaxAuditPending {
			return add("audit %x: %d pending records, at most %d", k, len(c.Pending), MaxAuditPending)
		}
		for i, r := range c.Pending {
			switch {
			case r.Seq >= c.Seq:
				return add("audit %x: pending record %d not below the cursor %d", k, r.Seq, c.Seq)
			case i > 0 && r.Seq <= c.Pending[i-1].Seq:
				return add("audit %x: pending record %d after %d", k, r.Seq, c.Pending[i-1].Seq)
			case (len(r.Entry) == 0) == (r.Missed == 0):
				return add("audit %x: pending record %d is not exactly one of an entry and a loss", k, r.Seq)
			}
		}
		return true
	})

	journal, outbox := tx.Bucket(bucketJournal), tx.Bucket(bucketOutbox)
	keys := make(map[CommandID][]byte) // the ID index, rebuilt
	walk(bucketJournal, func(k, v []byte) bool {
		var e Entry
		ns, id, ok := splitJournalKey(k)
		if !ok {
			return add("journal %x: key is %d bytes, want %d", k, len(k), journalKeyLen)
		}
		if _, dup := keys[id]; dup {
			return add("journal %x: command %s is in the journal twice", k, id)
		}
		keys[id] = append([]byte(nil), k...)
		if err := decodeEntry(v, &e); err != nil {
			return add("journal %x: %v", k, err)
		}
		switch {
		case e.ID != id:
			return add("journal %x: record has ID %s", k, e.ID)
		case e.ReceivedAt.UnixNano() != ns:
			return add("journal %x: record received at %s, key says %d", k, e.ReceivedAt, ns)
		case !e.State.Valid():
			return add("journal %x: state %q", k, e.State)
		case e.State.Terminal() != (e.Result != nil):
			return add("journal %x: state %s with result %v", k, e.State, e.Result != nil)
		case !e.State.Terminal() && (e.OutboxSeq != 0 || e.Acked()):
			return add("journal %x: %s entry has an outbox entry or an ack", k, e.State)
		case e.State.Terminal() && e.Acked() && e.OutboxSeq != 0:
			return add("journal %x: acknowledged but still in the outbox", k)
		case e.State.Terminal() && !e.Acked() && e.OutboxSeq == 0:
			return add("journal %x: unacknowledged result not in the outbox", k)
		case e.OutboxSeq != 0:
			ov := outbox.Get(u64(e.OutboxSeq))
			var r Result
			if ov == nil {
				return add("journal %x: outbox %d is missing", k, e.OutboxSeq)
			}
			if err := decode(ov, &r); err != nil || r.CommandID != e.ID {
				return add("journal %x: outbox %d is not its result", k, e.OutboxSeq)
			}
		}
		return true
	})
	walk(bucketOutbox, func(k, v []byte) bool {
		var r Result
		if len(k) != 8 {
			return add("outbox %x: key is %d bytes, want 8", k, len(k))
		}
		if err := decode(v, &r); err != nil {
			return add("outbox %x: %v", k, err)
		}
		var jv []byte
		if jk, ok := keys[r.CommandID]; ok {
			jv = journal.Get(jk)
		}
		if jv == nil {
			return add("outbox %x: command %s is not in the journal", k, r.CommandID)
		}
		var e Entry
		if err := decodeEntry(jv, &e); err != nil {
			return true // reported with the journal
		}
		if !e.State.Terminal() || e.OutboxSeq != binary.BigEndian.Uint64(k) {
			return add("outbox %x: journal entry %s is %s with outbox_seq %d", k, e.ID, e.State, e.OutboxSeq)
		}
		if binary.BigEndian.Uint64(k) > outbox.Sequence() {
			return add("outbox %x: above the bucket's sequence %d", k, outbox.Sequence())
		}
		return true
	})
	return errs
}
