package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet"
	"github.com/gatewayd/gatewayd/fleet/fleettest"
)

// refEnv is a journal, a fleet and a RefLink hosting reference locks.
type refEnv struct {
	clk   *clock
	db    *bonds.DB
	fleet *channeltest.Fleet
	link  *fleettest.RefLink
	op    channeltest.Party
}

func newRefEnv(t *testing.T) *refEnv {
	f := channeltest.NewFleet(t, "acme")
	clk := newClock()
	clk.t = f.Now
	e := &refEnv{clk: clk, db: openDB(t, clk), fleet: f, link: fleettest.NewRefLink(t, f),
		op: f.Operator(t, "otto", cred.RoleOperator)}
	t.Cleanup(e.link.Close)
	return e
}

// add journals a signed command for l.
func (e *refEnv) add(t *testing.T, l *fleettest.RefLock, op command.Op, n uint64, signer channeltest.Party) bonds.Entry {
	t.Helper()
	e.clk.Add(time.Second) // distinct receive times
	c := e.link.Command(t, l, signer, op, cmdID(uint64(l.ID[7]), n))
	return appendCmd(t, e.db, c)
}

func TestRefLinkHappyPath(t *testing.T) {
	e := newRefEnv(t)
	l1, l2 := e.link.AddLock(t, 1), e.link.AddLock(t, 2)
	var results atomic.Int64
	s := start(t, e.db, e.link, e.clk, func(o *fleet.Options) { o.OnResult = func() { results.Add(1) } })
	if problems, err := testutil.CollectAndLint(s); err != nil || len(problems) > 0 {
		t.Fatalf("metric lint: %v %v", problems, err)
	}
	var ids []bonds.CommandID
	for i, op := range []command.Op{command.OpUnlock, command.OpLock} {
		en := e.add(t, l1, op, uint64(i+1), e.op)
		s.Submit(en)
		ids = append(ids, en.ID)
	}
	en := e.add(t, l2, command.OpUnlock, 1, e.op)
	s.Submit(en)
	ids = append(ids, en.ID)
	// status: unsigned, the gateway's own credential allows it.
	e.clk.Add(time.Second)
	st := appendCmd(t, e.db, bonds.Command{ID: cmdID(1, 99), LockID: l1.ID, Operator: "otto", Operation: "status"})
	s.Submit(st)
	ids = append(ids, st.ID)

	got := waitTerminal(t, e.db, ids...)
	for _, id := range ids {
		en := got[id]
		if en.State != bonds.StateSucceeded || en.Result.Status != "ok" || en.Attempts != 1 {
			t.Errorf("%s %s: %s status %q attempts %d (%s)", en.Operation, id, en.State, en.Result.Status, en.Attempts, en.Result.Detail)
		}
		if len(en.Result.Payload) == 0 {
			t.Errorf("%s: no payload", id)
		}
	}
	r, err := command.ParseResult(command.OpStatus, got[st.ID].Result.Payload)
	if err != nil {
		t.Fatalf("status payload: %v", err)
	}
	if ls, err := r.LockStatus(); err != nil || ls.Slots == 0 {
		t.Errorf("lock status %+v %v", ls, err)
	}
	if r.LockState != command.StateLocked {
		t.Errorf("lock 1 reports %s after unlock, lock", r.LockState)
	}
	if l1.Actuator.Moves() != 2 || l2.Actuator.Moves() != 1 || l2.Actuator.State() != command.StateUnlocked {
		t.Errorf("moves %d, %d; lock 2 %s", l1.Actuator.Moves(), l2.Actuator.Moves(), l2.Actuator.State())
	}
	checkOutbox(t, e.db, ids...)
	until(t, "OnResult for each", func() bool { return results.Load() == int64(len(ids)) })
	if l1.MaxSessions() != 1 || l2.MaxSessions() != 1 {
		t.Errorf("max sessions per lock: %d, %d", l1.MaxSessions(), l2.MaxSessions())
	}
	until(t, "sessions closed", func() bool { return value(t, s, "sessions_active") == 0 })
	want := `
# HELP gatewayd_fleet_attempts_total Attempts to run a command (entries into running).
# TYPE gatewayd_fleet_attempts_total counter
gatewayd_fleet_attempts_total 4
# HELP gatewayd_fleet_commands_queued Commands waiting for their lock (received or queued, not running).
# TYPE gatewayd_fleet_commands_queued gauge
gatewayd_fleet_commands_queued 0
`
	for _, st := range []string{"succeeded", "failed", "expired", "rejected"} {
		want := 0.0
		if st == "succeeded" {
			want = 4
		}
		if got := sumOf(t, s, "results_total", "state", st); got != want {
			t.Errorf("results_total{state=%q} summed over operations: %v, want %v", st, got, want)
		}
	}
	if got := testutil.CollectAndCount(s, "gatewayd_fleet_results_total"); got < 24 {
		t.Errorf("results_total has %d series, want at least the 6 operators' operations × 4 states from the start", got)
	}
	if err := testutil.CollectAndCompare(s, strings.NewReader(want),
		"gatewayd_fleet_attempts_total", "gatewayd_fleet_commands_queued"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(s, "gatewayd_fleet_command_duration_seconds"); n != 1 {
		t.Errorf("duration histogram: %d series", n)
	}
	if problems, err := testutil.CollectAndLint(s); err != nil || len(problems) > 0 {
		t.Fatalf("metric lint: %v %v", problems, err)
	}
}

// value returns the value of metric gatewayd_fleet_<name> with the label
// pairs kv.
func value(t *testing.T, s *fleet.Scheduler, name string, kv ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "gatewayd_fleet_"+name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(kv); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == kv[i] && lp.GetValue() == kv[i+1])
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s %v", name, kv)
	return 0
}

func TestFIFOAndLimits(t *testing.T) {
	clk := newClock()
	db := openDB(t, clk)
	fake := &fleettest.Fake{DialDelay: 2 * time.Millisecond, HandshakeDelay: 3 * time.Millisecond, DoDelay: time.Millisecond}
	s := start(t, db, fake, clk, func(o *fleet.Options) { o.MaxSessions = 3; o.MaxPerSession = 2 })
	const locks, per = 8, 5
	var ids []bonds.CommandID
	order := map[bonds.LockID][]bonds.CommandID{}
	for n := range uint64(per) {
		for l := range uint64(locks) {
			clk.Add(time.Millisecond)
			en := appendCmd(t, db, fakeCmd(clk, l+1, n+1, "unlock"))
			s.Submit(en)
			ids = append(ids, en.ID)
			order[en.LockID] = append(order[en.LockID], en.ID)
		}
	}
	got := waitTerminal(t, db, ids...)
	for id, en := range got {
		if en.State != bonds.StateSucceeded || en.Attempts != 1 {
			t.Errorf("%s: %s after %d attempts", id, en.State, en.Attempts)
		}
	}
	checkOutbox(t, db, ids...)
	st := fake.Stats()
	calls := map[bonds.LockID][]bonds.CommandID{}
	for _, c := range st.Calls {
		calls[c.Lock] = append(calls[c.Lock], bonds.CommandID(c.Signed))
	}
	for l, want := range order {
		if fmt.Sprint(calls[l]) != fmt.Sprint(want) {
			t.Errorf("lock %s ran %v, want %v (FIFO)", l, calls[l], want)
		}
	}
	if st.MaxDialing != 1 {
		t.Errorf("%d dials at once, want 1", st.MaxDialing)
	}
	if st.MaxOpen > 3 || st.MaxOpenPerLock != 1 || st.ConcurrentSame != 0 {
		t.Errorf("sessions: %d at once (max 3), %d per lock (want 1), %d commands run concurrently with themselves",
			st.MaxOpen, st.MaxOpenPerLock, st.ConcurrentSame)
	}
	for l := range order {
		// MaxPerSession 2: 5 commands need at least 3 sessions.
		if st.Dials[l] < 3 || st.Requests[l] != per {
			t.Errorf("lock %s: %d dials, %d requests", l, st.Dials[l], st.Requests[l])
		}
	}
	until(t, "sessions closed", func() bool { return fake.Stats().Open == 0 })
}

func TestRetryableUntilSuccess(t *testing.T) {
	clk := newClock()
	db := openDB(t, clk)
	fake := &fleettest.Fake{
		DialErr: func(_ bonds.LockID, n int) error {
			if n <= 3 {
				return &fleettest.RetryableError{Msg: "le-connection-abort-by-local"}
			}
			return nil
		},
		// The second request's session drops: its outcome is unknown.
		DoErr: func(_ bonds.LockID, n int, _ []byte) error {
			if n == 2 {
				return &fleettest.RetryableError{Msg: "disconnected"}
			}
			return nil
		},
	}
	s := start(t, db, fake, clk)
	var ids []bonds.CommandID
	for n := range uint64(3) {
		clk.Add(time.Millisecond)
		en := appendCmd(t, db, fakeCmd(clk, 1, n+1, "unlock"))
		ids = append(ids, en.ID)
		s.Submit(en)
	}
	got := waitTerminal(t, db, ids...)
	wantAttempts := []int{4, 2, 1}
	for i, id := range ids {
		en := got[id]
		if en.State != bonds.StateSucceeded || en.Attempts != wantAttempts[i] {
			t.Errorf("command %d: %s after %d attempts, want succeeded after %d", i, en.State, en.Attempts, wantAttempts[i])
		}
	}
	var ran []bonds.CommandID
	for _, c := range fake.Stats().Calls {
		ran = append(ran, bonds.CommandID(c.Signed))
	}
	if fmt.Sprint(ran) != fmt.Sprint(ids) {
		t.Errorf("ran %v, want %v", ran, ids)
	}
	checkOutbox(t, db, ids...)
	if v := value(t, s, "link_errors_total", "retryable", "true"); v != 4 {
		t.Errorf("retryable link errors: %v, want 4", v)
	}
}

func TestRetryableUntilExpired(t *testing.T) {
	clk := newClock()
	db := openDB(t, clk)
	fake := &fleettest.Fake{DialErr: func(bonds.LockID, int) error {
		clk.Add(10 * time.Minute) // each failed connect takes "10 minutes"
		return fleet.ErrLockAway
	}}
	c := fakeCmd(clk, 1, 1, "unlock")
	c.NotAfter = clk.Now().Add(35 * time.Minute)
	en := appendCmd(t, db, c)
	s := start(t, db, fake, clk)
	s.Submit(en)
	got := waitTerminal(t, db, en.ID)[en.ID]
	if got.State != bonds.StateExpired || got.Result.Status != "expired" || got.Attempts != 4 ||
		!strings.Contains(got.Result.Detail, "4 attempts") || !strings.Contains(got.Result.Detail, "not in range") {
		t.Errorf("%s, status %q, %d attempts, detail %q", got.State, got.Result.Status, got.Attempts, got.Result.Detail)
	}
	checkOutbox(t, db, en.ID)
	if n := fake.Stats().Dials[c.LockID]; n != 4 {
		t.Errorf("%d dials, want 4", n)
	}
}

func TestNonRetryableFails(t *testing.T) {
	clk := newClock()
	db := openDB(t, clk)
	fake := &fleettest.Fake{DialErr: func(bonds.LockID, int) error { return fmt.Errorf("not bonded: %w", fleettest.ErrFatal) }}
	en := appendCmd(t, db, fakeCmd(clk, 1, 1, "lock"))
	s := start(t, db, fake, clk)
	s.Submit(en)
	got := waitTerminal(t, db, en.ID)[en.ID]
	if got.State != bonds.StateFailed || got.Result.Status != fleet.StatusLinkError || got.Attempts != 1 ||
		!strings.Contains(got.Result.Detail, "not bonded") {
		t.Errorf("%s, status %q, %d attempts, detail %q", got.State, got.Result.Status, got.Attempts, got.Result.Detail)
	}
	checkOutbox(t, db, en.ID)
	if v := value(t, s, "link_errors_total", "retryable", "false"); v != 1 {
		t.Errorf("non-retryable link errors: %v", v)
	}
}

// TestLostAnswer: the lock executes an unlock, and the link drops before
// its result reaches the gateway. The retry gets duplicate_command with
// the original status, ok; the bolt moved once.
func TestLostAnswer(t *testing.T) {
	e := newRefEnv(t)
	l := e.link.AddLock(t, 1)
	l.DropAnswers(1)
	s := start(t, e.db, e.link, e.clk)
	en := e.add(t, l, command.OpUnlock, 1, e.op)
	s.Submit(en)
	got := waitTerminal(t, e.db, en.ID)[en.ID]
	if got.State != bonds.StateSucceeded || got.Result.Status != "ok" || got.Attempts != 2 ||
		!strings.Contains(got.Result.Detail, "duplicate_command") {
		t.Errorf("%s, status %q, %d attempts, detail %q", got.State, got.Result.Status, got.Attempts, got.Result.Detail)
	}
	r, err := command.ParseResult(command.OpUnlock, got.Result.Payload)
	if err != nil || r.Status != command.StatusDuplicateCommand {
		t.Errorf("payload: %v %v", r, err)
	}
	if l.Actuator.Moves() != 1 || l.Actuator.State() != command.StateUnlocked {
		t.Errorf("bolt moved %d times, %s", l.Actuator.Moves(), l.Actuator.State())
	}
	checkOutbox(t, e.db, en.ID)
}

// TestRestart: a gateway lost power with commands received, queued and
// running, one of which the lock had already executed. A new scheduler
// resumes them all: each reaches one terminal state, one outbox result,
// and each bolt move happens once.
func TestRestart(t *testing.T) {
	e := newRefEnv(t)
	l1, l2 := e.link.AddLock(t, 1), e.link.AddLock(t, 2)
	ctx := context.Background()
	a := e.add(t, l1, command.OpUnlock, 1, e.op) // executed by the lock, then the power went
	b := e.add(t, l1, command.OpLock, 2, e.op)   // running, never reached the lock
	c := e.add(t, l1, command.OpUnlock, 3, e.op) // queued
	d := e.add(t, l1, command.OpLock, 4, e.op)   // received
	x := e.add(t, l2, command.OpUnlock, 1, e.op) // received, another lock
	for _, id := range []bonds.CommandID{a.ID, b.ID, c.ID} {
		if _, err := e.db.Transition(ctx, id, bonds.StateQueued, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []bonds.CommandID{a.ID, b.ID} {
		if _, err := e.db.Transition(ctx, id, bonds.StateRunning, nil); err != nil {
			t.Fatal(err)
		}
	}
	sess, err := e.link.Dial(ctx, l1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := sess.Do(ctx, command.OpUnlock, a.Payload); err != nil || r.Status != command.StatusOK {
		t.Fatalf("first run of a: %v %v", r, err)
	}
	_ = sess.Close()

	start(t, e.db, e.link, e.clk)
	ids := []bonds.CommandID{a.ID, b.ID, c.ID, d.ID, x.ID}
	got := waitTerminal(t, e.db, ids...)
	for _, id := range ids {
		en := got[id]
		if en.State != bonds.StateSucceeded || en.Result.Status != "ok" {
			t.Errorf("%s %s: %s %q (%s)", en.Operation, id, en.State, en.Result.Status, en.Result.Detail)
		}
	}
	if !strings.Contains(got[a.ID].Result.Detail, "duplicate_command") || got[a.ID].Attempts != 2 || got[b.ID].Attempts != 2 {
		t.Errorf("a: %q after %d attempts; b: %d attempts", got[a.ID].Result.Detail, got[a.ID].Attempts, got[b.ID].Attempts)
	}
	if l1.Actuator.Moves() != 4 || l1.Actuator.State() != command.StateLocked || l2.Actuator.Moves() != 1 {
		t.Errorf("moves %d (%s), %d", l1.Actuator.Moves(), l1.Actuator.State(), l2.Actuator.Moves())
	}
	checkOutbox(t, e.db, ids...)
	if p, err := e.db.Pending(ctx); err != nil || len(p) != 0 {
		t.Errorf("pending after the run: %d %v", len(p), err)
	}
}

func TestAlreadyExpired(t *testing.T) {
	clk := newClock()
	db := openDB(t, clk)
	fake := &fleettest.Fake{}
	c := fakeCmd(clk, 1, 1, "unlock")
	c.NotAfter = clk.Now().Add(time.Minute)
	en := appendCmd(t, db, c)
	clk.Add(2 * time.Minute)
	s := start(t, db, fake, clk)
	s.Submit(en)
	got := waitTerminal(t, db, en.ID)[en.ID]
	if got.State != bonds.StateExpired || got.Result.Status != "expired" || got.Attempts != 0 {
		t.Errorf("%s %q after %d attempts", got.State, got.Result.Status, got.Attempts)
	}
	if n := len(fake.Stats().Dials); n != 0 {
		t.Errorf("dialled %d locks for an expired command", n)
	}
	checkOutbox(t, db, en.ID)
}

func TestUnknownOperationRejected(t *testing.T) {
	clk := newClock()
	db := openDB(t, clk)
	fake := &fleettest.Fake{}
	en := appendCmd(t, db, fakeCmd(clk, 1, 1, "self-destruct"))
	s := start(t, db, fake, clk)
	s.Submit(en)
	got := waitTerminal(t, db, en.ID)[en.ID]
	if got.State != bonds.StateRejected || got.Result.Status != "unknown_op" || len(fake.Stats().Dials) != 0 {
		t.Errorf("%s %q %q", got.State, got.Result.Status, got.Result.Detail)
	}
	checkOutbox(t, db, en.ID)
}

// TestLockRefuses: the lock's refusals are failures with its status name.
func TestLockRefuses(t *testing.T) {
	e := newRefEnv(t)
	l1, l2 := e.link.AddLock(t, 1), e.link.AddLock(t, 2)
	other := channeltest.NewFleet(t, "evil").Operator(t, "mallory", cred.RoleOperator)
	s := start(t, e.db, e.link, e.clk)
	bad := e.add(t, l1, command.OpUnlock, 1, other) // signed by a stranger to the fleet
	s.Submit(bad)
	// Signed for lock 2, journaled (and sent) to lock 1.
	e.clk.Add(time.Second)
	c := e.link.Command(t, l2, e.op, command.OpUnlock, cmdID(1, 2))
	c.LockID = l1.ID
	wrong := appendCmd(t, e.db, c)
	s.Submit(wrong)
	got := waitTerminal(t, e.db, bad.ID, wrong.ID)
	for id, want := range map[bonds.CommandID]string{bad.ID: "signer_rejected", wrong.ID: "wrong_lock"} {
		if en := got[id]; en.State != bonds.StateFailed || en.Result.Status != want || en.Attempts != 1 {
			t.Errorf("%s: %s %q after %d attempts, want failed %q", id, en.State, en.Result.Status, en.Attempts, want)
		}
	}
	if l1.Actuator.Moves() != 0 {
		t.Errorf("bolt moved %d times", l1.Actuator.Moves())
	}
	checkOutbox(t, e.db, bad.ID, wrong.ID)
}

// TestWake: a lock away waits in a long backoff; Wake (it advertises
// again) ends the wait.
func TestWake(t *testing.T) {
	e := newRefEnv(t)
	l := e.link.AddLock(t, 1)
	l.SetAway(true)
	s := start(t, e.db, e.link, e.clk, func(o *fleet.Options) { o.Backoff = func(int) time.Duration { return time.Hour } })
	en := e.add(t, l, command.OpUnlock, 1, e.op)
	s.Submit(en)
	until(t, "a failed dial", func() bool { return l.Dials() == 1 })
	until(t, "back in the queue", func() bool { w, _ := s.Progress(); return w == 0 })
	// The failed attempt is in memory only: written with the outcome.
	if got, err := e.db.Entry(context.Background(), en.ID); err != nil || got.State != bonds.StateReceived || got.Attempts != 0 {
		t.Errorf("after a failed attempt the journal has %s, %d attempts (%v); want it as received", got.State, got.Attempts, err)
	}
	l.SetAway(false)
	s.Wake(l.ID)
	got := waitTerminal(t, e.db, en.ID)[en.ID]
	if got.State != bonds.StateSucceeded || got.Attempts != 2 || l.Actuator.Moves() != 1 {
		t.Errorf("%s after %d attempts, %d moves", got.State, got.Attempts, l.Actuator.Moves())
	}
}

func TestCloseWaits(t *testing.T) {
	clk := newClock()
	db := openDB(t, clk)
	base := runtime.NumGoroutine()
	fake := &fleettest.Fake{DoDelay: 20 * time.Millisecond, DialDelay: time.Millisecond}
	s, err := fleet.New(fleet.Options{Journal: db, Link: fake, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, fleet.ErrStarted) {
		t.Errorf("second Start: %v", err)
	}
	var ids []bonds.CommandID
	for l := range uint64(6) {
		for n := range uint64(3) {
			en := appendCmd(t, db, fakeCmd(clk, l+1, n+1, "unlock"))
			s.Submit(en)
			ids = append(ids, en.ID)
		}
	}
	until(t, "a request in flight", func() bool { return len(fake.Stats().Requests) > 0 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st := fake.Stats(); st.Open != 0 {
		t.Errorf("%d sessions open after Close", st.Open)
	}
	s.Submit(appendCmd(t, db, fakeCmd(clk, 9, 1, "unlock"))) // no panic, ignored
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	deadline := time.Now().Add(waitFor)
	for n, stacks := ours(); n > 0 || runtime.NumGoroutine() > base+1; n, stacks = ours() {
		// +1: the journal starts a helper goroutine of its own lazily.
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of fleet after Close (%d in all, %d before):\n%s", n, runtime.NumGoroutine(), base, stacks)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := s.Start(context.Background()); !errors.Is(err, fleet.ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	// Whatever Close interrupted is pending, and a new scheduler finishes
	// it, one result each.
	start(t, db, fake, clk)
	ids = append(ids, cmdID(9, 1))
	got := waitTerminal(t, db, ids...)
	for id, en := range got {
		if en.State != bonds.StateSucceeded {
			t.Errorf("%s: %s", id, en.State)
		}
	}
	checkOutbox(t, db, ids...)
}

func TestOptions(t *testing.T) {
	if _, err := fleet.New(fleet.Options{}); !errors.Is(err, fleet.ErrConfig) {
		t.Errorf("New without Journal and Link: %v", err)
	}
	for n := 1; n < 12; n++ {
		d := fleet.DefaultBackoff(n)
		hi := min(fleet.DefaultMinBackoff<<(n-1), fleet.DefaultMaxBackoff)
		if d < hi/2 || d > hi {
			t.Errorf("DefaultBackoff(%d) = %v, want in [%v, %v]", n, d, hi/2, hi)
		}
	}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fleet.ErrLockAway, true},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{fmt.Errorf("x: %w", &fleettest.RetryableError{Msg: "y"}), true},
		{fleettest.ErrFatal, false},
		{context.Canceled, false},
	} {
		if got := fleet.DefaultRetryable(c.err); got != c.want {
			t.Errorf("DefaultRetryable(%v) = %v", c.err, got)
		}
	}
}

// ours counts the goroutines running code of fleet or fleettest (other
// than tests), and returns their stacks.
func ours() (int, string) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n, out := 0, ""
	for _, g := range strings.Split(string(buf), "\n\n") {
		if (strings.Contains(g, "gatewayd/fleet.") || strings.Contains(g, "gatewayd/fleet/fleettest.")) &&
			!strings.Contains(g, "fleet_test.Test") {
			n++
			out += g + "\n\n"
		}
	}
	return n, out
}

// hiccupJournal fails its first n TransitionBatch calls as a whole, as a
// disk error would.
type hiccupJournal struct {
	*bonds.DB
	mu sync.Mutex
	n  int
}

func (h *hiccupJournal) TransitionBatch(ctx context.Context, reqs []bonds.TransitionReq) ([]bonds.Entry, []error, error) {
	h.mu.Lock()
	fail := h.n > 0
	h.n--
	h.mu.Unlock()
	if fail {
		return nil, nil, errors.New("disk hiccup")
	}
	return h.DB.TransitionBatch(ctx, reqs)
}

// TestJournalHiccupTakenUpAgain: a command whose result could not be
// written at first (a disk hiccup) gets it when the write is tried again,
// without a restart, and runs once.
func TestJournalHiccupTakenUpAgain(t *testing.T) {
	clk := newClock()
	db := openDB(t, clk)
	fake := &fleettest.Fake{}
	en := appendCmd(t, db, fakeCmd(clk, 1, 1, "unlock"))
	s := start(t, &hiccupJournal{DB: db, n: 1}, fake, clk, func(o *fleet.Options) { o.RescanAfterDrop = 10 * time.Millisecond })
	s.Submit(en)
	got := waitTerminal(t, db, en.ID)[en.ID]
	if got.State != bonds.StateSucceeded {
		t.Errorf("%s %q", got.State, got.Result.Status)
	}
	if n := fake.Stats().Requests[en.LockID]; n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	checkOutbox(t, db, en.ID)
}

// sumOf sums the scheduler's gatewayd_fleet_<name> series whose label k
// is v.
func sumOf(t *testing.T, s *fleet.Scheduler, name, k, v string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "gatewayd_fleet_"+name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
