package fleet_test

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/fleet"
)

// *bonds.DB is the journal the daemon passes.
var _ fleet.Journal = (*bonds.DB)(nil)

// waitFor is the deadline of every poll: generous, it only bounds a hang.
const waitFor = 20 * time.Second

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// openDB opens a journal in t.TempDir on clk.
func openDB(t testing.TB, clk *clock) *bonds.DB {
	t.Helper()
	db, err := bonds.Open(filepath.Join(t.TempDir(), "gatewayd.db"), bonds.Options{Now: clk.Now, NoSync: true, PruneInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil && !errors.Is(err, bonds.ErrClosed) {
			t.Errorf("db close: %v", err)
		}
	})
	return db
}

// tlog is a slog handler writing to t.Log.
type tlog struct{ t testing.TB }

func (h tlog) Enabled(context.Context, slog.Level) bool { return true }
func (h tlog) Handle(_ context.Context, r slog.Record) error {
	s := r.Message
	r.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
	h.t.Log(s)
	return nil
}
func (h tlog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h tlog) WithGroup(string) slog.Handler      { return h }

// start makes and starts a scheduler with quick backoff, on clk, logging
// to t; it is closed at cleanup.
func start(t testing.TB, db fleet.Journal, link fleet.Link, clk *clock, mod ...func(*fleet.Options)) *fleet.Scheduler {
	t.Helper()
	opts := fleet.Options{Journal: db, Link: link, Now: clk.Now, Logger: slog.New(tlog{t}),
		Backoff: func(int) time.Duration { return time.Millisecond }, HeardRetry: time.Millisecond}
	for _, m := range mod {
		m(&opts)
	}
	s, err := fleet.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func lockID(n uint64) bonds.LockID {
	var id bonds.LockID
	binary.BigEndian.PutUint64(id[:], n)
	return id
}

func cmdID(lock, n uint64) bonds.CommandID {
	var id bonds.CommandID
	binary.BigEndian.PutUint64(id[:8], lock)
	binary.BigEndian.PutUint64(id[8:], n)
	return id
}

// appendCmd journals c durably, as the MQTT intake does.
func appendCmd(t testing.TB, db *bonds.DB, c bonds.Command) bonds.Entry {
	t.Helper()
	e, err := db.Append(context.Background(), c)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return e
}

// fakeCmd is a command for the fake link: its "signed" payload is its ID.
func fakeCmd(clk *clock, lock uint64, n uint64, op string) bonds.Command {
	id := cmdID(lock, n)
	return bonds.Command{ID: id, LockID: lockID(lock), Operator: "otto", Operation: op,
		NotAfter: clk.Now().Add(time.Hour), Payload: id[:]}
}

// waitTerminal polls the journal until every entry is terminal and
// returns them.
func waitTerminal(t testing.TB, db *bonds.DB, ids ...bonds.CommandID) map[bonds.CommandID]bonds.Entry {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	out := map[bonds.CommandID]bonds.Entry{}
	for _, id := range ids {
		for {
			e, err := db.Entry(context.Background(), id)
			if err != nil {
				t.Fatalf("entry %s: %v", id, err)
			}
			if e.State.Terminal() {
				out[id] = e
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("entry %s still %s after %v", id, e.State, waitFor)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return out
}

// checkOutbox asserts that the outbox holds exactly one result for each
// of ids, and nothing else.
func checkOutbox(t testing.TB, db *bonds.DB, ids ...bonds.CommandID) []bonds.Result {
	t.Helper()
	ob, err := db.Outbox(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := map[bonds.CommandID]int{}
	for _, r := range ob {
		n[r.CommandID]++
	}
	for _, id := range ids {
		if n[id] != 1 {
			t.Errorf("outbox has %d results for %s, want 1", n[id], id)
		}
	}
	if len(ob) != len(ids) {
		t.Errorf("outbox has %d results, want %d", len(ob), len(ids))
	}
	return ob
}

// until polls cond.
func until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
