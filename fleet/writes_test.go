package fleet_test

import (
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/fleet"
	"github.com/gatewayd/gatewayd/fleet/fleettest"
)

// TestJournalWritesBatched: commands admitted together go to queued in
// one journal write, and within a session the result of one command and
// the start of the next share one write. Five commands for one lock,
// resumed together at Start and carried in one session, cost 7 writes:
// 1 admission, 1 running for the first (before the connect), 4 result +
// next running, 1 last result (one each would be 15).
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
	if w := db.Stats().Writes - before.Writes; w != n+2 {
		t.Errorf("%d journal writes for %d commands in one session, want %d", w, n, n+2)
	}
}
