package operator

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
	"github.com/gatewayd/gatewayd/firmware/lock/flash"
	"github.com/gatewayd/gatewayd/fleet/operator/operatortest"
)

// *bonds.DB is the audit journal the daemon passes.
var _ AuditJournal = (*bonds.DB)(nil)

// auditLog returns a lock's log with n entries (command_ok of unlock for
// the even ones, time_set for the odd ones).
func auditLog(t *testing.T, lockID [8]byte, n int) []audit.Entry {
	t.Helper()
	l, err := audit.Open(flash.NewMem(), audit.Options{LockID: lockID[:], Now: func() time.Time { return time.Unix(1_800_000_000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		e := audit.Entry{Time: uint64(1_800_000_000 + i), Event: audit.EventTimeSet}
		if i%2 == 0 {
			e = audit.Entry{Time: uint64(1_800_000_000 + i), Event: audit.EventCommandOK, Op: uint8(command.OpUnlock),
				Actor: []byte{1, 2, 3, 4, 5, 6, 7, 8}, CommandID: make([]byte, 16)}
		}
		if _, err := l.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	var out []audit.Entry
	for len(out) < n {
		p, err := l.Page(uint64(len(out)), audit.MaxPageEntries)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Entries...)
	}
	return out
}

// queue puts entries [from, to) of es in the database as the scheduler
// does, the first with a loss record before it if missed > 0.
func queue(t *testing.T, db *bonds.DB, lock bonds.LockID, es []audit.Entry, from, to int, missed uint64) {
	t.Helper()
	c, err := db.AuditCursor(context.Background(), lock)
	if err != nil {
		c = bonds.AuditCursor{}
	}
	var recs []bonds.AuditRecord
	if missed > 0 {
		recs = append(recs, bonds.AuditRecord{Seq: uint64(from) - missed, Missed: missed, ReadAt: time.Unix(1_800_000_100, 0)})
	}
	for _, e := range es[from:to] {
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, bonds.AuditRecord{Seq: e.Seq, Entry: b, ReadAt: time.Unix(1_800_000_100, 0)})
	}
	if _, err := db.AdvanceAudit(context.Background(), lock, bonds.AuditAdvance{FromSeq: c.Seq, FromHead: c.Head,
		Seq: uint64(to), Head: es[to-1].Hash(), Records: recs}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) auditPublisher(t *testing.T, db *bonds.DB) *AuditPublisher {
	t.Helper()
	a, err := NewAuditPublisher(AuditOptions{Journal: db, Publisher: e.pub, Topics: e.topics,
		MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func (e *env) auditMessages(t *testing.T) []AuditMessage {
	t.Helper()
	var out []AuditMessage
	for _, m := range e.pub.Messages(e.topics.Events) {
		if m.Retain {
			t.Errorf("audit message retained")
		}
		var am AuditMessage
		if err := json.Unmarshal(m.Payload, &am); err != nil {
			t.Fatalf("audit message %s: %v", m.Payload, err)
		}
		out = append(out, am)
	}
	return out
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkChain asserts that ms are the entries first.. of es, in order,
// each exactly once, with the fields and hashes of the entry.
func checkChain(t *testing.T, ms []AuditMessage, es []audit.Entry, first int) {
	t.Helper()
	for i, m := range ms {
		want := es[first+i]
		if m.Type != EventAuditEntry || m.Seq != want.Seq {
			t.Fatalf("message %d: %s seq %d, want audit_entry seq %d", i, m.Type, m.Seq, want.Seq)
		}
		got, err := audit.DecodeEntry(m.Entry)
		if err != nil || got.Hash() == nil || string(got.Hash()) != string(want.Hash()) {
			t.Errorf("message %d: entry %x does not hash as entry %d (%v)", i, m.Entry, want.Seq, err)
		}
		if m.Event != want.Event.String() || m.Time.Unix() != int64(want.Time) || m.Status == nil || *m.Status != want.Status {
			t.Errorf("message %d: event %q time %v status %v; want %v %d %d", i, m.Event, m.Time, m.Status, want.Event, want.Time, want.Status)
		}
		if want.Event == audit.EventCommandOK && (m.Op != "unlock" || m.StatusName != "ok" || m.Actor != "0102030405060708" || len(m.CommandID) != 32) {
			t.Errorf("message %d: op %q status_name %q actor %q command_id %q", i, m.Op, m.StatusName, m.Actor, m.CommandID)
		}
		if i > 0 && m.PrevHash != ms[i-1].Hash {
			t.Errorf("message %d: prev_hash %s is not message %d's hash %s", i, m.PrevHash, i-1, ms[i-1].Hash)
		}
	}
}

// TestAuditPublisher: the pending records are published on the events
// topic, in order, once each, and removed once the broker acknowledged
// them; a loss is published as audit_missed in its place.
func TestAuditPublisher(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, filepath.Join(t.TempDir(), "g.db"), e.clock.Now)
	lock := bonds.LockID(e.lockID)
	if err := db.PutLock(context.Background(), bonds.Lock{ID: lock}); err != nil {
		t.Fatal(err)
	}
	es := auditLog(t, e.lockID, 100)
	queue(t, db, lock, es, 0, 40, 0)
	a := e.auditPublisher(t, db)
	if problems, err := testutil.CollectAndLint(a); err != nil || len(problems) > 0 {
		t.Fatalf("metric lint: %v %v", problems, err)
	}
	waitUntil(t, "40 records published", func() bool { return len(e.pub.Messages(e.topics.Events)) >= 40 })
	queue(t, db, lock, es, 45, 100, 5) // 40..44 overwritten before they were read
	a.Kick()
	waitUntil(t, "96 messages", func() bool { return len(e.pub.Messages(e.topics.Events)) >= 96 })
	waitUntil(t, "the records removed", func() bool {
		items, err := db.AuditOutbox(context.Background(), 10)
		return err == nil && len(items) == 0
	})
	ms := e.auditMessages(t)
	if len(ms) != 96 {
		t.Fatalf("%d messages, want 96", len(ms))
	}
	checkChain(t, ms[:40], es, 0)
	if m := ms[40]; m.Type != EventAuditMissed || m.Seq != 40 || m.Missed != 5 || m.LockID != lock.String() || m.GatewayID != "gw-dock-7" {
		t.Errorf("loss message = %+v", m)
	}
	checkChain(t, ms[41:], es, 45)
	if got := a.published.Load(); got != 96 {
		t.Errorf("published_total = %d, want 96", got)
	}
}

// TestAuditPublisherRetriesAndRestarts: failed publications are retried in
// order; a publisher stopped with records pending (a restart) leaves them
// to the next, which publishes them: nothing lost, nothing acknowledged
// published twice.
func TestAuditPublisherRetriesAndRestarts(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "g.db")
	db := openDB(t, path, e.clock.Now)
	lock := bonds.LockID(e.lockID)
	if err := db.PutLock(context.Background(), bonds.Lock{ID: lock}); err != nil {
		t.Fatal(err)
	}
	es := auditLog(t, e.lockID, 30)
	queue(t, db, lock, es, 0, 30, 0)

	e.pub.FailNext(3)
	n := 0
	e.pub.OnPublish = func(operatortest.Published) {
		if n++; n == 10 {
			e.pub.Block() // the 11th waits: the gateway stops meanwhile
		}
	}
	a, err := NewAuditPublisher(AuditOptions{Journal: db, Publisher: e.pub, Topics: e.topics,
		MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "10 published and the 11th blocked", func() bool { return e.pub.Attempts() >= 3+11 })
	a.Close()
	e.pub.Unblock()
	if items, _ := db.AuditOutbox(context.Background(), 100); len(items) != 20 {
		t.Fatalf("after the stop, %d records pending, want 20 (the 10 acknowledged removed)", len(items))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, path, e.clock.Now)
	e.auditPublisher(t, db)
	waitUntil(t, "30 published", func() bool { return len(e.pub.Messages(e.topics.Events)) >= 30 })
	waitUntil(t, "the records removed", func() bool {
		items, err := db.AuditOutbox(context.Background(), 10)
		return err == nil && len(items) == 0
	})
	ms := e.auditMessages(t)
	if len(ms) != 30 {
		t.Fatalf("%d messages, want 30", len(ms))
	}
	checkChain(t, ms, es, 0)
}
