package bluez

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is a jittered exponential delay between attempts: the n-th wait
// is drawn uniformly from [d/2, d] with d = min(Min·2ⁿ, Max), so that
// gateways that lost the same bluetoothd do not retry in lockstep.
type backoff struct {
	Min, Max time.Duration
	// Rand returns a float in [0,1); nil uses math/rand/v2.
	Rand func() float64
	n    int
}

// next returns the next delay and advances.
func (b *backoff) next() time.Duration {
	d := b.Min
	for i := 0; i < b.n && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	b.n++
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	return d/2 + time.Duration(r()*float64(d/2))
}

// reset starts again from Min (after a success).
func (b *backoff) reset() { b.n = 0 }

// wait sleeps the next delay, or returns ctx's error first.
func (b *backoff) wait(ctx context.Context) error {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
