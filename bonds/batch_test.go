package bonds

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestTransitionBatch: a batch of transitions is one write; each item sees
// the ones before it (the same command may go running then terminal);
// a refused or unknown item changes nothing and does not fail the others;
// terminal items put their results in the outbox.
func TestTransitionBatch(t *testing.T) {
	db, _ := openTest(t, Options{Now: newClock().Now})
	for n := uint64(1); n <= 3; n++ {
		if _, err := db.Append(bg, testCommand(n)); err != nil {
			t.Fatal(err)
		}
	}
	before := db.Stats()
	entries, errs, err := db.TransitionBatch(bg, []TransitionReq{
		{ID: cid(1), To: StateQueued},
		{ID: cid(2), To: StateQueued},
		{ID: cid(3), To: StateSucceeded}, // received → succeeded: refused
		{ID: cid(9), To: StateQueued},    // unknown
		{ID: cid(1), To: StateRunning},   // sees the first item
		{ID: cid(2), To: "sleeping"},     // no such state
		{ID: cid(1), To: StateSucceeded, Mutate: func(e *Entry) { e.Result = &Result{Status: "ok", Detail: "d"} }},
		{ID: cid(2), To: StateRunning},
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := db.Stats(); st.Writes != before.Writes+1 || st.Commits != before.Commits+1 {
		t.Errorf("TransitionBatch: %d writes and %d commits, want 1 and 1", st.Writes-before.Writes, st.Commits-before.Commits)
	}
	wantErr := []error{nil, nil, ErrBadTransition, ErrNotFound, nil, ErrInvalid, nil, nil}
	for i, w := range wantErr {
		if (w == nil) != (errs[i] == nil) || (w != nil && !errors.Is(errs[i], w)) {
			t.Errorf("item %d: err %v, want %v", i, errs[i], w)
		}
	}
	if e := entries[6]; e.State != StateSucceeded || e.Attempts != 1 || e.Result == nil || e.Result.Status != "ok" || e.OutboxSeq == 0 {
		t.Errorf("terminal item = %+v", e)
	}
	if e := entries[7]; e.State != StateRunning || e.Attempts != 1 {
		t.Errorf("running item = %+v", e)
	}
	if e, err := db.Entry(bg, cid(3)); err != nil || e.State != StateReceived {
		t.Errorf("refused item's entry = %+v, %v", e, err)
	}
	out, err := db.Outbox(bg)
	if err != nil || len(out) != 1 || out[0].CommandID != cid(1) || out[0].State != StateSucceeded || out[0].Attempts != 1 {
		t.Fatalf("outbox = %+v, %v", out, err)
	}
	// Nothing valid: no write at all.
	before = db.Stats()
	if _, errs, err := db.TransitionBatch(bg, []TransitionReq{{ID: cid(1), To: "?"}}); err != nil || !errors.Is(errs[0], ErrInvalid) {
		t.Errorf("invalid only: %v, %v", errs, err)
	}
	if st := db.Stats(); st.Writes != before.Writes {
		t.Errorf("a batch of invalid items wrote")
	}
	// A batch whose context has ended is not written.
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if _, _, err := db.TransitionBatch(ctx, []TransitionReq{{ID: cid(3), To: StateQueued}}); err == nil {
		t.Errorf("TransitionBatch on a done context succeeded")
	}
}

// TestAckBatch: several acknowledgements in one write, with Ack's per-ID
// semantics.
func TestAckBatch(t *testing.T) {
	db, _ := openTest(t, Options{Now: newClock().Now})
	for n := uint64(1); n <= 4; n++ {
		if _, err := db.Append(bg, testCommand(n)); err != nil {
			t.Fatal(err)
		}
	}
	for n := uint64(1); n <= 3; n++ {
		if _, err := db.Transition(bg, cid(n), StateRejected, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Ack(bg, cid(3)); err != nil {
		t.Fatal(err)
	}
	before := db.Stats()
	errs, err := db.AckBatch(bg, []CommandID{cid(1), cid(9), cid(4), cid(2), cid(3), cid(1)})
	if err != nil {
		t.Fatal(err)
	}
	if st := db.Stats(); st.Writes != before.Writes+1 || st.Commits != before.Commits+1 {
		t.Errorf("AckBatch: %d writes and %d commits, want 1 and 1", st.Writes-before.Writes, st.Commits-before.Commits)
	}
	wantErr := []error{nil, ErrNotFound, ErrBadTransition, nil, nil, nil}
	for i, w := range wantErr {
		if (w == nil) != (errs[i] == nil) || (w != nil && !errors.Is(errs[i], w)) {
			t.Errorf("id %d: err %v, want %v", i, errs[i], w)
		}
	}
	if out, err := db.Outbox(bg); err != nil || len(out) != 0 {
		t.Errorf("outbox after AckBatch = %+v, %v", out, err)
	}
	for n := uint64(1); n <= 3; n++ {
		if e, err := db.Entry(bg, cid(n)); err != nil || !e.Acked() {
			t.Errorf("entry %d = %+v, %v", n, e, err)
		}
	}
	if errs, err := db.AckBatch(bg, nil); err != nil || len(errs) != 0 {
		t.Errorf("empty AckBatch = %v, %v", errs, err)
	}
}

// TestUpdateLockFactsCoalesces: an answer's facts cost no commit, show at
// once in Lock, Locks and UpdateLock, merge newest-wins (battery,
// firmware, clock, also against UpdateSeen) and highest-wins (counters),
// and reach the file with the seen flush.
func TestUpdateLockFactsCoalesces(t *testing.T) {
	db, _ := openTest(t, Options{Now: newClock().Now})
	if err := db.PutLock(bg, Lock{ID: lid(1), Counters: map[string]uint64{"a1": 4, "b2": 1}}); err != nil {
		t.Fatal(err)
	}
	before := db.Stats()
	seen := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := db.UpdateSeen(lid(1), seen, -60, 70, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	for i, f := range []LockFacts{
		{Battery: 60, Firmware: "1.1.0", HasClock: true, ClockOffset: 2 * time.Second, Counters: map[string]uint64{"a1": 9}},
		{Battery: 55, Counters: map[string]uint64{"a1": 7, "c3": 2}}, // a1 lower: kept at 9
		{Battery: -1, Counters: map[string]uint64{"b2": 3}},          // battery unknown: kept
	} {
		if err := db.UpdateLockFacts(lid(1), f); err != nil {
			t.Fatalf("facts %d: %v", i, err)
		}
	}
	if err := db.UpdateLockFacts(lid(9), LockFacts{Battery: 1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateLockFacts of an unknown lock = %v", err)
	}
	if err := db.UpdateLockFacts(lid(1), LockFacts{Battery: -1, Counters: map[string]uint64{"": 1}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("UpdateLockFacts with an empty key ID = %v", err)
	}
	if st := db.Stats(); st.Commits != before.Commits || st.SeenPending != 1 {
		t.Errorf("after UpdateLockFacts: %+v (commits before %d)", st, before.Commits)
	}
	want := func(what string, l Lock, battery int, firmware string) {
		t.Helper()
		if l.Battery != battery || l.Firmware != firmware || l.ClockOffset != 2*time.Second || !l.LastSeen.Equal(seen) ||
			l.Counters["a1"] != 9 || l.Counters["b2"] != 3 || l.Counters["c3"] != 2 {
			t.Errorf("%s = %+v", what, l)
		}
	}
	l, err := db.Lock(bg, lid(1))
	if err != nil {
		t.Fatal(err)
	}
	want("Lock", l, 55, "1.1.0")
	ls, err := db.Locks(bg)
	if err != nil || len(ls) != 1 {
		t.Fatal(ls, err)
	}
	want("Locks", ls[0], 55, "1.1.0")
	if got, err := db.RaiseCounter(bg, lid(1), "a1", 5); err != nil || got != 9 {
		t.Errorf("RaiseCounter below the pending counter = %d, %v", got, err)
	}
	// A newer advertisement's battery wins over the answer's.
	if err := db.UpdateSeen(lid(1), seen, -61, 50, ""); err != nil {
		t.Fatal(err)
	}
	if l, _ := db.Lock(bg, lid(1)); l.Battery != 50 || l.Firmware != "1.1.0" {
		t.Errorf("after a newer advertisement: %+v", l)
	}
	if err := db.FlushSeen(bg); err != nil {
		t.Fatal(err)
	}
	if st := db.Stats(); st.SeenPending != 0 {
		t.Errorf("after FlushSeen: %+v", st)
	}
	var disk Lock
	if err := db.view(func(tx *bolt.Tx) (err error) { disk, err = getLock(tx, lid(1)); return }); err != nil {
		t.Fatal(err)
	}
	want("record on disk", disk, 50, "1.1.0")
	// Reopened: everything was written (Close flushes what is pending).
	if err := db.UpdateLockFacts(lid(1), LockFacts{Battery: -1, Counters: map[string]uint64{"a1": 12}}); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, Options{})
	if l, err := db.Lock(bg, lid(1)); err != nil || l.Counters["a1"] != 12 || l.Battery != 50 {
		t.Errorf("after reopen: %+v, %v", l, err)
	}
}

// TestBackupWritesPendingFacts: an online backup holds the lock facts and
// last-seen values not yet flushed.
func TestBackupWritesPendingFacts(t *testing.T) {
	db, _ := openTest(t, Options{})
	if err := db.PutLock(bg, Lock{ID: lid(1)}); err != nil {
		t.Fatal(err)
	}
	if err := db.UpdateLockFacts(lid(1), LockFacts{Battery: 42, Firmware: "3.1.4", Counters: map[string]uint64{"k": 7}}); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	if err := writeFileAtomic(backup, func(w io.Writer) error { _, err := db.Backup(bg, w); return err }); err != nil {
		t.Fatal(err)
	}
	bk, err := Open(backup, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Close()
	if l, err := bk.Lock(bg, lid(1)); err != nil || l.Battery != 42 || l.Firmware != "3.1.4" || l.Counters["k"] != 7 {
		t.Errorf("lock in the backup = %+v, %v", l, err)
	}
}
