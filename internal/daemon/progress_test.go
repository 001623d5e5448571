package daemon

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// loop is a main loop's account for progressWatch tests.
type loop struct {
	mu      sync.Mutex
	waiting int
	done    uint64
}

func (l *loop) set(waiting int, done uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waiting, l.done = waiting, done
}

func (l *loop) progress() (int, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiting, l.done
}

// TestProgressWatch: a loop is stalled when it has work waiting and its
// done count stays put; progress, or nothing to do, clears it. Waiting
// work of a loop counted only while connected does not count while
// disconnected. check fails only past the bound, naming the loop; the
// gauge shows every loop.
func TestProgressWatch(t *testing.T) {
	var sched, out loop
	connected := false
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	now := t0
	w := newProgressWatch(2*time.Minute, loopProbe{"scheduler", sched.progress},
		loopProbe{"outbox", whileConnected(func() bool { return connected }, out.progress)})
	w.now = func() time.Time { return now }
	step := func(d time.Duration) { now = now.Add(d) }

	sched.set(1, 5)
	out.set(3, 0)
	if err := w.check(); err != nil {
		t.Fatalf("first sample: %v", err)
	}
	step(90 * time.Second)
	if err := w.check(); err != nil {
		t.Fatalf("90 s without progress, under the bound: %v", err)
	}
	step(31 * time.Second)
	err := w.check()
	if err == nil || !strings.Contains(err.Error(), "scheduler for 2m1s") || strings.Contains(err.Error(), "outbox") {
		t.Fatalf("121 s without progress: %v, want the scheduler named (the outbox waits for the broker)", err)
	}
	want := `
# HELP gatewayd_watchdog_stalled_seconds Seconds a main loop (intake, journal, scheduler, outbox, presence) has had work waiting without making progress; 0 while it progresses or has nothing to do. Past 2 minutes gatewayd withholds the systemd watchdog ping, and systemd restarts it.
# TYPE gatewayd_watchdog_stalled_seconds gauge
gatewayd_watchdog_stalled_seconds{loop="outbox"} 0
gatewayd_watchdog_stalled_seconds{loop="scheduler"} 121
`
	if err := testutil.CollectAndCompare(w, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(w); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}

	sched.set(1, 6) // progress
	if err := w.check(); err != nil {
		t.Fatalf("after progress: %v", err)
	}
	step(3 * time.Minute)
	sched.set(0, 6) // nothing to do
	if err := w.check(); err != nil {
		t.Fatalf("nothing waiting: %v", err)
	}

	connected = true
	_ = w.check()
	step(2 * time.Minute)
	if err := w.check(); err == nil || !strings.Contains(err.Error(), "outbox for 2m0s") {
		t.Fatalf("results waiting 2 min while connected: %v, want the outbox named", err)
	}
}
