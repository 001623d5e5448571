package operator

import (
	"context"
	"errors"
	"fmt"
	"github.com/gatewayd/gatewayd/internal/backoff"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/bonds"
)

// Defaults of OutboxOptions.
const (
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	DefaultRescan     = time.Minute
	// DefaultAckDelay is OutboxOptions.AckDelay's default.
	DefaultAckDelay = time.Second
)

// OutboxOptions configures NewOutbox. Journal, Publisher and Topics are
// required; every other zero value is useful.
type OutboxOptions struct {
	Journal   Journal
	Publisher Publisher
	Topics    Topics
	Logger    *slog.Logger // nil discards
	// MinBackoff and MaxBackoff bound the wait after a failed publication
	// (defaults 500ms and 30s): it doubles from MinBackoff up to
	// MaxBackoff, jittered to between half and all of it, and resets after
	// a pass that published everything.
	MinBackoff, MaxBackoff time.Duration
	// PublishTimeout bounds one publication (default 30s).
	PublishTimeout time.Duration
	// Rescan is how often the outbox is read without a Kick (default 1
	// min), a safety net: every writer of results should Kick.
	Rescan time.Duration
	// AckDelay is how long a result the broker acknowledged may wait
	// before its removal from the outbox is written (default
	// DefaultAckDelay; negative: at the end of each pass). Results
	// published within it share one write, and that write (an fsync)
	// does not sit in front of the next command's append, which follows a
	// result at once when an operator sends commands back to back. A crash
	// within it publishes those results again after the restart, as a
	// crash between a PUBACK and the removal always could: results are at
	// least once, and subscribers deduplicate by command_id
	// (docs/mqtt.md). Close writes the removals still waiting.
	AckDelay time.Duration
}

// Outbox publishes the journal's results on the result topic until the
// broker acknowledges them (see the package doc and docs/mqtt.md).
type Outbox struct {
	opts OutboxOptions
	log  *slog.Logger
	kick chan struct{}

	run runner

	// unremoved holds the results the broker acknowledged whose removal
	// from the outbox failed: the next pass publishes them again, a
	// duplicate. Only the loop's goroutine touches it.
	unremoved map[bonds.CommandID]struct{}
	// acked holds the results the broker acknowledged whose removal is
	// not written yet (AckDelay), oldest first, and ackedIDs their IDs: a
	// pass does not publish them again. ackedSince is when the oldest
	// was acknowledged; ackTimer kicks the pass that writes their removal.
	// Only the loop's goroutine touches them.
	acked      []bonds.Result
	ackedIDs   map[bonds.CommandID]struct{}
	ackedSince time.Time
	ackTimer   *time.Timer

	pending                      atomic.Int64
	published, failures          atomic.Uint64
	duplicates                   atomic.Uint64
	descPending, descPublished   *prometheus.Desc
	descFailures, descDuplicates *prometheus.Desc
}

// NewOutbox returns an Outbox; Start starts it. Errors wrap ErrOptions.
func NewOutbox(o OutboxOptions) (*Outbox, error) {
	if o.Journal == nil || o.Publisher == nil || o.Topics.Result == "" {
		return nil, fmt.Errorf("%w: outbox needs a Journal, a Publisher and Topics", ErrOptions)
	}
	t, err := publishTiming{o.MinBackoff, o.MaxBackoff, o.PublishTimeout, o.Rescan}.withDefaults()
	if err != nil {
		return nil, err
	}
	o.MinBackoff, o.MaxBackoff, o.PublishTimeout, o.Rescan = t.MinBackoff, t.MaxBackoff, t.PublishTimeout, t.Rescan
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.AckDelay == 0 {
		o.AckDelay = DefaultAckDelay
	}
	ob := &Outbox{opts: o, log: o.Logger.With("subsystem", "outbox", "gateway", o.Topics.GatewayID),
		kick: make(chan struct{}, 1), unremoved: map[bonds.CommandID]struct{}{}, ackedIDs: map[bonds.CommandID]struct{}{}}
	ob.initMetrics()
	return ob, nil
}

// Kick asks for a pass over the outbox soon; it never blocks. Call it
// after writing a result (the scheduler's OnResult, the Intake's
// OnResult).
func (o *Outbox) Kick() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// Start starts the publisher: it publishes at once everything already in
// the outbox (results of before a restart included), then on each Kick.
// It stops when ctx is done or Close is called. Errors wrap ErrStarted.
func (o *Outbox) Start(ctx context.Context) error { return o.run.start(ctx, o.loop) }

// Close stops the publisher and waits for it. A publication in progress
// is abandoned; its result stays in the outbox. The removals of results
// the broker acknowledged (waiting for AckDelay) are written first.
func (o *Outbox) Close() { o.run.close() }

func (o *Outbox) loop(ctx context.Context) {
	defer func() {
		if o.ackTimer != nil {
			o.ackTimer.Stop()
		}
		// Results the broker has acknowledged are removed even while the
		// Outbox closes, so a clean stop does not publish them again.
		if err := o.flush(ctx); err != nil {
			o.log.Warn("published results not removed from the outbox at close: they are published again after the restart", "err", err)
		}
	}()
	publishLoop{
		MinBackoff: o.opts.MinBackoff, MaxBackoff: o.opts.MaxBackoff, Rescan: o.opts.Rescan,
		Kick: o.kick, Log: o.log, Failures: &o.failures,
		Retrying: "result not published: retrying",
		Wait: func(err error, d time.Duration) time.Duration {
			if errors.Is(err, errRemove) {
				// The disk, not the broker: results go on within
				// about a second of its recovery.
				return min(d, maxRemoveBackoff)
			}
			return d
		},
	}.run(ctx, o.pass)
}

// backoff returns the wait after n+1 failures in a row: MinBackoff·2^n up
// to MaxBackoff, jittered to [d/2, d].
func (o *Outbox) backoff(n int) time.Duration {
	return backoff.Delay(o.opts.MinBackoff, o.opts.MaxBackoff, n)
}

// AckBatcher is implemented by a Journal that removes several published
// results in one write (*bonds.DB: bonds.DB.AckBatch). With it, the Outbox
// removes what one pass published in one write (one fsync) instead of one
// each; without it, it calls Ack per result.
type AckBatcher interface {
	// AckBatch removes the results of ids from the outbox in one
	// transaction; errs[i] is Ack's error for ids[i], the error the whole
	// write's (nothing removed).
	AckBatch(ctx context.Context, ids []bonds.CommandID) (errs []error, err error)
}

// errRemove marks a pass that failed to remove published results from
// the outbox (a journal write: the disk), not to publish.
var errRemove = errors.New("removing published results from the outbox")

// maxRemoveBackoff caps the wait after a pass failed on errRemove.
const maxRemoveBackoff = time.Second

// maxAckBatch bounds the results one write removes: a long pass removes
// what it published every maxAckBatch results, so a crash republishes at
// most that many.
const maxAckBatch = 256

// pass publishes the outbox, oldest first, each result acknowledged by the
// broker (PUBACK) before the next one. It stops at the first failure. The
// results the broker acknowledged are removed from the outbox (Journal
// AckBatch, or Ack per result) together: AckDelay after the first of them
// was acknowledged (a timer kicks the pass that does it), before a pass
// returns a publication's failure, every maxAckBatch results, and at
// Close. So the removals of the results published within AckDelay cost
// one journal write. A crash between a PUBACK and the removal publishes
// the result again after the restart (results are at least once; see
// docs/mqtt.md).
func (o *Outbox) pass(ctx context.Context) error {
	results, err := o.opts.Journal.Outbox(ctx)
	if err != nil {
		return err
	}
	o.pending.Store(int64(len(results)))
	for _, r := range results {
		if _, ok := o.ackedIDs[r.CommandID]; ok {
			continue // published; its removal waits for AckDelay
		}
		var received time.Time
		if e, err := o.opts.Journal.Entry(ctx, r.CommandID); err == nil {
			received = e.ReceivedAt
		}
		m, err := NewResultMessage(r, received)
		if err != nil {
			// Published without the lock's data rather than never.
			o.log.Error("lock result not decoded: published without it", "command_id", r.CommandID, "err", err)
		}
		o.attachCredential(ctx, &m)
		err = publishAcked(ctx, o.opts.Publisher, o.opts.PublishTimeout, o.opts.Topics.Result, mustJSON(m))
		if err != nil {
			if aerr := o.flush(ctx); aerr != nil {
				o.log.Warn("published results not removed from the outbox: they are published again", "err", aerr)
			}
			return fmt.Errorf("publish result of %s: %w", r.CommandID, err)
		}
		if _, again := o.unremoved[r.CommandID]; again {
			o.duplicates.Add(1)
			o.log.Debug("result published again: its removal from the outbox had failed", "command_id", r.CommandID)
		}
		if len(o.acked) == 0 {
			o.ackedSince = time.Now()
		}
		o.acked = append(o.acked, r)
		o.ackedIDs[r.CommandID] = struct{}{}
		if len(o.acked) == maxAckBatch {
			if err := o.flush(ctx); err != nil {
				return err
			}
		}
	}
	if len(o.acked) == 0 {
		return nil
	}
	if wait := o.opts.AckDelay - time.Since(o.ackedSince); wait > 0 {
		// Not yet: a pass after wait writes the removals.
		if o.ackTimer == nil {
			o.ackTimer = time.AfterFunc(wait, o.Kick)
		} else {
			o.ackTimer.Reset(wait)
		}
		return nil
	}
	return o.flush(ctx)
}

// flush writes the removal of the results the broker acknowledged (acked)
// and forgets them: see ack.
func (o *Outbox) flush(ctx context.Context) error {
	rs := o.acked
	o.acked = nil
	clear(o.ackedIDs)
	return o.ack(ctx, rs)
}

// attachCredential adds the lock's credential, from its record (the
// daemon records it from the handshake, before the result is journaled),
// to a signed result, so that it can be verified offline. Without it the
// result is still published: a backend may hold the credential itself.
func (o *Outbox) attachCredential(ctx context.Context, m *ResultMessage) {
	if m.LockSignature == nil {
		return
	}
	l, err := o.opts.Journal.Lock(ctx, m.LockID)
	if err != nil || len(l.Credential) == 0 {
		o.log.Debug("signed result published without the lock's credential", "command_id", m.CommandID,
			"lock_id", m.LockID, "err", err)
		return
	}
	m.LockCredential = l.Credential
}

// ack removes the published results rs from the outbox, in one write if
// the Journal is an AckBatcher. A result that cannot be removed by trying
// again (unknown, not terminal) is logged and skipped; any other failure
// is returned, and the results stay in the outbox, to be published again
// (counted in gatewayd_outbox_duplicates_total when they are).
func (o *Outbox) ack(ctx context.Context, rs []bonds.Result) (err error) {
	if len(rs) == 0 {
		return nil
	}
	all := rs
	defer func() { // rs ends as the results dealt with: removed, or never removable
		if err != nil {
			for _, r := range all {
				o.unremoved[r.CommandID] = struct{}{}
			}
		}
		for _, r := range rs {
			delete(o.unremoved, r.CommandID)
		}
	}()
	// Results the broker has acknowledged are removed even while the
	// Outbox closes, so a clean stop does not publish them again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.opts.PublishTimeout)
	defer cancel()
	errs := make([]error, len(rs))
	if b, ok := o.opts.Journal.(AckBatcher); ok {
		ids := make([]bonds.CommandID, len(rs))
		for i, r := range rs {
			ids[i] = r.CommandID
		}
		if errs, err = b.AckBatch(ctx, ids); err != nil {
			rs = nil
			return fmt.Errorf("%w: %d results: %w", errRemove, len(all), err)
		}
	} else {
		for i, r := range rs {
			errs[i] = o.opts.Journal.Ack(ctx, r.CommandID)
			if errs[i] != nil && !errors.Is(errs[i], bonds.ErrNotFound) && !errors.Is(errs[i], bonds.ErrBadTransition) {
				err = fmt.Errorf("%w: result of %s: %w", errRemove, r.CommandID, errs[i])
				rs, errs = rs[:i], errs[:i] // the ones before were removed
				break
			}
		}
	}
	for i, r := range rs {
		if err := errs[i]; err != nil {
			// Cannot succeed by retrying; do not hold up the others.
			o.log.Error("published result not removed from the outbox", "command_id", r.CommandID, "err", err)
			continue
		}
		o.published.Add(1)
		o.pending.Add(-1)
		o.log.Debug("result published", "command_id", r.CommandID, "lock_id", r.LockID, "op", r.Operation,
			"state", r.State, "status", r.Status)
	}
	return err
}
