package operator

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
)

// outbox returns a started Outbox on journal j with millisecond backoffs,
// closed at cleanup.
func (e *env) outbox(t *testing.T, j Journal) *Outbox {
	t.Helper()
	o, err := NewOutbox(OutboxOptions{Journal: j, Publisher: e.pub, Topics: e.topics,
		MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	return o
}

// journalResults appends n commands and finishes them; it returns their
// IDs in outbox order.
func (e *env) journalResults(t *testing.T, db *bonds.DB, n int) []bonds.CommandID {
	t.Helper()
	var ids []bonds.CommandID
	for i := range n {
		b := e.body(command.OpLock, uint64(i+1))
		c := bonds.Command{ID: cidOf(b), LockID: bonds.LockID(e.lockID), Operation: "lock", Operator: "op-olga",
			Payload: e.sign(t, e.operator, b)}
		if _, err := db.Append(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		finish(t, db, c.ID)
		ids = append(ids, c.ID)
	}
	return ids
}

func (e *env) resultIDs(t *testing.T) []bonds.CommandID {
	var ids []bonds.CommandID
	for _, r := range e.resultsOn(t) {
		ids = append(ids, r.CommandID)
	}
	return ids
}

func outboxLen(t *testing.T, db *bonds.DB) int {
	t.Helper()
	ob, err := db.Outbox(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(ob)
}

func sameIDs(a, b []bonds.CommandID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestOutboxPublishesInOrder: results are published oldest first, each
// removed from the outbox once the broker acknowledged it; the message
// carries the journal's fields.
func TestOutboxPublishesInOrder(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	ids := e.journalResults(t, db, 5)
	o := e.outbox(t, db)
	waitFor(t, "results", func() bool { return len(e.resultsOn(t)) == 5 && o.published.Load() == 5 })
	if got := e.resultIDs(t); !sameIDs(got, ids) {
		t.Fatalf("published %v, want %v", got, ids)
	}
	r := e.resultsOn(t)[0]
	if r.LockID != bonds.LockID(e.lockID) || r.Operation != "lock" || r.State != bonds.StateSucceeded ||
		r.Status != "ok" || r.Attempts != 1 || r.ReceivedAt.IsZero() || r.FinishedAt.IsZero() {
		t.Fatalf("result %+v", r)
	}
	if o.published.Load() != 5 || o.pending.Load() != 0 {
		t.Fatalf("published %d pending %d", o.published.Load(), o.pending.Load())
	}
	// A Kick with nothing new publishes nothing again.
	o.Kick()
	e.journalResults(t, db, 1)
	o.Kick()
	waitFor(t, "sixth", func() bool { return len(e.resultsOn(t)) == 6 })
}

// TestOutboxRetriesWithBackoff: failed publications are retried, in order,
// and nothing is lost or skipped.
func TestOutboxRetriesWithBackoff(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	ids := e.journalResults(t, db, 3)
	e.pub.FailNext(4)
	o := e.outbox(t, db)
	waitFor(t, "results", func() bool { return len(e.resultsOn(t)) == 3 && outboxLen(t, db) == 0 })
	if got := e.resultIDs(t); !sameIDs(got, ids) {
		t.Fatalf("published %v, want %v", got, ids)
	}
	if o.failures.Load() != 4 || e.pub.Attempts() != 7 {
		t.Fatalf("failures %d attempts %d", o.failures.Load(), e.pub.Attempts())
	}
}

func TestOutboxBackoffBounds(t *testing.T) {
	o, err := NewOutbox(OutboxOptions{Journal: &failJournal{}, Publisher: newEnv(t).pub, Topics: Topics{Result: "r"},
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for n := range 40 {
		d := o.backoff(n)
		want := min(100*time.Millisecond<<min(n, 10), time.Second)
		if d < want/2 || d > want {
			t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, want/2, want)
		}
	}
}

// TestOutboxRepublishesAfterRestart: results the broker never
// acknowledged are still there after the database is reopened, and a new
// Outbox publishes them.
func TestOutboxRepublishesAfterRestart(t *testing.T) {
	e := newEnv(t)
	path := t.TempDir() + "/gatewayd.db"
	db := openDB(t, path, e.clock.Now)
	ids := e.journalResults(t, db, 3)
	e.pub.Fail(true)
	o := e.outbox(t, db)
	waitFor(t, "attempts", func() bool { return e.pub.Attempts() >= 2 })
	o.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db2 := openDB(t, path, e.clock.Now)
	if n := outboxLen(t, db2); n != 3 {
		t.Fatalf("outbox after restart: %d results", n)
	}
	e.pub.Fail(false)
	e.outbox(t, db2)
	waitFor(t, "results", func() bool { return len(e.resultsOn(t)) == 3 && outboxLen(t, db2) == 0 })
	if got := e.resultIDs(t); !sameIDs(got, ids) {
		t.Fatalf("published %v, want %v", got, ids)
	}
}

// ackFailJournal loses every Ack: a crash between the broker's PUBACK and
// the outbox's removal.
type ackFailJournal struct{ *bonds.DB }

func (ackFailJournal) Ack(context.Context, bonds.CommandID) error { return errors.New("power lost") }

func (ackFailJournal) AckBatch(context.Context, []bonds.CommandID) ([]error, error) {
	return nil, errors.New("power lost")
}

// TestOutboxAtLeastOnce: a result published but not removed (crash
// between PUBACK and Ack) is published again after the restart.
func TestOutboxAtLeastOnce(t *testing.T) {
	e := newEnv(t)
	path := t.TempDir() + "/gatewayd.db"
	db := openDB(t, path, e.clock.Now)
	ids := e.journalResults(t, db, 1)
	o := e.outbox(t, ackFailJournal{db})
	waitFor(t, "first publication", func() bool { return len(e.resultsOn(t)) >= 1 })
	o.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before := len(e.resultsOn(t))
	db2 := openDB(t, path, e.clock.Now)
	e.outbox(t, db2)
	waitFor(t, "republication", func() bool { return outboxLen(t, db2) == 0 })
	rs := e.resultIDs(t)
	if len(rs) != before+1 || rs[len(rs)-1] != ids[0] {
		t.Fatalf("published %v", rs)
	}
}

// TestExactlyOneResultPerCommand: through the intake and the outbox, with
// replays of every kind, each command ID gets one result.
func TestExactlyOneResultPerCommand(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	o := e.outbox(t, db)
	in := e.intake(t, db, func(io *IntakeOptions) { io.OnResult = o.Kick })
	ok, expired := e.body(command.OpUnlock, 1), e.body(command.OpLock, 2)
	expired.NotAfter = e.clock.Now().Add(-time.Second)
	pOK, pExp := e.sign(t, e.operator, ok), e.sign(t, e.operator, expired)
	for range 3 {
		in.Enqueue(e.msg("ok", pOK))
		in.Enqueue(e.msg("exp", pExp))
	}
	waitFor(t, "acks", func() bool { return len(e.events.all()) == 6 })
	finish(t, db, cidOf(ok))
	o.Kick()
	waitFor(t, "results", func() bool { return outboxLen(t, db) == 0 && len(e.resultsOn(t)) == 2 })
	in.Enqueue(e.msg("ok", pOK))
	waitFor(t, "ack", func() bool { return len(e.events.all()) == 7 })
	waitFor(t, "duplicate notices", func() bool { return len(e.pub.Messages(e.topics.Rejected)) == 5 })
	o.Kick()
	count := map[bonds.CommandID]int{}
	for _, r := range e.resultsOn(t) {
		count[r.CommandID]++
		want := map[bonds.CommandID]bonds.State{cidOf(ok): bonds.StateSucceeded, cidOf(expired): bonds.StateExpired}[r.CommandID]
		if r.State != want {
			t.Fatalf("result %+v, want state %s", r, want)
		}
	}
	if len(count) != 2 || count[cidOf(ok)] != 1 || count[cidOf(expired)] != 1 {
		t.Fatalf("results per command %v", count)
	}
	for _, n := range e.notices(t) {
		if n.Reason != ReasonDuplicate {
			t.Fatalf("notice %+v", n)
		}
	}
}

func TestResultMessageLockData(t *testing.T) {
	clock := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	base := command.Result{RequestID: 1, Status: command.StatusOK, LockState: command.StateLocked, Battery: 0,
		Firmware: "1.2.3", Clock: clock}
	enc := func(op command.Op, r command.Result) []byte {
		b, err := command.MarshalResult(op, &r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	status := base
	var err error
	if status.Data, err = command.EncodeLockStatus(command.LockStatus{Failures: 2, Users: 1, Slots: 16}); err != nil {
		t.Fatal(err)
	}
	users := base
	if users.Data, err = command.EncodeUsers(nil); err != nil {
		t.Fatal(err)
	}
	bond := base
	if bond.Data, err = command.EncodeBondWindow(command.BondWindow{Passkey: 123456, WindowSeconds: 30, Peer: "DC:A6:32:01:02:03"}); err != nil {
		t.Fatal(err)
	}

	m, err := NewResultMessage(bonds.Result{Operation: "status", State: bonds.StateSucceeded, Payload: enc(command.OpStatus, status)}, time.Time{})
	if err != nil || m.LockStatus == nil || m.LockStatus.Failures != 2 || m.LockStatus.Slots != 16 ||
		m.Battery == nil || *m.Battery != 0 || m.Firmware != "1.2.3" || m.LockState != "locked" ||
		m.Status != "ok" || len(m.LockResult) == 0 || !m.LockClock.Equal(clock) {
		t.Fatalf("status: %+v, %v", m, err)
	}
	m, err = NewResultMessage(bonds.Result{Operation: "list-users", Payload: enc(command.OpListUsers, users)}, time.Time{})
	if err != nil || m.Users == nil || len(m.Users) != 0 || !strings.Contains(string(mustJSON(m)), `"users":[]`) {
		t.Fatalf("list-users: %+v, %v", m, err)
	}
	m, err = NewResultMessage(bonds.Result{Operation: "allow-bond", Payload: enc(command.OpAllowBond, bond)}, time.Time{})
	if err != nil || m.LockResult != nil || strings.Contains(string(mustJSON(m)), "123456") {
		t.Fatalf("allow-bond leaks its passkey: %s, %v", mustJSON(m), err)
	}
	m, err = NewResultMessage(bonds.Result{Operation: "status", Status: "jammed", Detail: "d", Payload: []byte{0xff}}, time.Time{})
	if err == nil || m.Status != "jammed" || m.Battery != nil {
		t.Fatalf("bad payload: %+v, %v", m, err)
	}
}

// TestCloseWaitsGoroutinesFlat: after Close, no goroutine of the intake
// or the outbox is left.
func TestCloseWaitsGoroutinesFlat(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	if n := ours(); n != 0 {
		t.Fatalf("%d goroutines of this package before the test", n)
	}
	for range 3 {
		o, err := NewOutbox(OutboxOptions{Journal: db, Publisher: e.pub, Topics: e.topics})
		if err != nil {
			t.Fatal(err)
		}
		in, err := NewIntake(IntakeOptions{Journal: db, Publisher: e.pub, Topics: e.topics, Roots: e.fleet.Roots,
			Now: e.clock.Now, OnResult: o.Kick})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := o.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := in.Start(ctx); err != nil {
			t.Fatal(err)
		}
		in.Enqueue(e.msg("x", []byte("junk")))
		in.Enqueue(e.msg("y", e.sign(t, e.operator, e.body(command.OpUnlock, 1))))
		cancel() // the context ends them too; Close waits
		in.Close()
		o.Close()
		in.Close() // idempotent
	}
	// Close waited for them (a goroutine may still be returning from its
	// deferred wg.Done; give it the time to).
	deadline := time.Now().Add(10 * time.Second)
	for ours() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := ours(); n != 0 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines of this package left after Close:\n%s", n, buf[:runtime.Stack(buf, true)])
	}
}

// ours counts the goroutines running code of Intake or Outbox (the
// database's own goroutines come and go on their own).
func ours() int {
	buf := make([]byte, 1<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "operator.(*Intake)") || strings.Contains(g, "operator.(*Outbox)") {
			n++
		}
	}
	return n
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	o := e.outbox(t, db)
	in := e.intake(t, db, func(io *IntakeOptions) { io.Concurrency = 1; io.OnResult = o.Kick })
	p := e.sign(t, e.operator, e.body(command.OpUnlock, 1))
	in.Enqueue(e.msg("a", p))
	in.Enqueue(e.msg("b", p))
	in.Enqueue(e.msg("c", []byte{0x01}))
	waitFor(t, "acks", func() bool { return len(e.events.all()) == 3 })
	waitFor(t, "notices", func() bool { return len(e.pub.Messages(e.topics.Rejected)) == 2 })
	for name, c := range map[string]prometheus.Collector{"intake": in, "outbox": o} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil || len(problems) != 0 {
			t.Fatalf("%s lint: %v %+v", name, err, problems)
		}
	}
	const want = `
# HELP gatewayd_intake_commands_total Messages of the command topic decided, by outcome: journaled (new command ID, durable), duplicate (command ID already journaled), rejected (refused before the journal, with a notice).
# TYPE gatewayd_intake_commands_total counter
gatewayd_intake_commands_total{outcome="duplicate"} 1
gatewayd_intake_commands_total{outcome="journaled"} 1
gatewayd_intake_commands_total{outcome="rejected"} 1
# HELP gatewayd_intake_queue_depth Messages of the command topic received and not yet released (acknowledged or left for redelivery).
# TYPE gatewayd_intake_queue_depth gauge
gatewayd_intake_queue_depth 0
`
	if err := testutil.CollectAndCompare(in, strings.NewReader(want), "gatewayd_intake_commands_total", "gatewayd_intake_queue_depth"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(in, "gatewayd_intake_rejected_total"); n != len(reasons) {
		t.Fatalf("%d rejected series", n)
	}
	finish(t, db, cidFromPayload(t, p))
	o.Kick()
	waitFor(t, "published", func() bool { return o.published.Load() == 1 })
	const wantOut = `
# HELP gatewayd_outbox_published_total Results published on the result topic and acknowledged by the broker (republications after a restart included).
# TYPE gatewayd_outbox_published_total counter
gatewayd_outbox_published_total 1
# HELP gatewayd_outbox_pending Results in the outbox not yet acknowledged by the broker, as of the last pass.
# TYPE gatewayd_outbox_pending gauge
gatewayd_outbox_pending 0
`
	if err := testutil.CollectAndCompare(o, strings.NewReader(wantOut), "gatewayd_outbox_published_total", "gatewayd_outbox_pending"); err != nil {
		t.Fatal(err)
	}
}

func cidFromPayload(t *testing.T, p []byte) bonds.CommandID {
	t.Helper()
	b, err := command.Peek(p)
	if err != nil {
		t.Fatal(err)
	}
	return cidOf(b)
}

func TestTopics(t *testing.T) {
	tp, err := NewTopics("", "gw-dock-7")
	if err != nil {
		t.Fatal(err)
	}
	if tp.Cmd != "gatewayd/v1/gw/gw-dock-7/cmd" || tp.Result != "gatewayd/v1/gw/gw-dock-7/result" ||
		tp.Rejected != "gatewayd/v1/gw/gw-dock-7/rejected" || tp.Status != "gatewayd/v1/gw/gw-dock-7/status" {
		t.Fatalf("topics %+v", tp)
	}
	if _, err := NewTopics("fleet/acme", "A.b_c-9"); err != nil {
		t.Fatal(err)
	}
	bad := [][2]string{
		{"", ""}, {"", strings.Repeat("g", 65)}, {"", "gw/7"}, {"", "gw+"}, {"", "gw#"}, {"", "gw 7"}, {"", "gwé"},
		{"$SYS", "gw"}, {"a//b", "gw"}, {"a/", "gw"}, {"/a", "gw"}, {"a/+", "gw"}, {"a/#", "gw"}, {"a\x00", "gw"},
		{strings.Repeat("p", 129), "gw"},
	}
	for _, c := range bad {
		if _, err := NewTopics(c[0], c[1]); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("NewTopics(%q, %q) = %v, want ErrInvalidTopic", c[0], c[1], err)
		}
	}
}
