package operator

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gatewayd/gatewayd/internal/backoff"
)

// publishTiming holds the durations the Outbox and the AuditPublisher
// share: the backoff after a failed pass, the bound on one publication and
// the rescan period.
type publishTiming struct {
	MinBackoff, MaxBackoff, PublishTimeout, Rescan time.Duration
}

// withDefaults checks t (negative durations wrap ErrOptions) and returns
// it with each zero value replaced by its default (DefaultMinBackoff,
// DefaultMaxBackoff, DefaultPublishTimeout, DefaultRescan) and MaxBackoff
// at least MinBackoff.
func (t publishTiming) withDefaults() (publishTiming, error) {
	if t.MinBackoff < 0 || t.MaxBackoff < 0 || t.PublishTimeout < 0 || t.Rescan < 0 {
		return t, fmt.Errorf("%w: negative duration", ErrOptions)
	}
	if t.MinBackoff == 0 {
		t.MinBackoff = DefaultMinBackoff
	}
	if t.MaxBackoff == 0 {
		t.MaxBackoff = DefaultMaxBackoff
	}
	t.MaxBackoff = max(t.MaxBackoff, t.MinBackoff)
	if t.PublishTimeout == 0 {
		t.PublishTimeout = DefaultPublishTimeout
	}
	if t.Rescan == 0 {
		t.Rescan = DefaultRescan
	}
	return t, nil
}

// publishLoop is the loop of a publisher whose pass publishes what is
// pending, each publication acknowledged by the broker (PUBACK), and
// removes it once acknowledged (the Outbox, the AuditPublisher).
type publishLoop struct {
	MinBackoff, MaxBackoff, Rescan time.Duration
	Kick                           <-chan struct{}
	Log                            *slog.Logger
	// Failures counts the failed passes.
	Failures *atomic.Uint64
	// Retrying is the message logged (Warn) after a failed pass.
	Retrying string
	// Wait, if not nil, returns the wait after the failed pass err in
	// place of the backoff d.
	Wait func(err error, d time.Duration) time.Duration
}

// run runs pass at once, then on each Kick and every Rescan, until ctx is
// done. After a failed pass it waits MinBackoff·2^n up to MaxBackoff,
// jittered (n the failures in a row before), and runs it again.
func (l publishLoop) run(ctx context.Context, pass func(context.Context) error) {
	t := time.NewTicker(l.Rescan)
	defer t.Stop()
	failed := 0
	for {
		err := pass(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			l.Failures.Add(1)
			d := backoff.Delay(l.MinBackoff, l.MaxBackoff, failed)
			if l.Wait != nil {
				d = l.Wait(err, d)
			}
			failed++
			l.Log.Warn(l.Retrying, "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		failed = 0
		select {
		case <-ctx.Done():
			return
		case <-l.Kick:
		case <-t.C:
		}
	}
}

// publishAcked publishes payload on topic, bounded by timeout, and
// returns once the broker acknowledged it (or the publication failed).
func publishAcked(ctx context.Context, p Publisher, timeout time.Duration, topic string, payload []byte) error {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return p.Publish(pctx, topic, payload, false)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
