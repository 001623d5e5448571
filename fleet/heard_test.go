package fleet_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/fleet"
)

// dialTimes is a Link recording when each Dial began.
type dialTimes struct {
	fleet.Link
	mu sync.Mutex
	at []time.Time
}

func (d *dialTimes) Dial(ctx context.Context, lock bonds.LockID) (fleet.Session, error) {
	d.mu.Lock()
	d.at = append(d.at, time.Now())
	d.mu.Unlock()
	return d.Link.Dial(ctx, lock)
}

func (d *dialTimes) times() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Time(nil), d.at...)
}

// TestHeardLockRetriedSoon: a lock whose connects keep failing while it
// advertises (radio faults: aborted connects, dropped links) is retried
// HeardRetry after each failure when it is heard again, not after its
// backoff (an hour here: as long as repeated failures make it), and is
// not dialled faster than that however often it is heard: Wake comes with
// every advertisement.
func TestHeardLockRetriedSoon(t *testing.T) {
	e := newRefEnv(t)
	l := e.link.AddLock(t, 1)
	l.SetAway(true)
	link := &dialTimes{Link: e.link}
	const heardRetry = 50 * time.Millisecond
	s := start(t, e.db, link, e.clk, func(o *fleet.Options) {
		o.Backoff = func(int) time.Duration { return time.Hour }
		o.HeardRetry = heardRetry
	})
	// The lock advertises every few milliseconds.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			s.Wake(l.ID)
			time.Sleep(2 * time.Millisecond)
		}
	})
	defer wg.Wait()
	defer stop()
	en := e.add(t, l, command.OpUnlock, 1, e.op)
	s.Submit(en)
	until(t, "three failed dials", func() bool { return len(link.times()) >= 3 })
	l.SetAway(false)
	got := waitTerminal(t, e.db, en.ID)[en.ID]
	if got.State != bonds.StateSucceeded || l.Actuator.Moves() != 1 {
		t.Errorf("%s after %d attempts, %d moves", got.State, got.Attempts, l.Actuator.Moves())
	}
	at := link.times()
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < heardRetry {
			t.Errorf("dial %d came %v after the one before, want at least HeardRetry %v", i+1, gap, heardRetry)
		}
	}
}
