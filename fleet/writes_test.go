package fleet_test

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/fleet"
	"github.com/gatewayd/gatewayd/fleet/fleettest"
)

// TestJournalWritesBatched: admission and the start of an attempt write
// nothing; each command's outcome is one write, with the transitions that
// lead to it. Five commands for one lock, resumed together at Start and
// carried in one session, cost 5 writes, their results (before issue 14's
// "fewer commits": 7, and 15 with one write per transition).
func TestJournalWritesBatched(t *testing.T) {
	clk := newClock()
	db := openDB(t, clk)
	const n = 5
	var ids []bonds.CommandID
	for i := range uint64(n) {
		clk.Add(time.Millisecond)
		ids = append(ids, appendCmd(t, db, fakeCmd(clk, 1, i+1, "unlock")).ID)
	}
	before := db.Stats()
	fake := &fleettest.Fake{}
	start(t, db, fake, clk, func(o *fleet.Options) { o.MaxPerSession = n })
	got := waitTerminal(t, db, ids...)
	until(t, "session closed", func() bool { st := fake.Stats(); return st.Open == 0 && len(st.Calls) == n })
	for i, id := range ids {
		if en := got[id]; en.State != bonds.StateSucceeded || en.Attempts != 1 {
			t.Errorf("command %d: %s after %d attempts", i, en.State, en.Attempts)
		}
	}
	checkOutbox(t, db, ids...)
	st := fake.Stats()
	for i, c := range st.Calls {
		if bonds.CommandID(c.Signed) != ids[i] {
			t.Errorf("call %d ran %x, want %s (FIFO)", i, c.Signed, ids[i])
		}
	}
	if d := st.Dials[lockID(1)]; d != 1 {
		t.Fatalf("%d dials, want 1 session", d)
	}
	if w := db.Stats().Writes - before.Writes; w != n {
		t.Errorf("%d journal writes for %d commands in one session, want %d", w, n, n)
	}
}

// commitLog records, through bonds' commit seams, the commits that wrote
// each command's journal entry, with the states written.
type commitLog struct {
	mu      sync.Mutex
	commits map[bonds.CommandID][][]bonds.State
}

func (c *commitLog) after(es []bonds.Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	this := map[bonds.CommandID][]bonds.State{}
	var order []bonds.CommandID
	for _, e := range es {
		if _, ok := this[e.ID]; !ok {
			order = append(order, e.ID)
		}
		st := e.State
		if e.Acked() {
			st += "+acked"
		}
		this[e.ID] = append(this[e.ID], st)
	}
	for _, id := range order {
		c.commits[id] = append(c.commits[id], this[id])
	}
}

func (c *commitLog) of(id bonds.CommandID) [][]bonds.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.commits[id])
}

// TestOneCommandSessionTwoCommits (issue 14): the common one-command
// session commits twice before its result can be published: the append
// (received, before the broker's PUBACK) and the outcome, whose one
// transaction goes received → queued → running → succeeded and queues the
// result in the outbox. It was four (append, queued, running, result).
// Counted with bonds' commit seam per command, not timed. A session with
// a retryable failure before its success adds no commit: the attempts are
// written with the outcome.
func TestOneCommandSessionTwoCommits(t *testing.T) {
	e := newRefEnv(t)
	log := &commitLog{commits: map[bonds.CommandID][][]bonds.State{}}
	db, err := bonds.Open(filepath.Join(t.TempDir(), "gatewayd.db"), bonds.Options{Now: e.clk.Now, PruneInterval: -1,
		AfterCommit: log.after})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	e.db = db
	l := e.link.AddLock(t, 1)
	s := start(t, db, e.link, e.clk)
	want := [][]bonds.State{{bonds.StateReceived}, {bonds.StateQueued, bonds.StateRunning, bonds.StateSucceeded}}

	en := e.add(t, l, command.OpUnlock, 1, e.op)
	s.Submit(en)
	got := waitTerminal(t, db, en.ID)[en.ID]
	until(t, "the outcome's commit seen", func() bool { return len(log.of(en.ID)) >= 2 })
	if c := log.of(en.ID); !slices.EqualFunc(c, want, slices.Equal) {
		t.Errorf("commits of a one-command session: %v, want %v", c, want)
	}
	if got.State != bonds.StateSucceeded || got.Attempts != 1 || got.OutboxSeq == 0 {
		t.Errorf("%s after %d attempts, outbox %d", got.State, got.Attempts, got.OutboxSeq)
	}

	// A dropped answer (retryable), then the lock's duplicate_command:
	// still two commits, two attempts.
	l.DropAnswers(1)
	en = e.add(t, l, command.OpLock, 2, e.op)
	s.Submit(en)
	got = waitTerminal(t, db, en.ID)[en.ID]
	until(t, "the outcome's commit seen", func() bool { return len(log.of(en.ID)) >= 2 })
	if c := log.of(en.ID); !slices.EqualFunc(c, want, slices.Equal) {
		t.Errorf("commits with a retry: %v, want %v", c, want)
	}
	if got.State != bonds.StateSucceeded || got.Attempts != 2 {
		t.Errorf("%s after %d attempts", got.State, got.Attempts)
	}
	if err := db.Ack(context.Background(), en.ID); err != nil {
		t.Fatal(err)
	}
	until(t, "the ack's commit seen", func() bool { return len(log.of(en.ID)) >= 3 })
	if c := log.of(en.ID); len(c) != 3 || !slices.Equal(c[2], []bonds.State{bonds.StateSucceeded + "+acked"}) {
		t.Errorf("after the ack: %v", c)
	}
}
