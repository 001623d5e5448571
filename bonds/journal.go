package bonds

import (
	"context"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The journal bucket is keyed by received_at then command ID (journalKey),
// so it is its own time index: an Append writes one key at the right edge
// of one B+tree, the same pages a bare bbolt put does, and Prune walks it
// from the left and stops at the window's edge. Lookups by command ID go
// through an in-memory index (DB.ids) built at Open by reading the
// journal's keys (not its values), one entry per command in the window:
// about 100 bytes each, a few MB for a busy day.

// idGone marks, in DB.txIDs, a command ID removed by the transaction.
const idGone = math.MinInt64

// lookupTx returns the journal key of command id as the transaction being
// built sees it. Only write functions (run by the committer) call it.
func (db *DB) lookupTx(id CommandID) ([]byte, bool) {
	if ns, ok := db.txIDs[id]; ok {
		return journalKey(ns, id), ns != idGone
	}
	db.idxMu.RLock()
	ns, ok := db.ids[id]
	db.idxMu.RUnlock()
	if !ok {
		return nil, false
	}
	return journalKey(ns, id), true
}

// lookup returns the journal key of command id, for readers.
func (db *DB) lookup(id CommandID) ([]byte, bool) {
	db.idxMu.RLock()
	ns, ok := db.ids[id]
	db.idxMu.RUnlock()
	if !ok {
		return nil, false
	}
	return journalKey(ns, id), true
}

// loadIDs builds the ID index from the journal's keys.
func loadIDs(b *bolt.DB, path string) (map[CommandID]int64, error) {
	ids := make(map[CommandID]int64)
	err := guard(func() error {
		return b.View(func(tx *bolt.Tx) error {
			w := txWindow(tx)
			defer w.release()
			c := tx.Bucket(bucketJournal).Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				w.touch(k)
				ns, id, ok := splitJournalKey(k)
				if !ok {
					return fmt.Errorf("journal key %x is %d bytes, want %d", k, len(k), journalKeyLen)
				}
				if _, dup := ids[id]; dup {
					return fmt.Errorf("command %s is in the journal twice", id)
				}
				ids[id] = ns
			}
			return nil
		})
	})
	if err != nil {
		return nil, corrupt(path, err)
	}
	return ids, nil
}

// now returns the clock's time in UTC without a monotonic reading, as it
// will read back from the file.
func (db *DB) now() time.Time { return db.opts.Now().Round(0).UTC() }

// Append records a command that has just arrived, in state received. It
// returns only after the entry is durable (committed and fsynced): this is
// when the MQTT layer may acknowledge the message (PUBACK). A command ID
// already in the journal, including one received before a restart, gives
// ErrDuplicate together with the existing entry; the caller then
// acknowledges the redelivery without running the command again.
func (db *DB) Append(ctx context.Context, c Command) (Entry, error) {
	return db.AppendAt(ctx, c, time.Time{})
}

// AppendAt is Append with the time the command arrived, when the caller
// knows it better than the moment of the write (zero: now). The journal
// is ordered by this time (Pending returns entries in it), so a caller
// that appends concurrently keeps the arrival order by passing strictly
// increasing times in that order. Concurrent appends may commit out of
// order, though, so a crash can keep a later command without an earlier
// one: the MQTT intake therefore uses AppendBatch, one batch at a time,
// and the commands for one lock run in the order the broker delivered
// them, which is the order of their signers' counters.
func (db *DB) AppendAt(ctx context.Context, c Command, receivedAt time.Time) (Entry, error) {
	if c.ID.IsZero() || c.LockID.IsZero() || c.Operation == "" {
		return Entry{}, fmt.Errorf("bonds: append: command needs an ID, a lock ID and an operation: %w", ErrInvalid)
	}
	now := db.now()
	if !receivedAt.IsZero() {
		now = receivedAt.Round(0).UTC()
	}
	var out Entry
	var dup bool
	err := db.write(ctx, func(tx *bolt.Tx) error {
		if k, ok := db.lookupTx(c.ID); ok {
			dup = true
			return getEntry(tx, k, &out)
		}
		dup = false
		out = Entry{Command: c, ReceivedAt: now, UpdatedAt: now, State: StateReceived}
		if err := putEntry(tx, &out); err != nil {
			return err
		}
		db.wrote(&out)
		db.txIDs[c.ID] = now.UnixNano()
		return nil
	})
	if err != nil {
		return Entry{}, fmt.Errorf("bonds: append %s: %w", c.ID, err)
	}
	if dup {
		return out, fmt.Errorf("bonds: append %s: received at %s, now %s: %w", c.ID, out.ReceivedAt.Format(time.RFC3339), out.State, ErrDuplicate)
	}
	return out, nil
}

// Arrival is one command for AppendBatch, with the time it arrived (zero:
// the moment of the write).
type Arrival struct {
	Command    Command
	ReceivedAt time.Time
}

// AppendBatch journals the commands of cs, in slice order, in one write
// request: one transaction, so the batch becomes durable all at once (one
// fsync, possibly shared with other writes the committer groups with it)
// or not at all. A caller that journals a stream in batches, each after
// the previous one committed, therefore never has a later command in the
// journal without the earlier ones, even across a crash.
//
// Each item has the semantics of AppendAt, reported in entries[i] and
// errs[i] (entries and errs are as long as cs): nil and the new entry;
// ErrDuplicate and the existing entry if its command ID is already in the
// journal, including earlier in the same batch (the second of two items
// with one ID is a duplicate of the first); or ErrInvalid for an item
// without an ID, a lock ID or an operation, which is checked before the
// transaction and does not fail the others. The returned error is for the
// whole batch (the commit failed, or ctx ended while waiting for it): then
// entries and errs are nil and no item is acknowledged as durable; as with
// AppendAt, a write whose caller stopped waiting may still have committed.
func (db *DB) AppendBatch(ctx context.Context, cs []Arrival) ([]Entry, []error, error) {
	entries := make([]Entry, len(cs))
	errs := make([]error, len(cs))
	valid := 0
	for i, a := range cs {
		c := a.Command
		if c.ID.IsZero() || c.LockID.IsZero() || c.Operation == "" {
			errs[i] = fmt.Errorf("bonds: append %s: command needs an ID, a lock ID and an operation: %w", c.ID, ErrInvalid)
			continue
		}
		valid++
	}
	if valid == 0 {
		return entries, errs, nil
	}
	now := db.now()
	dup := make([]bool, len(cs))
	err := db.write(ctx, func(tx *bolt.Tx) error {
		// This may run more than once: every item's outputs are set anew.
		for i, a := range cs {
			if errs[i] != nil {
				continue
			}
			c := a.Command
			if k, ok := db.lookupTx(c.ID); ok {
				dup[i] = true
				if err := getEntry(tx, k, &entries[i]); err != nil {
					return err
				}
				continue
			}
			dup[i] = false
			at := now
			if !a.ReceivedAt.IsZero() {
				at = a.ReceivedAt.Round(0).UTC()
			}
			entries[i] = Entry{Command: c, ReceivedAt: at, UpdatedAt: at, State: StateReceived}
			if err := putEntry(tx, &entries[i]); err != nil {
				return err
			}
			db.wrote(&entries[i])
			db.txIDs[c.ID] = at.UnixNano()
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bonds: append a batch of %d: %w", len(cs), err)
	}
	for i, e := range entries {
		if dup[i] {
			errs[i] = fmt.Errorf("bonds: append %s: received at %s, now %s: %w", e.ID, e.ReceivedAt.Format(time.RFC3339), e.State, ErrDuplicate)
		}
	}
	return entries, errs, nil
}

func getEntry(tx *bolt.Tx, k []byte, e *Entry) error {
	v := tx.Bucket(bucketJournal).Get(k)
	if v == nil {
		return fmt.Errorf("journal entry %x: %w", k, ErrNotFound)
	}
	return decodeEntry(v, e)
}

func decodeEntry(v []byte, e *Entry) error {
	*e = Entry{}
	if err := decode(v, e); err != nil {
		return fmt.Errorf("journal entry: %w", err)
	}
	return nil
}

// putEntry writes e at its journal key.
func putEntry(tx *bolt.Tx, e *Entry) error {
	v, err := encode(e)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketJournal).Put(journalKey(e.ReceivedAt.UnixNano(), e.ID), v)
}

// wrote records, for the commit seams (Options.BeforeCommit and
// AfterCommit), that the transaction being built wrote e. Only write
// functions (run by the committer) call it.
func (db *DB) wrote(e *Entry) {
	if db.opts.BeforeCommit != nil || db.opts.AfterCommit != nil {
		db.txWritten = append(db.txWritten, *e)
	}
}

// Entry returns the journal entry of a command.
func (db *DB) Entry(ctx context.Context, id CommandID) (Entry, error) {
	var e Entry
	err := db.view(func(tx *bolt.Tx) error {
		k, ok := db.lookup(id)
		if !ok {
			return ErrNotFound
		}
		return getEntry(tx, k, &e)
	})
	if err != nil {
		return Entry{}, fmt.Errorf("bonds: entry %s: %w", id, err)
	}
	return e, nil
}

// Transition moves a journal entry to state to, if the state machine
// allows it (see State), and returns the entry as written. mutate, if not
// nil, may change the entry's Result and Payload before it is written; it
// may run more than once, so it must do nothing but modify the entry.
// Entering running counts an attempt. Reaching a terminal state fills in
// the Result (creating one if mutate did not) and queues it in the outbox
// in the same transaction, so a result is never lost between the two.
func (db *DB) Transition(ctx context.Context, id CommandID, to State, mutate func(*Entry)) (Entry, error) {
	if !to.Valid() {
		return Entry{}, fmt.Errorf("bonds: transition %s to %q: %w", id, to, ErrInvalid)
	}
	now := db.now()
	var out Entry
	err := db.write(ctx, func(tx *bolt.Tx) error {
		var bad, err error
		out, bad, err = db.transitionTx(tx, id, to, mutate, 0, now)
		if err != nil {
			return err
		}
		return bad
	})
	if err != nil {
		return Entry{}, fmt.Errorf("bonds: transition %s to %s: %w", id, to, err)
	}
	return out, nil
}

// TransitionReq is one transition for TransitionBatch: the arguments of
// Transition, and the attempts to record with it.
type TransitionReq struct {
	ID     CommandID
	To     State
	Mutate func(*Entry)
	// Attempts, if positive, is how many attempts this transition adds to
	// the entry's count, in place of the one that entering running counts
	// (Transition's behaviour, and this one's with Attempts zero). The
	// scheduler counts a command's attempts in memory and writes them with
	// its outcome: running → terminal in one write with the move to
	// running, whose Attempts are all the attempts made (a retryable
	// failure between them is not written).
	Attempts int
}

// TransitionBatch makes the transitions of reqs, in slice order, in one
// write request: one transaction, durable all at once (one fsync, possibly
// shared with other writes) or not at all. Each item has the semantics of
// Transition and sees the items before it (the same command may appear
// twice, e.g. running then succeeded), reported in entries[i] and
// errs[i] (as long as reqs): nil and the entry as written, or the item's
// error (ErrNotFound, ErrBadTransition, ErrInvalid for a state that does
// not exist), in which case that item changed nothing and the others
// still apply. The returned error is for the whole batch (the commit
// failed, or ctx ended while waiting for it): then entries and errs are
// nil and no item may be taken as durable; a write whose caller stopped
// waiting may still have committed.
func (db *DB) TransitionBatch(ctx context.Context, reqs []TransitionReq) ([]Entry, []error, error) {
	entries := make([]Entry, len(reqs))
	errs := make([]error, len(reqs))
	valid := 0
	for i, r := range reqs {
		if !r.To.Valid() {
			errs[i] = fmt.Errorf("bonds: transition %s to %q: %w", r.ID, r.To, ErrInvalid)
			continue
		}
		valid++
	}
	if valid == 0 {
		return entries, errs, nil
	}
	now := db.now()
	bad := make([]error, len(reqs))
	err := db.write(ctx, func(tx *bolt.Tx) error {
		// This may run more than once: every item's outputs are set anew.
		for i, r := range reqs {
			if errs[i] != nil {
				continue
			}
			var err error
			entries[i], bad[i], err = db.transitionTx(tx, r.ID, r.To, r.Mutate, r.Attempts, now)
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bonds: transition a batch of %d: %w", len(reqs), err)
	}
	for i, r := range reqs {
		if bad[i] != nil {
			entries[i] = Entry{}
			errs[i] = fmt.Errorf("bonds: transition %s to %s: %w", r.ID, r.To, bad[i])
		}
	}
	return entries, errs, nil
}

// transitionTx is one transition inside a write transaction. bad is the
// item's own error (unknown command, refused transition, unreadable
// entry), returned before anything was written; err is the
// transaction's, which aborts it.
func (db *DB) transitionTx(tx *bolt.Tx, id CommandID, to State, mutate func(*Entry), attempts int, now time.Time) (out Entry, bad, err error) {
	k, ok := db.lookupTx(id)
	if !ok {
		return Entry{}, ErrNotFound, nil
	}
	var e Entry
	if err := getEntry(tx, k, &e); err != nil {
		return Entry{}, err, nil
	}
	if !CanMove(e.State, to) {
		return Entry{}, fmt.Errorf("%s → %s: %w", e.State, to, ErrBadTransition), nil
	}
	// Attempts first, so that mutate sees them (an expiry's detail
	// names them).
	switch {
	case attempts > 0:
		e.Attempts += attempts
	case to == StateRunning:
		e.Attempts++
	}
	if mutate != nil {
		m := e
		if e.Result != nil {
			r := *e.Result
			m.Result = &r
		}
		mutate(&m)
		e.Result, e.Payload = m.Result, m.Payload
	}
	e.State, e.UpdatedAt = to, now
	if !to.Terminal() {
		e.Result = nil
	} else {
		if e.Result == nil {
			e.Result = &Result{}
		}
		r := e.Result
		r.CommandID, r.LockID, r.Operation, r.State = e.ID, e.LockID, e.Operation, to
		r.Attempts, r.FinishedAt = e.Attempts, now
		ob := tx.Bucket(bucketOutbox)
		seq, err := ob.NextSequence()
		if err != nil {
			return Entry{}, nil, err
		}
		rv, err := encode(r)
		if err != nil {
			return Entry{}, nil, err
		}
		if err := ob.Put(u64(seq), rv); err != nil {
			return Entry{}, nil, err
		}
		e.OutboxSeq = seq
	}
	if err := putEntry(tx, &e); err != nil {
		return Entry{}, nil, err
	}
	db.wrote(&e)
	return e, nil, nil
}

// Outbox returns the results the broker has not acknowledged, oldest
// first. After a restart they are all still here, to be published again.
func (db *DB) Outbox(ctx context.Context) ([]Result, error) {
	var out []Result
	err := db.view(func(tx *bolt.Tx) error {
		return eachRecord(ctx, tx, bucketOutbox, "outbox", nil, func(_ []byte, r *Result) error {
			out = append(out, *r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bonds: outbox: %w", err)
	}
	return out, nil
}

// Ack records that the broker acknowledged the result of command id: the
// result leaves the outbox and the entry becomes prunable. Acknowledging
// twice is not an error; a non-terminal entry is ErrBadTransition.
func (db *DB) Ack(ctx context.Context, id CommandID) error {
	now := db.now()
	err := db.write(ctx, func(tx *bolt.Tx) error {
		bad, err := db.ackTx(tx, id, now)
		if err != nil {
			return err
		}
		return bad
	})
	if err != nil {
		return fmt.Errorf("bonds: ack %s: %w", id, err)
	}
	return nil
}

// AckBatch is Ack for several results in one write request: one
// transaction (one fsync, possibly shared), durable all at once or not at
// all. Per ID, errs[i] (as long as ids) has Ack's semantics: nil when the
// result left the outbox or had already (an ID given twice is acknowledged
// once, the second is a no-op); ErrNotFound for a command not in the
// journal and ErrBadTransition for an entry that is not terminal, which
// change nothing and do not fail the other IDs. The returned error is for
// the whole batch (the commit failed, or ctx ended while waiting): then
// errs is nil and no acknowledgement may be taken as durable, so the
// results are published again, which the broker's subscribers already
// tolerate (results are at least once).
func (db *DB) AckBatch(ctx context.Context, ids []CommandID) ([]error, error) {
	errs := make([]error, len(ids))
	if len(ids) == 0 {
		return errs, nil
	}
	now := db.now()
	bad := make([]error, len(ids))
	err := db.write(ctx, func(tx *bolt.Tx) error {
		for i, id := range ids {
			var err error
			bad[i], err = db.ackTx(tx, id, now)
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bonds: ack a batch of %d: %w", len(ids), err)
	}
	for i, id := range ids {
		if bad[i] != nil {
			errs[i] = fmt.Errorf("bonds: ack %s: %w", id, bad[i])
		}
	}
	return errs, nil
}

// ackTx is one Ack inside a write transaction; bad and err as in
// transitionTx.
func (db *DB) ackTx(tx *bolt.Tx, id CommandID, now time.Time) (bad, err error) {
	k, ok := db.lookupTx(id)
	if !ok {
		return ErrNotFound, nil
	}
	var e Entry
	if err := getEntry(tx, k, &e); err != nil {
		return err, nil
	}
	if !e.State.Terminal() {
		return fmt.Errorf("entry is %s, not terminal: %w", e.State, ErrBadTransition), nil
	}
	if e.Acked() {
		return nil, nil
	}
	if err := tx.Bucket(bucketOutbox).Delete(u64(e.OutboxSeq)); err != nil {
		return nil, err
	}
	e.OutboxSeq, e.AckedAt = 0, now
	if err := putEntry(tx, &e); err != nil {
		return nil, err
	}
	db.wrote(&e)
	return nil, nil
}

// Pending returns the entries that are not terminal, oldest first: what
// the scheduler resumes after a restart. An entry found running was
// interrupted mid-attempt; its outcome on the lock is unknown, and the
// lock's per-signer counter makes sending it again safe (it runs at most
// once).
func (db *DB) Pending(ctx context.Context) ([]Entry, error) {
	var out []Entry
	// Most of a replay window's entries are finished: each is read only
	// as far as its state (the rest is skipped, not decoded), and only the
	// others are decoded whole (issue 14).
	each := func(k, v []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if finished(v) {
			return nil
		}
		var e Entry
		if err := decodeEntry(v, &e); err != nil {
			return fmt.Errorf("journal %x: %w", k, err)
		}
		if !e.State.Terminal() {
			out = append(out, e)
		}
		return nil
	}
	err := db.view(func(tx *bolt.Tx) error {
		if keys, ok := db.pendingHint(tx); ok {
			return eachKey(tx.Bucket(bucketJournal), keys, each) // the commit Open walked
		}
		return forEachResident(tx, tx.Bucket(bucketJournal), each)
	})
	if err != nil {
		return nil, fmt.Errorf("bonds: pending: %w", err)
	}
	return out, nil
}

var stateKey = []string{"state"}

// finished reports whether the journal entry v is terminal as far as its
// top-level state tells, without decoding it (Pending skips it; so does
// the hint Open's page walk builds for Pending, which must agree).
func finished(v []byte) bool {
	var st [1][]byte
	return topStrings(v, stateKey, st[:]) && terminalText(st[0])
}

// terminalText is State(b).Terminal() without allocating.
func terminalText(b []byte) bool {
	switch string(b) {
	case string(StateSucceeded), string(StateFailed), string(StateExpired), string(StateRejected):
		return true
	}
	return false
}

// pruneChunk bounds one prune transaction.
const pruneChunk = 1000

// Prune removes journal entries that are terminal, acknowledged, received
// more than the replay window ago and past their NotAfter. It walks the
// journal from its oldest entry and stops at the window's edge, so it
// reads only old entries. It returns how many it removed.
func (db *DB) Prune(ctx context.Context) (int, error) {
	total := 0
	var after []byte // resume point
	for {
		now := db.now()
		cutoff := now.Add(-db.opts.ReplayWindow).UnixNano()
		n, more, from := 0, false, after
		err := db.write(ctx, func(tx *bolt.Tx) error {
			n, more = 0, false
			j := tx.Bucket(bucketJournal)
			c := j.Cursor()
			k, v := c.First()
			if from != nil {
				k, v = c.Seek(from)
			}
			var del [][]byte
			scanned := 0
			for ; k != nil; k, v = c.Next() {
				ns, id, ok := splitJournalKey(k)
				if !ok {
					return fmt.Errorf("journal key %x: bad length", k)
				}
				if ns >= cutoff {
					break
				}
				if scanned++; scanned > pruneChunk {
					more = true
					after = append([]byte(nil), k...)
					break
				}
				var e Entry
				if err := decodeEntry(v, &e); err != nil {
					return fmt.Errorf("%x: %w", k, err)
				}
				if e.State.Terminal() && e.Acked() && (e.NotAfter.IsZero() || e.NotAfter.Before(now)) {
					del = append(del, append([]byte(nil), k...))
					db.txIDs[id] = idGone
				}
			}
			for _, k := range del {
				if err := j.Delete(k); err != nil {
					return err
				}
			}
			n = len(del)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("bonds: prune: %w", err)
		}
		total += n
		if !more {
			return total, nil
		}
	}
}
