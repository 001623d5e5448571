package operator

import (
	"bytes"
	"context"
	"fmt"
	"github.com/gatewayd/gatewayd/internal/backoff"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/bonds"
)

// Defaults of PresenceOptions.
const (
	DefaultPresenceMinInterval = 5 * time.Second
	DefaultPresenceRefresh     = 5 * time.Minute
	DefaultPresenceMaxLocks    = 256
)

// SeenLock is one lock the gateway hears, as the adapter last saw it
// (the daemon builds it from bluez.LockInfo), and one element of the
// "locks" array of a [LocksMessage].
type SeenLock struct {
	// LockID is the lock's ID from its advertisement (16 hex digits in
	// JSON). Entries with a zero ID are dropped.
	LockID bonds.LockID `json:"lock_id"`
	// Address is the Bluetooth address the lock advertises from
	// ("AA:BB:CC:DD:EE:FF").
	Address string `json:"address"`
	// RSSI is the last received signal strength in dBm; 0 means unknown
	// (BlueZ's convention) and is omitted from the JSON.
	RSSI int `json:"rssi,omitempty"`
	// Battery is the battery level in percent, from the advertisement.
	Battery int `json:"battery"`
	// Locked is the advertisement's locked flag (bluez.FlagLocked).
	Locked bool `json:"locked"`
	// LastSeen is when the adapter last heard the lock.
	LastSeen time.Time `json:"last_seen"`
	// Verified is set when Address is the address the lock last proved
	// its identity from, in a handshake with this gateway. Anyone can
	// advertise any lock ID: an entry that is not verified is only what a
	// device claims (an impostor, or the lock before its first handshake
	// with this gateway).
	Verified bool `json:"verified"`
}

// LocksMessage is the JSON a [Presence] publishes, retained, on the locks
// topic: the gateway's current view of the locks it hears.
type LocksMessage struct {
	GatewayID string `json:"gateway_id"`
	// UpdatedAt is when the gateway published this snapshot (a refresh
	// publishes it again with a new UpdatedAt).
	UpdatedAt time.Time `json:"updated_at"`
	// Locks are sorted by lock_id; [] when the gateway hears none.
	Locks []SeenLock `json:"locks"`
	// Truncated is set when the gateway heard more than MaxLocks locks:
	// Locks then holds the MaxLocks with the strongest RSSI.
	Truncated bool `json:"truncated"`
}

// PresenceOptions configures NewPresence. Publisher and Topics are
// required; every other zero value is useful.
type PresenceOptions struct {
	Publisher Publisher
	Topics    Topics
	Logger    *slog.Logger // nil discards
	// Now stamps the snapshots' updated_at (default time.Now). Intervals
	// are measured with timers, not with Now.
	Now func() time.Time
	// MinInterval is the least time between two publications (default
	// 5s): changes within it are coalesced, and the latest snapshot is
	// published when it has passed. It is also the first wait after a
	// failed publication.
	MinInterval time.Duration
	// Refresh is how long an unchanged snapshot stays unpublished
	// (default 5 min): RSSI and last_seen alone do not trigger a
	// publication, so the refresh keeps them (and updated_at) current.
	Refresh time.Duration
	// MaxLocks bounds the locks of a snapshot (default 256): beyond it,
	// those with the strongest RSSI are kept and truncated is set.
	MaxLocks int
	// PublishTimeout bounds one publication (default 30s).
	PublishTimeout time.Duration
}

// Presence publishes, retained on the locks topic, the locks this gateway
// hears, so that the backend can route a lock's commands to the gateway
// of the dock where the lock is (docs/mqtt.md, "Lock presence").
//
// The daemon calls Update with the adapter's locks on every adapter
// event; Update never blocks, it only keeps the latest snapshot and wakes
// the publisher. The publisher publishes when the set of lock IDs, or the
// locked flag or battery of a lock, differs from what it last published
// (RSSI and last_seen changes alone wait for the Refresh), at most once per
// MinInterval, always the latest snapshot. A failed publication is retried
// after a jittered backoff, from MinInterval doubling up to 30s (or
// MinInterval if larger), with the snapshot latest at the time of the
// retry. Nothing is published before the first Update. The payloads are
// never logged, only lock counts.
//
// A Presence is a prometheus.Collector (gatewayd_presence_*).
type Presence struct {
	opts PresenceOptions
	log  *slog.Logger
	wake chan struct{}

	run    runner
	mu     sync.Mutex
	latest *snapshot // nil until the first Update
	acked  *snapshot // the last snapshot the broker acknowledged (Progress)
	again  time.Time // Republish: publish again, changed or not, from then on (zero: no)

	locks               atomic.Int64
	published, failures atomic.Uint64
	descLocks           *prometheus.Desc
	descPublished       *prometheus.Desc
	descFailures        *prometheus.Desc
}

// snapshot is a normalized list of locks: one per lock ID, at most
// MaxLocks, sorted by lock ID. It is not modified once made.
type snapshot struct {
	locks     []SeenLock
	truncated bool
}

// NewPresence returns a Presence; Start starts it. Errors wrap ErrOptions.
func NewPresence(o PresenceOptions) (*Presence, error) {
	if o.Publisher == nil || o.Topics.Locks == "" {
		return nil, fmt.Errorf("%w: presence needs a Publisher and Topics", ErrOptions)
	}
	if o.MinInterval < 0 || o.Refresh < 0 || o.PublishTimeout < 0 {
		return nil, fmt.Errorf("%w: negative duration", ErrOptions)
	}
	if o.MaxLocks < 0 {
		return nil, fmt.Errorf("%w: negative MaxLocks", ErrOptions)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MinInterval == 0 {
		o.MinInterval = DefaultPresenceMinInterval
	}
	if o.Refresh == 0 {
		o.Refresh = DefaultPresenceRefresh
	}
	if o.MaxLocks == 0 {
		o.MaxLocks = DefaultPresenceMaxLocks
	}
	if o.PublishTimeout == 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	p := &Presence{opts: o, log: o.Logger.With("subsystem", "presence", "gateway", o.Topics.GatewayID),
		wake: make(chan struct{}, 1)}
	p.initMetrics()
	return p, nil
}

// Update replaces the snapshot with locks, the locks the gateway hears
// now (all of them, not a change), and wakes the publisher. It never
// blocks and does not keep locks. Entries with a zero lock ID are dropped;
// of several entries with one lock ID, a verified one is kept, else the
// most recently seen.
// Updates after Close are ignored.
func (p *Presence) Update(locks []SeenLock) {
	s := newSnapshot(locks, p.opts.MaxLocks)
	if p.run.isClosed() {
		return
	}
	p.mu.Lock()
	p.latest = s
	p.locks.Store(int64(len(s.locks)))
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Republish makes the publisher publish the latest snapshot again, even
// unchanged, MinInterval from now (or later, never more often than every
// MinInterval). The daemon calls it after each reconnect: a clustered
// broker that lost a node may have acknowledged a retained publication
// made during its leader election without storing it (docs/scaling.md),
// leaving an older presence to backends that subscribe later. It never
// blocks.
func (p *Presence) Republish() {
	p.mu.Lock()
	p.again = time.Now().Add(p.opts.MinInterval)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Start starts the publisher. It stops when ctx is done or Close is
// called. Errors wrap ErrStarted.
func (p *Presence) Start(ctx context.Context) error { return p.run.start(ctx, p.loop) }

// Close stops the publisher and waits for it; nothing is published after
// it returns. A publication in progress is abandoned. The retained
// snapshot stays on the broker: the backend knows the gateway's locks are
// unknown from its status (offline). Close is idempotent.
func (p *Presence) Close() { p.run.close() }

func (p *Presence) snapshot() *snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latest
}

func (p *Presence) loop(ctx context.Context) {
	var (
		published    *snapshot // last snapshot the broker acknowledged
		publishedAt  time.Time // when (monotonic)
		attemptedAt  time.Time // start of the last publication attempt
		failed       int       // failed attempts in a row
		retryAt      time.Time // after a failure: not before
		timer        = time.NewTimer(time.Hour)
		timerRunning bool
	)
	timer.Stop()
	defer timer.Stop()
	for {
		s := p.snapshot()
		p.mu.Lock()
		again := p.again
		p.mu.Unlock()
		var due time.Time
		if s != nil {
			if published == nil || !s.sameAs(published) {
				due = attemptedAt.Add(p.opts.MinInterval)
			} else {
				due = publishedAt.Add(p.opts.Refresh)
				if !again.IsZero() && again.Before(due) {
					due = again
					if next := attemptedAt.Add(p.opts.MinInterval); next.After(due) {
						due = next
					}
				}
			}
			if failed > 0 && retryAt.After(due) {
				due = retryAt
			}
			if !time.Now().Before(due) {
				attemptedAt = time.Now()
				err := p.publish(ctx, s)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					p.failures.Add(1)
					d := p.backoff(failed)
					failed++
					retryAt = time.Now().Add(d)
					p.log.Warn("lock presence not published: retrying", "locks", len(s.locks), "err", err, "retry_in", d)
					continue
				}
				p.published.Add(1)
				failed = 0
				published, publishedAt = s, time.Now()
				p.mu.Lock()
				p.acked = s
				if !p.again.IsZero() && !p.again.After(attemptedAt) {
					p.again = time.Time{} // this publication was the one asked for
				}
				p.mu.Unlock()
				p.log.Debug("lock presence published", "locks", len(s.locks), "truncated", s.truncated)
				continue
			}
		}
		var tick <-chan time.Time
		if s != nil {
			timer.Reset(time.Until(due))
			timerRunning = true
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-tick:
			timerRunning = false
		}
		if timerRunning {
			timer.Stop()
			timerRunning = false
		}
	}
}

func (p *Presence) publish(ctx context.Context, s *snapshot) error {
	m := LocksMessage{GatewayID: p.opts.Topics.GatewayID, UpdatedAt: p.opts.Now().UTC(), Locks: s.locks,
		Truncated: s.truncated}
	if m.Locks == nil {
		m.Locks = []SeenLock{}
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.PublishTimeout)
	defer cancel()
	return p.opts.Publisher.Publish(ctx, p.opts.Topics.Locks, mustJSON(m), true)
}

// backoff returns the wait after n+1 failures in a row: MinInterval·2^n
// up to max(DefaultMaxBackoff, MinInterval), jittered to [d/2, d]. The
// next attempt is also never sooner than MinInterval after the last.
func (p *Presence) backoff(n int) time.Duration {
	return backoff.Delay(p.opts.MinInterval, max(DefaultMaxBackoff, p.opts.MinInterval), n)
}

// newSnapshot normalizes locks: zero IDs dropped, one entry per lock ID
// (a verified one, then the latest LastSeen, then the strongest RSSI: an
// impostor advertising a lock's ID never hides the lock's verified entry,
// however loud or recent it is), the maxLocks strongest
// by RSSI (unknown RSSI is the weakest), sorted by lock ID, times in UTC.
func newSnapshot(locks []SeenLock, maxLocks int) *snapshot {
	byID := make(map[bonds.LockID]SeenLock, len(locks))
	for _, l := range locks {
		if l.LockID.IsZero() {
			continue
		}
		if o, ok := byID[l.LockID]; ok && (o.Verified && !l.Verified ||
			o.Verified == l.Verified && (o.LastSeen.After(l.LastSeen) ||
				o.LastSeen.Equal(l.LastSeen) && rssiRank(o.RSSI) >= rssiRank(l.RSSI))) {
			continue
		}
		l.LastSeen = l.LastSeen.UTC()
		byID[l.LockID] = l
	}
	s := &snapshot{locks: slices.Collect(maps.Values(byID))}
	byLockID := func(a, b SeenLock) int { return bytes.Compare(a.LockID[:], b.LockID[:]) }
	if len(s.locks) > maxLocks {
		slices.SortFunc(s.locks, func(a, b SeenLock) int {
			if c := rssiRank(b.RSSI) - rssiRank(a.RSSI); c != 0 {
				return c
			}
			return byLockID(a, b)
		})
		s.locks, s.truncated = s.locks[:maxLocks:maxLocks], true
	}
	slices.SortFunc(s.locks, byLockID)
	return s
}

// rssiRank orders RSSIs, the strongest highest; 0 (unknown) lowest.
func rssiRank(rssi int) int {
	if rssi == 0 {
		return -1 << 20
	}
	return rssi
}

// sameAs reports whether s and o hold the same lock IDs with the same
// verification, locked flags and batteries, and the same truncation: what
// makes a publication necessary. An address alone is not (unverified
// devices taking turns would make a publication each).
func (s *snapshot) sameAs(o *snapshot) bool {
	return s.truncated == o.truncated && slices.EqualFunc(s.locks, o.locks, func(a, b SeenLock) bool {
		return a.LockID == b.LockID && a.Verified == b.Verified && a.Locked == b.Locked && a.Battery == b.Battery
	})
}

func (p *Presence) initMetrics() {
	var l prometheus.Labels // none: the scrape target names the dock
	p.descLocks = prometheus.NewDesc("gatewayd_presence_locks",
		"Locks in the gateway's latest presence snapshot (the locks it hears, at most MaxLocks); the locks topic carries it within the minimum interval.",
		nil, l)
	p.descPublished = prometheus.NewDesc("gatewayd_presence_publishes_total",
		"Presence snapshots published on the locks topic and acknowledged by the broker (refreshes included).", nil, l)
	p.descFailures = prometheus.NewDesc("gatewayd_presence_publish_failures_total",
		"Failed publications of the presence snapshot; each is retried, with the latest snapshot, after a jittered backoff.", nil, l)
}

// Describe implements prometheus.Collector.
func (p *Presence) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.descLocks
	ch <- p.descPublished
	ch <- p.descFailures
}

// Collect implements prometheus.Collector.
func (p *Presence) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(p.descLocks, prometheus.GaugeValue, float64(p.locks.Load()))
	ch <- prometheus.MustNewConstMetric(p.descPublished, prometheus.CounterValue, float64(p.published.Load()))
	ch <- prometheus.MustNewConstMetric(p.descFailures, prometheus.CounterValue, float64(p.failures.Load()))
}
