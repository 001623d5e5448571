package backoff

import (
	"context"
	"testing"
	"time"
)

// TestDelayBounds: the n-th delay lies in [d/2, d] for d = min(lo·2ⁿ, hi).
func TestDelayBounds(t *testing.T) {
	lo, hi := 100*time.Millisecond, 5*time.Second
	for n := range 40 {
		d := lo << min(n, 20)
		d = min(d, hi)
		for range 50 {
			if got := Delay(lo, hi, n); got < d/2 || got > d {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", n, got, d/2, d)
			}
		}
	}
}

// TestBackoffCountsAndResets: Next advances, Reset starts again; the
// extremes of Rand give the ends of the interval.
func TestBackoffCountsAndResets(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 8 * time.Second, Rand: func() float64 { return 0 }}
	for _, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		if got := b.Next(); got != want {
			t.Fatalf("Next = %v, want %v", got, want)
		}
	}
	b.Reset()
	b.Rand = func() float64 { return 0.999999999 }
	if got := b.Next(); got < 999*time.Millisecond || got > time.Second {
		t.Fatalf("after Reset, Next = %v, want about 1s", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Wait(ctx); err == nil {
		t.Error("Wait ignored a cancelled context")
	}
}
