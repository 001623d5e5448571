package operator

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
)

// Types of the messages on the events topic (AuditMessage.Type).
const (
	// EventAuditEntry is one entry of a lock's audit log, verified.
	EventAuditEntry = "audit_entry"
	// EventAuditMissed says that entries of a lock's log were overwritten
	// by the lock before the gateway read them.
	EventAuditMissed = "audit_missed"
)

// AuditMessage is the JSON published on the events topic for each
// pending audit record (docs/mqtt.md, "Events").
type AuditMessage struct {
	Type      string `json:"type"`
	GatewayID string `json:"gateway_id"`
	LockID    string `json:"lock_id"`
	// Seq is the entry's sequence number, or the first missed one.
	Seq uint64 `json:"seq"`
	// Missed is, for audit_missed, how many entries from Seq on are lost.
	Missed uint64 `json:"missed,omitempty"`
	// The entry's fields, for audit_entry (docs/protocol.md §14.5).
	Time       time.Time `json:"time,omitzero"` // the lock's clock
	Event      string    `json:"event,omitempty"`
	EventCode  uint16    `json:"event_code,omitempty"`
	Actor      string    `json:"actor,omitempty"` // hex
	Op         string    `json:"op,omitempty"`
	CommandID  string    `json:"command_id,omitempty"`
	Status     *uint16   `json:"status,omitempty"`
	StatusName string    `json:"status_name,omitempty"` // for command_ok and command_refused
	Hash       string    `json:"hash,omitempty"`
	PrevHash   string    `json:"prev_hash,omitempty"`
	// Entry is the entry's CBOR exactly as the lock sent it (base64), for
	// verifying the chain again.
	Entry  []byte    `json:"entry,omitempty"`
	ReadAt time.Time `json:"read_at"`
}

// NewAuditMessage returns the message for a pending record of gateway
// gw. An entry that does not decode (it was verified when read, so only a
// damaged database does that) is returned with its bytes and an error.
func NewAuditMessage(gw string, it bonds.AuditItem) (AuditMessage, error) {
	m := AuditMessage{Type: EventAuditEntry, GatewayID: gw, LockID: it.LockID.String(), Seq: it.Seq,
		Entry: it.Entry, ReadAt: it.ReadAt.UTC()}
	if len(it.Entry) == 0 {
		m.Type, m.Missed = EventAuditMissed, it.Missed
		return m, nil
	}
	e, err := audit.DecodeEntry(it.Entry)
	if err != nil {
		return m, fmt.Errorf("audit entry %d of lock %s: %w", it.Seq, it.LockID, err)
	}
	status := e.Status
	m.Time = time.Unix(int64(min(e.Time, 1<<62)), 0).UTC()
	m.Event, m.EventCode, m.Status = e.Event.String(), uint16(e.Event), &status
	m.Hash, m.PrevHash = hex.EncodeToString(e.Hash()), hex.EncodeToString(e.PrevHash)
	if len(e.Actor) > 0 {
		m.Actor = hex.EncodeToString(e.Actor)
	}
	if e.Op != 0 {
		m.Op = command.Op(e.Op).String()
	}
	if len(e.CommandID) > 0 {
		m.CommandID = hex.EncodeToString(e.CommandID)
	}
	if e.Event == audit.EventCommandOK || e.Event == audit.EventCommandRefused {
		m.StatusName = command.Status(e.Status).String()
	}
	return m, nil
}

// AuditJournal is what the audit publisher needs of the database;
// *bonds.DB satisfies it.
type AuditJournal interface {
	AuditOutbox(ctx context.Context, max int) ([]bonds.AuditItem, error)
	AckAudit(ctx context.Context, acks []bonds.AuditAck) error
}

// AuditOptions configures NewAuditPublisher. Journal, Publisher and
// Topics are required; every other zero value is useful (the Outbox's
// defaults).
type AuditOptions struct {
	Journal   AuditJournal
	Publisher Publisher
	Topics    Topics
	Logger    *slog.Logger // nil discards
	// MinBackoff and MaxBackoff bound the wait after a failed publication
	// (defaults 500ms and 30s), jittered as the Outbox's.
	MinBackoff, MaxBackoff time.Duration
	// PublishTimeout bounds one publication (default 30s).
	PublishTimeout time.Duration
	// Rescan is how often the pending records are read without a Kick
	// (default 1 min).
	Rescan time.Duration
}

// AuditPublisher publishes the audit records the scheduler read from
// locks (bonds.DB.AdvanceAudit queued them) on the events topic, each
// lock's in order, each acknowledged by the broker (PUBACK) before the
// next, and removes them from the database once acknowledged: at least
// once, across restarts.
type AuditPublisher struct {
	opts AuditOptions
	log  *slog.Logger
	kick chan struct{}
	run  runner

	pending                    atomic.Int64
	published, failures        atomic.Uint64
	descPending, descPublished *prometheus.Desc
	descFailures               *prometheus.Desc
}

// NewAuditPublisher returns an AuditPublisher; Start starts it. Errors
// wrap ErrOptions.
func NewAuditPublisher(o AuditOptions) (*AuditPublisher, error) {
	if o.Journal == nil || o.Publisher == nil || o.Topics.Events == "" {
		return nil, fmt.Errorf("%w: audit publisher needs a Journal, a Publisher and Topics", ErrOptions)
	}
	t, err := publishTiming{o.MinBackoff, o.MaxBackoff, o.PublishTimeout, o.Rescan}.withDefaults()
	if err != nil {
		return nil, err
	}
	o.MinBackoff, o.MaxBackoff, o.PublishTimeout, o.Rescan = t.MinBackoff, t.MaxBackoff, t.PublishTimeout, t.Rescan
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a := &AuditPublisher{opts: o, log: o.Logger.With("subsystem", "audit", "gateway", o.Topics.GatewayID),
		kick: make(chan struct{}, 1)}
	var l prometheus.Labels // none: the scrape target names the dock
	a.descPending = prometheus.NewDesc("gatewayd_audit_pending",
		"Audit records read from locks and not yet acknowledged by the broker, as of the last pass.", nil, l)
	a.descPublished = prometheus.NewDesc("gatewayd_audit_published_total",
		"Audit records published on the events topic and acknowledged by the broker (republications after a restart included).", nil, l)
	a.descFailures = prometheus.NewDesc("gatewayd_audit_publish_failures_total",
		"Failed publications of audit records (or of their removal from the database); each is retried after a backoff.", nil, l)
	return a, nil
}

// Kick asks for a pass soon; it never blocks (the scheduler's
// AuditOptions.OnEntries).
func (a *AuditPublisher) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Start publishes what is pending at once (records of before a restart
// included), then on each Kick, until ctx is done or Close. Errors wrap
// ErrStarted.
func (a *AuditPublisher) Start(ctx context.Context) error { return a.run.start(ctx, a.loop) }

// Close stops the publisher and waits for it. A publication in progress
// is abandoned; its record stays pending.
func (a *AuditPublisher) Close() { a.run.close() }

func (a *AuditPublisher) loop(ctx context.Context) {
	publishLoop{
		MinBackoff: a.opts.MinBackoff, MaxBackoff: a.opts.MaxBackoff, Rescan: a.opts.Rescan,
		Kick: a.kick, Log: a.log, Failures: &a.failures,
		Retrying: "audit record not published: retrying",
	}.run(ctx, a.pass)
}

// auditBatch is how many records one read of the database returns, and
// how many published records one write removes at most.
const auditBatch = 64

// pass publishes every pending record, oldest first per lock, stopping at
// the first failure; published records are removed every auditBatch and
// at the end (one write each).
func (a *AuditPublisher) pass(ctx context.Context) error {
	for {
		items, err := a.opts.Journal.AuditOutbox(ctx, auditBatch)
		if err != nil {
			return err
		}
		if len(items) < auditBatch {
			a.pending.Store(int64(len(items)))
		}
		var done []bonds.AuditItem
		for _, it := range items {
			m, err := NewAuditMessage(a.opts.Topics.GatewayID, it)
			if err != nil {
				a.log.Error("audit entry not decoded: published without its fields", "lock", it.LockID, "seq", it.Seq, "err", err)
			}
			err = publishAcked(ctx, a.opts.Publisher, a.opts.PublishTimeout, a.opts.Topics.Events, mustJSON(m))
			if err != nil {
				if aerr := a.ack(ctx, done); aerr != nil {
					a.log.Warn("published audit records not removed: they are published again", "records", len(done), "err", aerr)
				}
				return fmt.Errorf("publish audit record %d of lock %s: %w", it.Seq, it.LockID, err)
			}
			done = append(done, it)
		}
		if err := a.ack(ctx, done); err != nil {
			return err
		}
		if len(items) < auditBatch {
			return nil
		}
	}
}

// ack removes the published records from the database in one write.
func (a *AuditPublisher) ack(ctx context.Context, done []bonds.AuditItem) error {
	if len(done) == 0 {
		return nil
	}
	// Records the broker acknowledged are removed even while the
	// publisher closes, so a clean stop does not publish them again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.PublishTimeout)
	defer cancel()
	last := map[bonds.LockID]uint64{}
	var order []bonds.LockID
	for _, it := range done {
		if _, ok := last[it.LockID]; !ok {
			order = append(order, it.LockID)
		}
		last[it.LockID] = it.Seq
	}
	acks := make([]bonds.AuditAck, 0, len(order))
	for _, id := range order {
		acks = append(acks, bonds.AuditAck{LockID: id, Seq: last[id]})
	}
	if err := a.opts.Journal.AckAudit(ctx, acks); err != nil {
		return fmt.Errorf("remove %d published audit records: %w", len(done), err)
	}
	a.published.Add(uint64(len(done)))
	a.pending.Add(-int64(len(done)))
	if a.pending.Load() < 0 {
		a.pending.Store(0)
	}
	a.log.Debug("audit records published", "records", len(done))
	return nil
}

// Describe implements prometheus.Collector: gatewayd_audit_pending,
// published_total and publish_failures_total.
func (a *AuditPublisher) Describe(ch chan<- *prometheus.Desc) {
	ch <- a.descPending
	ch <- a.descPublished
	ch <- a.descFailures
}

// Collect implements prometheus.Collector.
func (a *AuditPublisher) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(a.descPending, prometheus.GaugeValue, float64(a.pending.Load()))
	ch <- prometheus.MustNewConstMetric(a.descPublished, prometheus.CounterValue, float64(a.published.Load()))
	ch <- prometheus.MustNewConstMetric(a.descFailures, prometheus.CounterValue, float64(a.failures.Load()))
}
