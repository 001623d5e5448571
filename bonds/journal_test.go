package bonds

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestAppendDeduplicatesAcrossRestart: a command ID seen before is
// ErrDuplicate with the existing entry, before and after a restart.
func TestAppendDeduplicatesAcrossRestart(t *testing.T) {
	clk := newClock()
	db, _ := openTest(t, Options{Now: clk.Now})
	c := testCommand(1)
	e, err := db.Append(bg, c)
	if err != nil || e.State != StateReceived || !e.ReceivedAt.Equal(clk.Now()) {
		t.Fatalf("Append = %+v, %v", e, err)
	}
	clk.Add(time.Minute)
	again, err := db.Append(bg, c)
	if !errors.Is(err, ErrDuplicate) || again.ID != c.ID || !again.ReceivedAt.Equal(e.ReceivedAt) {
		t.Fatalf("second Append = %+v, %v; want ErrDuplicate with the first entry", again, err)
	}
	db = reopen(t, db, Options{Now: clk.Now})
	if _, err := db.Append(bg, c); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("Append after restart = %v, want ErrDuplicate", err)
	}
}

// TestAppendRefusesInvalid: zero IDs and an empty operation are refused.
func TestAppendRefusesInvalid(t *testing.T) {
	db, _ := openTest(t, Options{})
	for _, c := range []Command{{LockID: lid(1), Operation: "lock"}, {ID: cid(1), Operation: "lock"}, {ID: cid(1), LockID: lid(1)}} {
		if _, err := db.Append(bg, c); !errors.Is(err, ErrInvalid) {
			t.Errorf("Append(%+v) = %v, want ErrInvalid", c, err)
		}
	}
}

var allStates = []State{StateReceived, StateQueued, StateRunning, StateSucceeded, StateFailed, StateExpired, StateRejected}

// pathTo lists the transitions from received to s.
func pathTo(s State) []State {
	switch s {
	case StateReceived:
		return nil
	case StateQueued:
		return []State{StateQueued}
	case StateRunning:
		return []State{StateQueued, StateRunning}
	default:
		return []State{StateQueued, StateRunning, s}
	}
}

// TestTransitionStateMachine: for every pair of states, Transition allows
// exactly the documented moves; terminal states are final.
func TestTransitionStateMachine(t *testing.T) {
	db, _ := openTest(t, Options{})
	allowed := map[[2]State]bool{
		{StateReceived, StateQueued}: true, {StateReceived, StateRejected}: true, {StateReceived, StateExpired}: true,
		{StateQueued, StateRunning}: true, {StateQueued, StateExpired}: true, {StateQueued, StateRejected}: true,
		{StateRunning, StateSucceeded}: true, {StateRunning, StateFailed}: true, {StateRunning, StateExpired}: true,
		{StateRunning, StateRejected}: true, {StateRunning, StateQueued}: true,
	}
	n := uint64(0)
	for _, from := range allStates {
		for _, to := range allStates {
			n++
			if _, err := db.Append(bg, testCommand(n)); err != nil {
				t.Fatal(err)
			}
			for _, s := range pathTo(from) {
				if _, err := db.Transition(bg, cid(n), s, nil); err != nil {
					t.Fatalf("setting up %s: %v", from, err)
				}
			}
			_, err := db.Transition(bg, cid(n), to, nil)
			if allowed[[2]State{from, to}] != (err == nil) || (err != nil && !errors.Is(err, ErrBadTransition)) {
				t.Errorf("%s → %s: %v, allowed %v", from, to, err, allowed[[2]State{from, to}])
			}
			if CanMove(from, to) != allowed[[2]State{from, to}] {
				t.Errorf("CanMove(%s, %s) = %v", from, to, CanMove(from, to))
			}
		}
	}
	if _, err := db.Transition(bg, cid(9999), StateQueued, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Transition of an unknown ID = %v, want ErrNotFound", err)
	}
	if _, err := db.Transition(bg, cid(1), "bogus", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Transition to a bogus state = %v, want ErrInvalid", err)
	}
}

// TestResultReachesOutboxAndSurvivesRestart: a terminal transition puts
// the result in the outbox in the same transaction; it stays there across
// a restart until Ack, which is idempotent.
func TestResultReachesOutboxAndSurvivesRestart(t *testing.T) {
	db, _ := openTest(t, Options{})
	for i := uint64(1); i <= 3; i++ {
		if _, err := db.Append(bg, testCommand(i)); err != nil {
			t.Fatal(err)
		}
		for _, s := range []State{StateQueued, StateRunning} {
			if _, err := db.Transition(bg, cid(i), s, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	e, err := db.Transition(bg, cid(2), StateSucceeded, func(e *Entry) {
		e.Result = &Result{Status: "ok", Payload: []byte("result-2")}
		e.State = StateFailed // ignored: Transition owns the state
		e.ID = cid(77)        // ignored too
	})
	if err != nil || e.State != StateSucceeded || e.Result.Status != "ok" || e.OutboxSeq == 0 || e.ID != cid(2) {
		t.Fatalf("Transition = %+v, %v", e, err)
	}
	if _, err := db.Transition(bg, cid(1), StateFailed, func(e *Entry) { e.Result = &Result{Status: "jammed"} }); err != nil {
		t.Fatal(err)
	}
	if err := db.Ack(bg, cid(3)); !errors.Is(err, ErrBadTransition) {
		t.Errorf("Ack of a running entry = %v, want ErrBadTransition", err)
	}
	if err := db.Ack(bg, cid(99)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Ack of an unknown entry = %v, want ErrNotFound", err)
	}

	db = reopen(t, db, Options{})
	out, err := db.Outbox(bg)
	if err != nil || len(out) != 2 || out[0].CommandID != cid(2) || out[1].CommandID != cid(1) {
		t.Fatalf("Outbox after restart = %+v, %v; want results of 2 then 1", out, err)
	}
	if out[0].State != StateSucceeded || !bytes.Equal(out[0].Payload, []byte("result-2")) || out[0].Attempts != 1 || out[0].LockID != lid(2) {
		t.Errorf("result = %+v", out[0])
	}
	if err := db.Ack(bg, cid(2)); err != nil {
		t.Fatal(err)
	}
	if err := db.Ack(bg, cid(2)); err != nil {
		t.Errorf("second Ack = %v, want nil", err)
	}
	out, _ = db.Outbox(bg)
	if len(out) != 1 || out[0].CommandID != cid(1) {
		t.Errorf("Outbox after Ack = %+v", out)
	}
	if e, _ := db.Entry(bg, cid(2)); !e.Acked() || e.OutboxSeq != 0 {
		t.Errorf("acked entry = %+v", e)
	}
}

// TestRetryCountsAttempts: running → queued → running counts two
// attempts, and the retry leaves no result behind.
func TestRetryCountsAttempts(t *testing.T) {
	db, _ := openTest(t, Options{})
	if _, err := db.Append(bg, testCommand(1)); err != nil {
		t.Fatal(err)
	}
	var e Entry
	var err error
	for _, s := range []State{StateQueued, StateRunning, StateQueued, StateRunning, StateFailed} {
		if e, err = db.Transition(bg, cid(1), s, nil); err != nil {
			t.Fatal(err)
		}
	}
	if e.Attempts != 2 || e.Result == nil || e.Result.Attempts != 2 {
		t.Errorf("entry = %+v, want 2 attempts", e)
	}
}

// TestPendingIsWhatTheSchedulerResumes: after a restart, Pending lists
// exactly the non-terminal entries, oldest first.
func TestPendingIsWhatTheSchedulerResumes(t *testing.T) {
	clk := newClock()
	db, _ := openTest(t, Options{Now: clk.Now})
	for i := uint64(1); i <= 5; i++ {
		if _, err := db.Append(bg, testCommand(i)); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Second)
	}
	for _, s := range []State{StateQueued, StateRunning} {
		if _, err := db.Transition(bg, cid(2), s, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Transition(bg, cid(4), StateRejected, nil); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, Options{Now: clk.Now})
	p, err := db.Pending(bg)
	if err != nil {
		t.Fatal(err)
	}
	var got []CommandID
	for _, e := range p {
		got = append(got, e.ID)
	}
	want := []CommandID{cid(1), cid(2), cid(3), cid(5)}
	if fmt.Sprint(got) != fmt.Sprint(want) || p[1].State != StateRunning {
		t.Errorf("Pending = %v, want %v", got, want)
	}
}

// TestPruneKeepsWhatDedupNeeds: Prune removes only terminal, acknowledged
// entries older than the window whose not-after has passed; a pruned ID is
// gone, the others still deduplicate.
func TestPruneKeepsWhatDedupNeeds(t *testing.T) {
	clk := newClock()
	db, _ := openTest(t, Options{Now: clk.Now, ReplayWindow: time.Hour, PruneInterval: -1})
	finish := func(n uint64, ack bool) {
		t.Helper()
		for _, s := range []State{StateRejected} {
			if _, err := db.Transition(bg, cid(n), s, nil); err != nil {
				t.Fatal(err)
			}
		}
		if ack {
			if err := db.Ack(bg, cid(n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// 1: old, acked → pruned. 2: old, not acked → kept. 3: old, acked, but
	// its not-after is ahead → kept. 4: old, pending → kept. 5: recent,
	// acked → kept.
	for n := uint64(1); n <= 4; n++ {
		c := testCommand(n)
		if n == 3 {
			c.NotAfter = clk.Now().Add(3 * time.Hour)
		}
		if _, err := db.Append(bg, c); err != nil {
			t.Fatal(err)
		}
	}
	finish(1, true)
	finish(2, false)
	finish(3, true)
	clk.Add(2 * time.Hour)
	if _, err := db.Append(bg, testCommand(5)); err != nil {
		t.Fatal(err)
	}
	finish(5, true)
	n, err := db.Prune(bg)
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	if _, err := db.Entry(bg, cid(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("entry 1 still there: %v", err)
	}
	for _, k := range []uint64{2, 3, 4, 5} {
		if _, err := db.Append(bg, testCommand(k)); !errors.Is(err, ErrDuplicate) {
			t.Errorf("Append(%d) after prune = %v, want ErrDuplicate", k, err)
		}
	}
	clk.Add(2 * time.Hour) // 3's not-after passed, 5 is out of the window
	if n, err := db.Prune(bg); err != nil || n != 2 {
		t.Errorf("second Prune = %d, %v; want 2 (entries 3 and 5)", n, err)
	}
}

// TestPruneInChunks: more prunable entries than one chunk all go.
func TestPruneInChunks(t *testing.T) {
	clk := newClock()
	db, _ := openTest(t, Options{Now: clk.Now, ReplayWindow: time.Minute, PruneInterval: -1, NoSync: true})
	const n = pruneChunk*2 + 10
	err := db.write(bg, func(tx *bolt.Tx) error {
		for i := uint64(1); i <= n; i++ {
			now := clk.Now().Add(time.Duration(i))
			e := Entry{Command: testCommand(i), ReceivedAt: now, UpdatedAt: now, State: StateRejected,
				Result: &Result{CommandID: cid(i), State: StateRejected}, AckedAt: now}
			if err := putEntry(tx, &e); err != nil {
				return err
			}
			db.txIDs[e.ID] = now.UnixNano()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour)
	if got, err := db.Prune(bg); err != nil || got != n {
		t.Errorf("Prune = %d, %v; want %d", got, err, n)
	}
}

// blockCommitter occupies the commit path with a write that waits for
// release (committed inline: nothing else is queued); queued waits until
// want more writes have been handed to the committer behind it.
func blockCommitter(t *testing.T, db *DB) (release func(), queued func(want int)) {
	t.Helper()
	in, out := make(chan struct{}), make(chan struct{})
	var once sync.Once
	go func() {
		_ = db.write(bg, func(*bolt.Tx) error {
			once.Do(func() { close(in) })
			<-out
			return nil
		})
	}()
	<-in
	base := db.enqueued.Load()
	return func() { close(out) }, func(want int) {
		for db.enqueued.Load() < base+uint64(want) {
			time.Sleep(time.Millisecond)
		}
	}
}

// TestGroupCommit: writes queued while a commit runs go into the next
// commit together: one fsync for all of them.
func TestGroupCommit(t *testing.T) {
	db, _ := openTest(t, Options{})
	release, queued := blockCommitter(t, db)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range uint64(n) {
		wg.Go(func() {
			_, err := db.Append(bg, testCommand(i+1))
			errs <- err
		})
	}
	queued(n)
	before := db.Stats()
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	after := db.Stats()
	if c, w := after.Commits-before.Commits, after.Writes-before.Writes; c != 2 || w != n+1 {
		t.Errorf("%d writes took %d commits, want %d writes in 2 commits (the blocker's, then the batch)", w, c, n+1)
	}
}

// TestFailedWriteDoesNotSpoilItsBatch: a duplicate in a batch gets
// ErrDuplicate; every other write of the batch commits.
func TestFailedWriteDoesNotSpoilItsBatch(t *testing.T) {
	db, _ := openTest(t, Options{})
	if _, err := db.Append(bg, testCommand(1)); err != nil {
		t.Fatal(err)
	}
	release, queued := blockCommitter(t, db)
	var wg sync.WaitGroup
	results := make([]error, 10)
	for i := range 10 {
		wg.Go(func() {
			_, results[i] = db.Append(bg, testCommand(uint64(i+1))) // 1 is a duplicate
		})
	}
	queued(10)
	release()
	wg.Wait()
	for i, err := range results {
		if (i == 0) != errors.Is(err, ErrDuplicate) || (i != 0 && err != nil) {
			t.Errorf("Append %d = %v", i+1, err)
		}
		if _, err := db.Entry(bg, cid(uint64(i+1))); err != nil {
			t.Errorf("entry %d: %v", i+1, err)
		}
	}
}

// TestWriteHonoursContext: a cancelled context is an error before
// anything is queued.
func TestWriteHonoursContext(t *testing.T) {
	db, _ := openTest(t, Options{})
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if _, err := db.Append(ctx, testCommand(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Append with a cancelled context = %v", err)
	}
	if _, err := db.Entry(bg, cid(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("the entry was written: %v", err)
	}
}

// TestAppendAtKeepsArrivalOrder: appends that finish out of order (as
// concurrent ones do) are still pending in the order of the arrival times
// given, also after a reopen.
func TestAppendAtKeepsArrivalOrder(t *testing.T) {
	clk := newClock()
	db, _ := openTest(t, Options{Now: clk.Now})
	arrived := clk.Now()
	for _, n := range []uint64{3, 1, 2} { // written last-arrived first
		if _, err := db.AppendAt(bg, testCommand(n), arrived.Add(time.Duration(n)*time.Nanosecond)); err != nil {
			t.Fatal(err)
		}
	}
	db = reopen(t, db, Options{Now: clk.Now})
	p, err := db.Pending(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 3 || p[0].ID != cid(1) || p[1].ID != cid(2) || p[2].ID != cid(3) {
		t.Errorf("pending order %v", p)
	}
	if !p[0].ReceivedAt.Equal(arrived.Add(time.Nanosecond)) {
		t.Errorf("received_at %v, want the arrival time", p[0].ReceivedAt)
	}
}

// TestAppendBatch: one batch is journaled in slice order with its arrival
// times (also after a reopen); an ID twice in the batch and an ID already
// in the journal are duplicates with the existing entry; an invalid item
// fails alone; the batch is one write.
func TestAppendBatch(t *testing.T) {
	clk := newClock()
	db, _ := openTest(t, Options{Now: clk.Now})
	arrived := clk.Now()
	old, err := db.AppendAt(bg, testCommand(1), arrived)
	if err != nil {
		t.Fatal(err)
	}
	at := func(n int) time.Time { return arrived.Add(time.Duration(n) * time.Millisecond) }
	invalid := testCommand(9)
	invalid.Operation = ""
	batch := []Arrival{
		{Command: testCommand(4), ReceivedAt: at(1)},
		{Command: testCommand(1), ReceivedAt: at(2)}, // already journaled
		{Command: testCommand(2), ReceivedAt: at(3)},
		{Command: invalid, ReceivedAt: at(4)},
		{Command: testCommand(4), ReceivedAt: at(5)}, // twice in the batch
		{Command: testCommand(3), ReceivedAt: at(6)},
	}
	before := db.Stats().Writes
	entries, errs, err := db.AppendBatch(bg, batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(batch) || len(errs) != len(batch) {
		t.Fatalf("%d entries, %d errors for %d items", len(entries), len(errs), len(batch))
	}
	if w := db.Stats().Writes - before; w != 1 {
		t.Errorf("the batch took %d writes, want 1", w)
	}
	for _, i := range []int{0, 2, 5} {
		if errs[i] != nil || entries[i].ID != batch[i].Command.ID || !entries[i].ReceivedAt.Equal(batch[i].ReceivedAt) ||
			entries[i].State != StateReceived {
			t.Errorf("item %d: %+v, %v", i, entries[i], errs[i])
		}
	}
	if !errors.Is(errs[1], ErrDuplicate) || entries[1].ID != cid(1) || !entries[1].ReceivedAt.Equal(old.ReceivedAt) {
		t.Errorf("duplicate of an older entry: %+v, %v", entries[1], errs[1])
	}
	if !errors.Is(errs[3], ErrInvalid) {
		t.Errorf("invalid item: %v", errs[3])
	}
	if !errors.Is(errs[4], ErrDuplicate) || entries[4].ID != cid(4) || !entries[4].ReceivedAt.Equal(at(1)) {
		t.Errorf("duplicate inside the batch: %+v, %v", entries[4], errs[4])
	}

	db = reopen(t, db, Options{Now: clk.Now})
	p, err := db.Pending(bg)
	if err != nil {
		t.Fatal(err)
	}
	want := []CommandID{cid(1), cid(4), cid(2), cid(3)}
	if len(p) != len(want) {
		t.Fatalf("pending %v, want %v", p, want)
	}
	for i, e := range p {
		if e.ID != want[i] {
			t.Fatalf("pending order at %d: %v, want %v", i, e.ID, want[i])
		}
	}
	if _, err := db.Entry(bg, cid(9)); !errors.Is(err, ErrNotFound) {
		t.Errorf("the invalid item was journaled: %v", err)
	}
	// Deduplication after the restart, and an all-invalid batch writes nothing.
	_, errs, err = db.AppendBatch(bg, []Arrival{{Command: testCommand(2)}, {Command: invalid}})
	if err != nil || !errors.Is(errs[0], ErrDuplicate) || !errors.Is(errs[1], ErrInvalid) {
		t.Errorf("after reopen: %v, %v", errs, err)
	}
	before = db.Stats().Writes
	if _, errs, err = db.AppendBatch(bg, []Arrival{{Command: invalid}}); err != nil || !errors.Is(errs[0], ErrInvalid) {
		t.Errorf("all invalid: %v, %v", errs, err)
	}
	if w := db.Stats().Writes - before; w != 0 {
		t.Errorf("an all-invalid batch wrote %d times", w)
	}
}

// TestAppendBatchFailsWhole: a batch whose context is done is not
// journaled at all.
func TestAppendBatchFailsWhole(t *testing.T) {
	db, _ := openTest(t, Options{})
	ctx, cancel := context.WithCancel(bg)
	cancel()
	entries, errs, err := db.AppendBatch(ctx, []Arrival{{Command: testCommand(1)}, {Command: testCommand(2)}})
	if !errors.Is(err, context.Canceled) || entries != nil || errs != nil {
		t.Fatalf("AppendBatch = %v, %v, %v", entries, errs, err)
	}
	for _, n := range []uint64{1, 2} {
		if _, err := db.Entry(bg, cid(n)); !errors.Is(err, ErrNotFound) {
			t.Errorf("entry %d: %v", n, err)
		}
	}
}

// TestPendingFromOpensWalk: Pending right after Open reads only the
// entries Open's page walk found unfinished, and returns what a pass over
// the whole journal returns (every state, oldest first, entries on
// overflow pages included); after another commit it reads the journal
// again and sees the new entry.
func TestPendingFromOpensWalk(t *testing.T) {
	db, _ := openTest(t, Options{NoSync: true, PruneInterval: -1})
	n := uint64(0)
	for range 40 {
		for _, st := range allStates {
			n++
			c := testCommand(n)
			if n%17 == 0 {
				c.Payload = bytes.Repeat([]byte{1}, 9000) // an overflow page
			}
			if _, err := db.Append(bg, c); err != nil {
				t.Fatal(err)
			}
			for _, s := range pathTo(st) {
				if _, err := db.Transition(bg, cid(n), s, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	db = reopen(t, db, Options{NoSync: true, PruneInterval: -1})
	h := db.hint.Load()
	if h == nil || len(h.keys) == 0 || len(h.keys) >= int(n) {
		t.Fatalf("Open's hint: %v", h)
	}
	hinted, err := db.Pending(bg)
	if err != nil {
		t.Fatal(err)
	}
	if db.hint.Load() != h {
		t.Fatal("the hint was dropped without a commit")
	}
	db.hint.Store(nil)
	whole, err := db.Pending(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(whole) == 0 || len(hinted) != len(whole) {
		t.Fatalf("Pending from the walk: %d entries, from the whole journal: %d", len(hinted), len(whole))
	}
	for i := range whole {
		if hinted[i].ID != whole[i].ID || hinted[i].State != whole[i].State || !bytes.Equal(hinted[i].Payload, whole[i].Payload) {
			t.Fatalf("entry %d: from the walk %s %s, from the whole journal %s %s", i, hinted[i].ID, hinted[i].State, whole[i].ID, whole[i].State)
		}
	}
	db.hint.Store(h)
	if _, err := db.Append(bg, testCommand(n+1)); err != nil {
		t.Fatal(err)
	}
	after, err := db.Pending(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(whole)+1 || after[len(after)-1].ID != cid(n+1) || db.hint.Load() != nil {
		t.Fatalf("after a commit: %d entries (want %d, the new one last), hint %v", len(after), len(whole)+1, db.hint.Load())
	}
}
