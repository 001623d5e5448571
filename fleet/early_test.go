package fleet_test

import (
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/fleet/fleettest"
)

// TestSubmitEarlySendsOnlyOnceDurable (issue 14, end to end): an entry
// submitted before its append committed (SubmitEarly) is connected for and
// handshaken with at once, but its command reaches the lock only after
// settle(true), and its outcome is written then as for any other.
func TestSubmitEarlySendsOnlyOnceDurable(t *testing.T) {
	clk := newClock()
	db := openDB(t, clk)
	link := &fleettest.Fake{}
	s := start(t, db, link, clk)
	c := fakeCmd(clk, 1, 1, "unlock")
	settle := s.SubmitEarly(bonds.Entry{Command: c, ReceivedAt: clk.Now(), State: bonds.StateReceived})
	until(t, "the dial made before the append", func() bool { return link.Stats().Dials[c.LockID] == 1 })
	time.Sleep(50 * time.Millisecond) // a chance to send too early
	if n := link.Stats().Requests[c.LockID]; n != 0 {
		t.Fatalf("%d requests sent before the command was durable", n)
	}
	appendCmd(t, db, c)
	settle(true)
	e := waitTerminal(t, db, c.ID)[c.ID]
	if e.State != bonds.StateSucceeded || e.Attempts != 1 {
		t.Fatalf("entry %s after %d attempts", e.State, e.Attempts)
	}
	if st := link.Stats(); st.Requests[c.LockID] != 1 || st.Dials[c.LockID] != 1 {
		t.Errorf("%d requests over %d dials, want 1 and 1", st.Requests[c.LockID], st.Dials[c.LockID])
	}
}

// TestSubmitEarlyNotDurableNeverSent: an entry submitted early whose append
// did not commit as new (a duplicate, a journal error: settle(false)) is
// never sent to the lock and nothing is written for it; the lock's next
// command, durable, runs.
func TestSubmitEarlyNotDurableNeverSent(t *testing.T) {
	clk := newClock()
	db := openDB(t, clk)
	link := &fleettest.Fake{HandshakeDelay: 20 * time.Millisecond}
	s := start(t, db, link, clk)
	lost := fakeCmd(clk, 1, 1, "unlock")
	kept := fakeCmd(clk, 1, 2, "lock")
	settleLost := s.SubmitEarly(bonds.Entry{Command: lost, ReceivedAt: clk.Now(), State: bonds.StateReceived})
	settleKept := s.SubmitEarly(bonds.Entry{Command: kept, ReceivedAt: clk.Now().Add(time.Millisecond), State: bonds.StateReceived})
	until(t, "the dial", func() bool { return link.Stats().Dials[lost.LockID] == 1 })
	settleLost(false)
	appendCmd(t, db, kept)
	settleKept(true)
	waitTerminal(t, db, kept.ID)
	st := link.Stats()
	if len(st.Calls) != 1 || string(st.Calls[0].Signed) != string(kept.Payload) {
		t.Fatalf("requests %+v, want only the durable command", st.Calls)
	}
	if _, err := db.Entry(t.Context(), lost.ID); err == nil {
		t.Errorf("an entry was written for the command never journaled")
	}
}
