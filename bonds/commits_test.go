package bonds

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestTransitionAttempts: a transition's Attempts are added to the
// entry's count in place of the one a move to running counts, and a
// mutate sees them; a move to running without Attempts counts one.
func TestTransitionAttempts(t *testing.T) {
	db, _ := openTest(t, Options{Now: newClock().Now})
	for n := uint64(1); n <= 2; n++ {
		if _, err := db.Append(bg, testCommand(n)); err != nil {
			t.Fatal(err)
		}
	}
	var seen int
	entries, errs, err := db.TransitionBatch(bg, []TransitionReq{
		// Three attempts in memory, the last of which got the answer.
		{ID: cid(1), To: StateQueued},
		{ID: cid(1), To: StateRunning, Attempts: 3},
		{ID: cid(1), To: StateSucceeded, Mutate: func(e *Entry) { seen = e.Attempts }},
		// Two attempts, then it expired waiting.
		{ID: cid(2), To: StateExpired, Attempts: 2},
	})
	if err != nil || errs[0] != nil || errs[1] != nil || errs[2] != nil || errs[3] != nil {
		t.Fatalf("%v %v", errs, err)
	}
	if e := entries[2]; e.Attempts != 3 || e.Result.Attempts != 3 || seen != 3 {
		t.Errorf("succeeded after %d attempts (result %d, mutate saw %d), want 3", e.Attempts, e.Result.Attempts, seen)
	}
	if e := entries[3]; e.Attempts != 2 || e.Result.Attempts != 2 {
		t.Errorf("expired after %d attempts (result %d), want 2", e.Attempts, e.Result.Attempts)
	}
	if _, err := db.Append(bg, testCommand(3)); err != nil {
		t.Fatal(err)
	}
	for _, to := range []State{StateQueued, StateRunning, StateQueued, StateRunning} {
		if _, err := db.Transition(bg, cid(3), to, nil); err != nil {
			t.Fatal(err)
		}
	}
	if e, err := db.Entry(bg, cid(3)); err != nil || e.Attempts != 2 {
		t.Errorf("two moves to running: %d attempts, %v; want 2", e.Attempts, err)
	}
}

// TestCommitSeams: BeforeCommit and AfterCommit see every commit, with the
// journal entries it wrote as written: an append, each transition (the
// same entry twice in one batch), an acknowledgement; none for a lock
// record. A failed write (a refused transition, run again alone) is not
// reported as part of its batch's commit.
func TestCommitSeams(t *testing.T) {
	type commit struct {
		before bool
		ids    []string
	}
	var mu sync.Mutex
	var got []commit
	rec := func(before bool) func([]Entry) {
		return func(es []Entry) {
			var ids []string
			for _, e := range es {
				s := e.ID.String()[30:] + ":" + string(e.State)
				if e.Acked() {
					s += "+acked"
				}
				ids = append(ids, s)
			}
			mu.Lock()
			got = append(got, commit{before, ids})
			mu.Unlock()
		}
	}
	db, _ := openTest(t, Options{Now: newClock().Now, BeforeCommit: rec(true), AfterCommit: rec(false)})
	if _, err := db.Append(bg, testCommand(1)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.TransitionBatch(bg, []TransitionReq{
		{ID: cid(1), To: StateQueued},
		{ID: cid(1), To: StateRunning},
		{ID: cid(1), To: StateRunning}, // refused: not written
		{ID: cid(1), To: StateSucceeded},
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Ack(bg, cid(1)); err != nil {
		t.Fatal(err)
	}
	if err := db.PutLock(bg, Lock{ID: lid(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Transition(bg, cid(1), StateQueued, nil); !errors.Is(err, ErrBadTransition) {
		t.Fatalf("terminal → queued: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []commit{
		{true, []string{"01:received"}}, {false, []string{"01:received"}},
		{true, []string{"01:queued", "01:running", "01:succeeded"}}, {false, []string{"01:queued", "01:running", "01:succeeded"}},
		{true, []string{"01:succeeded+acked"}}, {false, []string{"01:succeeded+acked"}},
		{true, nil}, {false, nil},
	}
	if len(got) != len(want) {
		t.Fatalf("%d calls, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].before != w.before || !slices.Equal(got[i].ids, w.ids) {
			t.Errorf("call %d: before %v, %s; want before %v, %s", i, got[i].before, strings.Join(got[i].ids, " "), w.before, strings.Join(w.ids, " "))
		}
	}
}
