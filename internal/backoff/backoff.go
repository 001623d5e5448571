// Package backoff owns the jittered exponential delay every retry loop of
// gatewayd uses (the agent's re-registration, the scheduler's reconnects,
// the outbox's and the presence's publishes, the intake's journal
// retries): the n-th wait is drawn uniformly from [d/2, d] with
// d = min(Min·2ⁿ, Max), so that gateways (or locks) that failed together
// do not retry in lockstep.
//
// It imports only the standard library.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay is the wait before retry n (n = 0 after the first failure): d =
// min(lo·2ⁿ, hi), drawn uniformly from [d/2, d].
func Delay(lo, hi time.Duration, n int) time.Duration {
	return jitter(double(lo, hi, n), rand.Float64)
}

func double(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

func jitter(d time.Duration, r func() float64) time.Duration {
	return d/2 + time.Duration(r()*float64(d/2+1))
}

// Backoff counts failures for a retry loop: Next returns Delay for the
// failures so far and counts one more; Reset starts again after a success.
type Backoff struct {
	Min, Max time.Duration
	// Rand returns a float in [0,1); nil uses math/rand/v2.
	Rand func() float64
	n    int
}

// Next returns the next delay and advances.
func (b *Backoff) Next() time.Duration {
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	d := jitter(double(b.Min, b.Max, b.n), r)
	b.n++
	return d
}

// Reset starts again from Min (after a success).
func (b *Backoff) Reset() { b.n = 0 }

// Wait sleeps the next delay, or returns ctx's error first.
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
