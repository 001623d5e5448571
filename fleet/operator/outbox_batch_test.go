package operator

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/bonds"

	"github.com/gatewayd/gatewayd/fleet/operator/operatortest"
)

// TestOutboxOneWritePerPass: a pass that publishes several results
// removes them from the outbox in one journal write (one commit).
func TestOutboxOneWritePerPass(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	ids := e.journalResults(t, db, 5)
	before := db.Stats()
	o := e.outbox(t, db)
	waitFor(t, "results", func() bool { return len(e.resultsOn(t)) == 5 && o.published.Load() == 5 })
	if got := e.resultIDs(t); !sameIDs(got, ids) {
		t.Fatalf("published %v, want %v", got, ids)
	}
	if n := outboxLen(t, db); n != 0 {
		t.Fatalf("%d results left in the outbox", n)
	}
	st := db.Stats()
	if w, c := st.Writes-before.Writes, st.Commits-before.Commits; w != 1 || c != 1 {
		t.Errorf("one pass of 5 results: %d writes and %d commits, want 1 and 1", w, c)
	}
}

// ackOnlyJournal hides bonds.DB.AckBatch: the Outbox falls back to one
// Ack per result.
type ackOnlyJournal struct{ Journal }

// TestOutboxWithoutAckBatch: a Journal without AckBatch still has every
// published result removed, in order.
func TestOutboxWithoutAckBatch(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	ids := e.journalResults(t, db, 3)
	if _, ok := Journal(ackOnlyJournal{db}).(AckBatcher); ok {
		t.Fatal("ackOnlyJournal is an AckBatcher")
	}
	o := e.outbox(t, ackOnlyJournal{db})
	waitFor(t, "results", func() bool { return o.published.Load() == 3 && outboxLen(t, db) == 0 })
	if got := e.resultIDs(t); !sameIDs(got, ids) {
		t.Fatalf("published %v, want %v", got, ids)
	}
}

// TestOutboxAcksBeforeFailure: when a publication fails, the results the
// broker acknowledged before it in the pass are removed, and are not
// published again.
func TestOutboxAcksBeforeFailure(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	ids := e.journalResults(t, db, 3)
	var n atomic.Int64
	e.pub.OnPublish = func(operatortest.Published) {
		if n.Add(1) == 2 {
			e.pub.Fail(true) // the third fails
		}
	}
	o := e.outbox(t, db)
	waitFor(t, "two removed", func() bool { return o.published.Load() == 2 && o.failures.Load() > 0 })
	ob, err := db.Outbox(t.Context())
	if err != nil || len(ob) != 1 || ob[0].CommandID != ids[2] {
		t.Fatalf("outbox %+v, %v", ob, err)
	}
	e.pub.Fail(false)
	waitFor(t, "third", func() bool { return o.published.Load() == 3 && outboxLen(t, db) == 0 })
	if got := e.resultIDs(t); !sameIDs(got, ids) {
		t.Fatalf("published %v, want %v (each once)", got, ids)
	}
}

// ackHiccupJournal fails its first n AckBatch calls as a whole, as a full
// disk would.
type ackHiccupJournal struct {
	*bonds.DB
	n atomic.Int64
}

func (j *ackHiccupJournal) AckBatch(ctx context.Context, ids []bonds.CommandID) ([]error, error) {
	if j.n.Add(-1) >= 0 {
		return nil, fmt.Errorf("commit: %w", syscall.ENOSPC)
	}
	return j.DB.AckBatch(ctx, ids)
}

// TestOutboxCountsDuplicates: results whose removal from the outbox failed
// after the broker acknowledged them are published again, and each such
// duplicate is counted in gatewayd_outbox_duplicates_total; results
// published once are not.
func TestOutboxCountsDuplicates(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	ids := e.journalResults(t, db, 2)
	j := &ackHiccupJournal{DB: db}
	j.n.Store(1)
	o := e.outbox(t, j)
	waitFor(t, "outbox emptied", func() bool { return outboxLen(t, db) == 0 && o.published.Load() == 2 })
	if got := e.resultIDs(t); !sameIDs(got, append(slices.Clone(ids), ids...)) {
		t.Fatalf("published %v, want %v twice", got, ids)
	}
	if n := counterOf(t, o, "gatewayd_outbox_duplicates_total"); n != 2 {
		t.Errorf("gatewayd_outbox_duplicates_total %v, want 2", n)
	}
	ids2 := e.journalResults(t, db, 1)
	o.Kick()
	waitFor(t, "third", func() bool { return outboxLen(t, db) == 0 && o.published.Load() == 3 })
	if got := e.resultIDs(t); len(got) != 5 || got[4] != ids2[0] {
		t.Fatalf("published %v", got)
	}
	if n := counterOf(t, o, "gatewayd_outbox_duplicates_total"); n != 2 {
		t.Errorf("gatewayd_outbox_duplicates_total %v after a clean publication, want still 2", n)
	}
}

// counterOf is the value of counter name that c collects.
func counterOf(t *testing.T, c prometheus.Collector, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestOutboxRemovalRetriedSoon: a pass that published its results but
// could not remove them (the disk) is tried again within about a second,
// not after the publication backoff (an hour here): results written
// after the disk recovered are published at once.
func TestOutboxRemovalRetriedSoon(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	ids := e.journalResults(t, db, 1)
	j := &ackHiccupJournal{DB: db}
	j.n.Store(3)
	o, err := NewOutbox(OutboxOptions{Journal: j, Publisher: e.pub, Topics: e.topics,
		MinBackoff: time.Hour, MaxBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	waitFor(t, "removed after the disk recovered", func() bool { return outboxLen(t, db) == 0 && o.published.Load() == 1 })
	ids2 := e.journalResults(t, db, 1)
	o.Kick()
	waitFor(t, "the next result", func() bool { return outboxLen(t, db) == 0 && o.published.Load() == 2 })
	if got := e.resultIDs(t); len(got) != 5 || got[0] != ids[0] || got[4] != ids2[0] {
		t.Fatalf("published %v: want the first four times (three failed removals), then the second", got)
	}
}

// TestOutboxRemovalsWaitForAckDelay: the removals of results the broker
// acknowledged are not written at once but after AckDelay (here an hour:
// never during the test), in one write for results of several passes;
// meanwhile no pass publishes them again; Close writes them.
func TestOutboxRemovalsWaitForAckDelay(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	ids := e.journalResults(t, db, 1)
	o, err := NewOutbox(OutboxOptions{Journal: db, Publisher: e.pub, Topics: e.topics, AckDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			o.Close()
		}
	})
	waitFor(t, "the first result", func() bool { return len(e.resultsOn(t)) == 1 })
	ids = append(ids, e.journalResults(t, db, 2)...)
	mid := db.Stats()
	o.Kick()
	waitFor(t, "three results", func() bool { return len(e.resultsOn(t)) == 3 })
	o.Kick() // a pass with nothing new: publishes nothing again
	o.Kick()
	time.Sleep(50 * time.Millisecond)
	if got := e.resultIDs(t); !sameIDs(got, ids) {
		t.Fatalf("published %v, want each of %v once", got, ids)
	}
	if n := outboxLen(t, db); n != 3 {
		t.Fatalf("%d results in the outbox before AckDelay, want the 3 published", n)
	}
	if w := db.Stats().Writes - mid.Writes; w != 0 {
		t.Fatalf("%d writes before AckDelay, want none", w)
	}
	o.Close()
	closed = true
	if n := outboxLen(t, db); n != 0 {
		t.Fatalf("%d results left in the outbox after Close", n)
	}
	if p := o.published.Load(); p != 3 {
		t.Errorf("published %d, want 3", p)
	}
	if w := db.Stats().Writes - mid.Writes; w != 1 {
		t.Errorf("removals of 3 results took %d writes, want 1", w)
	}
}

// TestOutboxRemovalAfterAckDelay: without a Close or another result, the
// removal is written once AckDelay has passed.
func TestOutboxRemovalAfterAckDelay(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	e.journalResults(t, db, 1)
	o, err := NewOutbox(OutboxOptions{Journal: db, Publisher: e.pub, Topics: e.topics, AckDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	waitFor(t, "removed", func() bool { return outboxLen(t, db) == 0 && o.published.Load() == 1 })
	if n := len(e.resultsOn(t)); n != 1 {
		t.Errorf("%d publications, want 1", n)
	}
}
