package fleet_test

import (
	"bytes"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/fleet"
	"github.com/gatewayd/gatewayd/fleet/fleettest"
)

// The priority tests run the scheduler in a testing/synctest bubble over
// the link model (fleettest.Model): its connects and exchanges, and every
// timer of the scheduler, pass in virtual time, so the orderings asserted
// are those of the model, whatever the machine's load.

// Link model of issue 14: 4 slots, connect 100 ms, exchange 30 ms.
const (
	modelConnect  = 100 * time.Millisecond
	modelExchange = 30 * time.Millisecond
)

// sim is a scheduler over a Model in a bubble.
type sim struct {
	t     testing.TB
	clk   *clock
	db    *bonds.DB
	model *fleettest.Model
	s     *fleet.Scheduler
	n     map[uint64]uint64 // commands per lock so far
}

func newSim(t testing.TB, mod ...func(*fleet.Options)) *sim {
	clk := newClock()
	m := &fleettest.Model{Connect: modelConnect, Exchange: modelExchange}
	db := openDB(t, clk)
	mod = append([]func(*fleet.Options){func(o *fleet.Options) { o.MaxSessions = 4; o.Logger = nil }}, mod...)
	return &sim{t: t, clk: clk, db: db, model: m, s: start(t, db, m, clk, mod...), n: map[uint64]uint64{}}
}

// submit journals and submits the next command for lock; its signed
// payload is its command ID.
func (sm *sim) submit(lock uint64, op command.Op) bonds.CommandID {
	sm.t.Helper()
	sm.n[lock]++
	sm.clk.Add(time.Millisecond) // distinct receive times, in submit order
	e := appendCmd(sm.t, sm.db, fakeCmd(sm.clk, lock, sm.n[lock], op.String()))
	sm.s.Submit(e)
	return e.ID
}

// wait waits (in virtual time) until cond holds; an hour of virtual time
// only bounds a hang.
func (sm *sim) wait(what string, cond func() bool) {
	sm.t.Helper()
	deadline := time.Now().Add(time.Hour)
	for !cond() {
		if time.Now().After(deadline) {
			sm.t.Fatalf("no %s after an hour of virtual time", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitDone waits for id's request to get its answer and returns when.
func (sm *sim) waitDone(id bonds.CommandID) time.Time {
	sm.t.Helper()
	var at time.Time
	sm.wait("answer to "+id.String(), func() bool {
		var ok bool
		at, ok = sm.model.Done(id[:])
		return ok
	})
	return at
}

// dialsBetween counts the sessions started (Dials called) after from and
// before lock's first Dial after from.
func dialsBetween(evs []fleettest.Event, from time.Time, lock bonds.LockID) (n int, found bool) {
	for _, e := range evs {
		if !e.Dial || e.At.Before(from) {
			continue
		}
		if e.Lock == lock {
			return n, true
		}
		n++
	}
	return n, false
}

// TestUrgentNextFreeSlot: an unlock enqueued behind 600 status commands
// on 200 other locks, with every slot busy, starts its session next: at
// most one session (a connect already granted) starts between its
// arrival and its own. Without priorities it waited for all 200.
func TestUrgentNextFreeSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sm := newSim(t)
		for range 3 {
			for l := uint64(1); l <= 200; l++ {
				sm.submit(l, command.OpStatus)
			}
		}
		sm.wait("busy slots", func() bool { return sm.model.Answered() >= 10 })
		from := time.Now()
		id := sm.submit(1000, command.OpUnlock)
		sm.waitDone(id)
		n, ok := dialsBetween(sm.model.Events(), from, lockID(1000))
		if !ok || n > 1 {
			t.Fatalf("the unlock's session started after %d others (found %v), want at most 1", n, ok)
		}
		if y := metricValue(t, sm.s, "gatewayd_fleet_session_yields_total"); y < 1 {
			t.Errorf("session yields = %v, want >= 1 (a background session made room)", y)
		}
	})
}

// TestBackgroundYieldsAtCommandBoundary: with one slot, a session
// carrying status commands ends after the command in progress when an
// unlock for another lock arrives; the unlock runs, then the statuses go
// on in their order in a new session. No request is cut or run twice.
func TestBackgroundYieldsAtCommandBoundary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sm := newSim(t, func(o *fleet.Options) { o.MaxSessions = 1 })
		var st []bonds.CommandID
		for range 10 {
			st = append(st, sm.submit(1, command.OpStatus))
		}
		sm.waitDone(st[1]) // the session is under way
		un := sm.submit(2, command.OpUnlock)
		sm.waitDone(st[len(st)-1])

		var order []string
		for _, e := range sm.model.Events() {
			switch {
			case e.Dial:
				order = append(order, "dial "+e.Lock.String())
			default:
				order = append(order, "do "+e.Lock.String())
			}
		}
		var reqs [][]byte
		for _, e := range sm.model.Events() {
			if !e.Dial {
				reqs = append(reqs, e.Signed)
			}
		}
		// 2 or 3 statuses (the one in flight when the unlock came
		// finishes), then the unlock in its own session, then the rest.
		k := -1
		for i, r := range reqs {
			if bytes.Equal(r, un[:]) {
				k = i
			}
		}
		if k < 2 || k > 3 {
			t.Fatalf("unlock was request %d, want 2 or 3: %v", k, order)
		}
		want := append(append(append([][]byte{}, idsBytes(st[:k])...), un[:]), idsBytes(st[k:])...)
		if len(reqs) != len(want) {
			t.Fatalf("%d requests, want %d: %v", len(reqs), len(want), order)
		}
		for i := range want {
			if !bytes.Equal(reqs[i], want[i]) {
				t.Fatalf("request %d out of order: %v", i, order)
			}
		}
		dials := 0
		for _, o := range order {
			if o[:4] == "dial" {
				dials++
			}
		}
		if dials != 3 {
			t.Errorf("%d sessions, want 3 (statuses, unlock, statuses): %v", dials, order)
		}
		if y := metricValue(t, sm.s, "gatewayd_fleet_session_yields_total"); y != 1 {
			t.Errorf("session yields = %v, want 1", y)
		}
	})
}

func idsBytes(ids []bonds.CommandID) [][]byte {
	out := make([][]byte, len(ids))
	for i := range ids {
		out[i] = ids[i][:]
	}
	return out
}

// TestAgeingUnderUrgentLoad: with one slot and unlocks arriving faster
// than they can run, a status waits at most about AgeAfter: it then
// counts as urgent and, having waited longest, goes next, while the
// unlocks keep coming. The control, with ageing out of reach, shows the
// same load starving it until the unlocks stop.
func TestAgeingUnderUrgentLoad(t *testing.T) {
	const arrivals = 100 // one unlock every 100 ms; each session takes 130 ms
	run := func(t *testing.T, age time.Duration) (statusAt, lastArrival time.Time) {
		sm := newSim(t, func(o *fleet.Options) { o.MaxSessions = 1; o.AgeAfter = age })
		var st bonds.CommandID
		for i := range arrivals {
			sm.submit(uint64(100+i), command.OpUnlock)
			if i == 2 {
				st = sm.submit(1, command.OpStatus)
			}
			lastArrival = time.Now()
			time.Sleep(100 * time.Millisecond)
		}
		return sm.waitDone(st), lastArrival
	}
	synctest.Test(t, func(t *testing.T) {
		at, last := run(t, 2*time.Second)
		if !at.Before(last) {
			t.Errorf("status answered at %v, after the last unlock arrived (%v): starved", at, last)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		at, last := run(t, time.Hour)
		if at.Before(last) {
			t.Errorf("control: status answered at %v, before the last unlock arrived (%v), without ageing", at, last)
		}
	})
}

// TestPriorityKeepsLockOrder: a lock's commands run in their order (the
// signer's counter order) whatever their classes: an unlock queued behind
// its own lock's statuses and ahead of another status runs third, and
// its lock, urgent through it, is served before the locks with only
// background work that were waiting before it.
func TestPriorityKeepsLockOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sm := newSim(t, func(o *fleet.Options) { o.MaxSessions = 1 })
		var bg []bonds.CommandID
		for l := uint64(1); l <= 20; l++ {
			bg = append(bg, sm.submit(l, command.OpStatus))
		}
		mine := []bonds.CommandID{
			sm.submit(50, command.OpStatus), sm.submit(50, command.OpAddUser),
			sm.submit(50, command.OpUnlock), sm.submit(50, command.OpStatus),
		}
		for _, id := range append(bg, mine...) {
			sm.waitDone(id)
		}
		var got [][]byte
		firstDial := -1
		dials := 0
		for _, e := range sm.model.Events() {
			if e.Dial {
				if e.Lock == lockID(50) && firstDial < 0 {
					firstDial = dials
				}
				dials++
				continue
			}
			if e.Lock == lockID(50) {
				got = append(got, e.Signed)
			}
		}
		want := idsBytes(mine)
		if len(got) != len(want) {
			t.Fatalf("lock 50 got %d requests, want %d", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("lock 50's request %d is %x, want %x: order broken", i, got[i], want[i])
			}
		}
		if firstDial < 0 || firstDial > 2 {
			t.Errorf("lock 50's session was session %d, want within the first 3 (it carries an unlock)", firstDial)
		}
	})
}
