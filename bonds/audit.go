package bonds

import (
	"bytes"
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// AuditAdvance is one step of a lock's audit cursor (AdvanceAudit): from
// where the caller read it, to where the records it verified take it.
type AuditAdvance struct {
	// FromSeq and FromHead are the cursor as the caller read it
	// (DB.AuditCursor); both zero when the lock had none.
	FromSeq  uint64
	FromHead []byte
	// Seq and Head are the new cursor: the next sequence number to read
	// and the chain's head at it. Head is required.
	Seq  uint64
	Head []byte
	// Records are appended to the cursor's Pending, in order: their Seq
	// strictly increase, are above every pending record's and below Seq.
	Records []AuditRecord
}

// AuditItem is a pending audit record with its lock (AuditOutbox).
type AuditItem struct {
	LockID LockID
	AuditRecord
}

// AuditAck says that the broker acknowledged a lock's pending records up
// to and including Seq (AckAudit).
type AuditAck struct {
	LockID LockID
	Seq    uint64
}

// AdvanceAudit moves a lock's audit cursor and appends the records read to
// its pending ones, in one transaction: the cursor never moves past
// entries that are not durably queued for the broker, and entries are
// never queued twice. It refuses, writing nothing: an unknown lock
// (ErrNotFound); a stored cursor other than a.FromSeq/a.FromHead
// (ErrAuditConflict); a cursor going back, an empty head or records out of
// order (ErrInvalid); more than MaxAuditPending records pending
// (ErrAuditBacklog). It returns the stored cursor.
func (db *DB) AdvanceAudit(ctx context.Context, lock LockID, a AuditAdvance) (AuditCursor, error) {
	var out AuditCursor
	err := checkAdvance(a)
	if err == nil {
		err = db.write(ctx, func(tx *bolt.Tx) error {
			if tx.Bucket(bucketLocks).Get(lock[:]) == nil {
				return ErrNotFound
			}
			var c AuditCursor
			b := tx.Bucket(bucketAudit)
			if v := b.Get(lock[:]); v != nil {
				if err := decode(v, &c); err != nil {
					return fmt.Errorf("audit record: %w", err)
				}
				if c.Seq != a.FromSeq || !bytes.Equal(c.Head, a.FromHead) {
					return fmt.Errorf("%w: stored at %d, read at %d", ErrAuditConflict, c.Seq, a.FromSeq)
				}
			} else if a.FromSeq != 0 || a.FromHead != nil {
				return fmt.Errorf("%w: no cursor stored, read at %d", ErrAuditConflict, a.FromSeq)
			}
			if n := len(c.Pending) + len(a.Records); n > MaxAuditPending {
				return fmt.Errorf("%w: %d records, at most %d", ErrAuditBacklog, n, MaxAuditPending)
			}
			if len(c.Pending) > 0 && len(a.Records) > 0 && a.Records[0].Seq <= c.Pending[len(c.Pending)-1].Seq {
				return fmt.Errorf("%w: record %d not after the pending record %d", ErrInvalid, a.Records[0].Seq, c.Pending[len(c.Pending)-1].Seq)
			}
			c.Seq, c.Head = a.Seq, bytes.Clone(a.Head)
			for _, r := range a.Records {
				r.Entry = bytes.Clone(r.Entry)
				r.ReadAt = r.ReadAt.UTC()
				c.Pending = append(c.Pending, r)
			}
			v, err := encode(c)
			if err != nil {
				return err
			}
			out = c
			return b.Put(lock[:], v)
		})
	}
	if err != nil {
		return AuditCursor{}, fmt.Errorf("bonds: advance audit cursor of %s: %w", lock, err)
	}
	return out, nil
}

func checkAdvance(a AuditAdvance) error {
	switch {
	case len(a.Head) == 0:
		return fmt.Errorf("%w: empty head", ErrInvalid)
	case a.Seq < a.FromSeq:
		return fmt.Errorf("%w: cursor going back from %d to %d", ErrInvalid, a.FromSeq, a.Seq)
	}
	for i, r := range a.Records {
		switch {
		case len(r.Entry) == 0 && r.Missed == 0:
			return fmt.Errorf("%w: record %d is neither an entry nor a loss", ErrInvalid, r.Seq)
		case len(r.Entry) != 0 && r.Missed != 0:
			return fmt.Errorf("%w: record %d is both an entry and a loss", ErrInvalid, r.Seq)
		case r.Seq >= a.Seq:
			return fmt.Errorf("%w: record %d not below the new cursor %d", ErrInvalid, r.Seq, a.Seq)
		case i > 0 && r.Seq <= a.Records[i-1].Seq:
			return fmt.Errorf("%w: record %d after record %d", ErrInvalid, r.Seq, a.Records[i-1].Seq)
		}
	}
	return nil
}

// AuditOutbox returns up to max (at least 1) pending audit records, each
// lock's oldest first, locks in ID order.
func (db *DB) AuditOutbox(ctx context.Context, max int) ([]AuditItem, error) {
	var out []AuditItem
	err := db.view(func(tx *bolt.Tx) error {
		return eachRecord(ctx, tx, bucketAudit, "audit", nil, func(k []byte, c *AuditCursor) error {
			for _, r := range c.Pending {
				if len(out) >= max {
					return nil
				}
				out = append(out, AuditItem{LockID: LockID(k), AuditRecord: r})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bonds: audit outbox: %w", err)
	}
	return out, nil
}

// AckAudit removes, in one transaction, the pending records that the
// broker acknowledged: per ack, the lock's records up to and including
// its Seq. A lock without a cursor (deleted since) is skipped.
func (db *DB) AckAudit(ctx context.Context, acks []AuditAck) error {
	if len(acks) == 0 {
		return nil
	}
	err := db.write(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		for _, a := range acks {
			v := b.Get(a.LockID[:])
			if v == nil {
				continue
			}
			var c AuditCursor
			if err := decode(v, &c); err != nil {
				return fmt.Errorf("audit record of %s: %w", a.LockID, err)
			}
			n := 0
			for n < len(c.Pending) && c.Pending[n].Seq <= a.Seq {
				n++
			}
			if n == 0 {
				continue
			}
			c.Pending = c.Pending[n:]
			if len(c.Pending) == 0 {
				c.Pending = nil
			}
			nv, err := encode(c)
			if err != nil {
				return err
			}
			if err := b.Put(a.LockID[:], nv); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bonds: acknowledge audit records: %w", err)
	}
	return nil
}

// ResetAuditCursor forgets how far the gateway has read a lock's audit
// log, so that the next read starts again from the lock's first entry and
// genesis hash: for a lock whose log legitimately started over (its flash
// was wiped or the lock replaced under the same ID), which every read
// otherwise reports as a rewound chain. It refuses while records read
// before are not yet published (ErrAuditBacklog), and for an unknown lock
// (ErrNotFound); a lock without a cursor is not an error.
func (db *DB) ResetAuditCursor(ctx context.Context, lock LockID) error {
	err := db.write(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketLocks).Get(lock[:]) == nil {
			return ErrNotFound
		}
		b := tx.Bucket(bucketAudit)
		v := b.Get(lock[:])
		if v == nil {
			return nil
		}
		var c AuditCursor
		if err := decode(v, &c); err != nil {
			return fmt.Errorf("audit record: %w", err)
		}
		if len(c.Pending) > 0 {
			return fmt.Errorf("%w: %d records read before are not published yet; start gatewayd with the broker reachable until gatewayd_audit_pending is 0, then stop it and reset", ErrAuditBacklog, len(c.Pending))
		}
		return b.Delete(lock[:])
	})
	if err != nil {
		return fmt.Errorf("bonds: reset audit cursor of %s: %w", lock, err)
	}
	return nil
}
