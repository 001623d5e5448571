package operator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/gatewayd/gatewayd/internal/backoff"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

// Defaults for the zero values of IntakeOptions and OutboxOptions.
const (
	DefaultConcurrency = 8
	DefaultMaxQueued   = 1000
	// DefaultMaxInflight is the MQTT packet identifier space: a broker
	// cannot have more QoS 1 messages unacknowledged on one connection.
	DefaultMaxInflight    = 65535
	DefaultPublishTimeout = 30 * time.Second
	DefaultNoticeRate     = 20  // rejection notices per second, sustained
	DefaultNoticeBurst    = 100 // rejection notices in a burst
)

// IntakeOptions configures NewIntake. Journal, Publisher and Topics are
// required; every other zero value is useful.
type IntakeOptions struct {
	Journal   Journal
	Publisher Publisher // for rejection notices
	Topics    Topics
	// Roots are the trusted fleet roots.
	Roots cred.Roots
	// CurrentRoots, if not nil, is asked for the trusted fleet roots at
	// each command instead of Roots: the daemon swaps them on a reload
	// (SIGHUP) without stopping the intake. It must be cheap and safe for
	// concurrent use, and the map it returns must not change.
	CurrentRoots func() cred.Roots
	// Revoked, if not nil, says whether the fleet revocation list revokes
	// a signer's credential kid, and the list's serial
	// ([Revocations.Revoked]): such a command is refused, signer_rejected.
	Revoked func(kid []byte) (serial uint64, revoked bool)
	// Now is the clock for validity and expiry checks (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger // nil discards
	// OnJournaled is called with each command newly journaled that is to
	// run (state received): the daemon passes the scheduler's Submit. It
	// is called before the message is acknowledged and must not block
	// for long.
	OnJournaled func(bonds.Entry)
	// OnArrival, if not nil, is called with each verified command that is
	// to run (state received), in delivery order, before its append
	// commits, and returns settle, which the intake calls as soon as the
	// append is decided: durable true if it committed the command as new,
	// false otherwise (a duplicate, a journal error until Close). A
	// command handed to OnArrival is not handed to OnJournaled. The
	// daemon passes the scheduler's SubmitEarly, which connects to the
	// lock while the append's fsync runs and sends the command only once
	// it is durable. It must not block for long.
	OnArrival func(bonds.Entry) (settle func(durable bool))
	// OnResult is called when the intake put a result in the outbox (a
	// command journaled as expired or rejected): the daemon passes the
	// Outbox's Kick.
	OnResult func()
	// Concurrency is how many messages are verified at once (default 8).
	// One goroutine journals the verified messages in delivery order, in
	// batches: everything verified while the previous batch committed
	// shares the next commit (one fsync).
	Concurrency int
	// MaxQueued bounds the QoS 0 messages (Ack nil) enqueued and not yet
	// released (default 1000). Beyond it a QoS 0 message is dropped and
	// counted: QoS 0 has no redelivery, and nothing waits for it.
	MaxQueued int
	// MaxInflight bounds the QoS 1 messages enqueued and not yet released
	// (default DefaultMaxInflight, which no broker can exceed on one
	// connection). A QoS 1 message is never dropped: PUBACKs are released
	// in order, so one left unacknowledged would hold back every later
	// one until a reconnect. Brokers do not reliably keep to their
	// in-flight window (mosquitto 2.0.11 sends up to
	// max_inflight_messages more after every PUBACK), so a flood arrives
	// here; a payload above command.MaxSignedSize is refused on arrival
	// and not kept, so the queue holds at most MaxInflight × 1 KiB. Beyond
	// MaxInflight a message is acknowledged and refused as "overloaded".
	MaxInflight int
	// PublishTimeout bounds the publication of one rejection notice
	// (default 30s).
	PublishTimeout time.Duration
	// NoticeRate and NoticeBurst rate-limit rejection notices (defaults
	// DefaultNoticeRate per second, DefaultNoticeBurst at once): a flood
	// of junk must not make the gateway wait for the broker's PUBACK of a
	// notice per message. A refusal beyond the limit is acknowledged
	// without a notice, logged (rate-limited) and counted in
	// gatewayd_intake_notices_suppressed_total.
	NoticeRate  float64
	NoticeBurst int

	// clock paces the notice limiter (nil: time.Now); a test seam, since
	// Now is the validity clock tests hold still.
	clock func() time.Time
}

// Causes of messages left unacknowledged (gatewayd_intake_unacked_total).
const (
	causeClosed = iota
	causeJournal
	causeNotice
	nCauses
)

var causeNames = [nCauses]string{"closed", "journal_error", "notice_unpublished"}

// Intake verifies, journals and acknowledges the messages of the command
// topic (see the package doc and docs/mqtt.md). Its methods are safe for
// concurrent use.
type Intake struct {
	opts IntakeOptions
	log  *slog.Logger

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []item
	nextSeq uint64
	// lastArrival is the arrival time given to the last message enqueued.
	lastArrival time.Time
	started     bool
	closed      bool
	cancel      context.CancelFunc
	wg          sync.WaitGroup

	// The sequencer: decisions of the workers, by seq, for the journaler,
	// which takes them in seq order from seqNext.
	seqMu       sync.Mutex
	seqCond     *sync.Cond
	decided     map[uint64]decision
	seqNext     uint64
	workersLeft int

	// Release of acknowledgements in enqueue order.
	relMu   sync.Mutex
	relNext uint64
	done    map[uint64]outcome

	depth, depth0, depth1          atomic.Int64 // all, QoS 0, QoS 1
	journaled, duplicates, refused atomic.Uint64
	qos0Dropped, suppressed        atomic.Uint64
	notices                        *bucket
	byReason                       map[Reason]*atomic.Uint64
	unacked                        [nCauses]atomic.Uint64

	descCommands, descRejected, descDepth, descUnacked *prometheus.Desc
	descDropped, descSuppressed                        *prometheus.Desc
}

type item struct {
	seq uint64
	msg Message
	// overload, when set, is the notice of a message refused on arrival
	// (oversized, or QoS 1 beyond MaxInflight), whose payload was not kept.
	overload *Rejected
}

// outcome is a decided message: before runs, then ack, in enqueue order.
// qos0 tells which depth it counted in.
type outcome struct {
	before, ack func()
	qos0        bool
}

// decision is what a worker decided about message seq, for the journaler:
// either nothing to journal (refused: its worker publishes the notice and
// releases it), or a command to journal and, if final is set, to move to
// that terminal state at once.
type decision struct {
	refused bool
	ack     func() // the message's Ack
	c       bonds.Command
	body    command.Body
	recv    time.Time
	final   bonds.State
	status  string
	detail  string
}

// NewIntake returns an Intake; Start starts it. Errors wrap ErrOptions.
func NewIntake(o IntakeOptions) (*Intake, error) {
	if o.Journal == nil || o.Publisher == nil || o.Topics.Rejected == "" {
		return nil, fmt.Errorf("%w: intake needs a Journal, a Publisher and Topics", ErrOptions)
	}
	if o.Concurrency < 0 || o.MaxQueued < 0 || o.MaxInflight < 0 || o.PublishTimeout < 0 {
		return nil, fmt.Errorf("%w: negative Concurrency, MaxQueued, MaxInflight or PublishTimeout", ErrOptions)
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxQueued == 0 {
		o.MaxQueued = DefaultMaxQueued
	}
	if o.PublishTimeout == 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.NoticeRate < 0 || o.NoticeBurst < 0 {
		return nil, fmt.Errorf("%w: negative NoticeRate or NoticeBurst", ErrOptions)
	}
	if o.NoticeRate == 0 {
		o.NoticeRate = DefaultNoticeRate
	}
	if o.NoticeBurst == 0 {
		o.NoticeBurst = DefaultNoticeBurst
	}
	if o.clock == nil {
		o.clock = time.Now
	}
	in := &Intake{opts: o, log: o.Logger.With("subsystem", "intake", "gateway", o.Topics.GatewayID),
		done: map[uint64]outcome{}, decided: map[uint64]decision{}, byReason: map[Reason]*atomic.Uint64{}}
	for _, r := range reasons {
		in.byReason[r] = new(atomic.Uint64)
	}
	in.notices = newBucket(o.NoticeRate, o.NoticeBurst, o.clock)
	in.cond = sync.NewCond(&in.mu)
	in.seqCond = sync.NewCond(&in.seqMu)
	in.initMetrics()
	return in, nil
}

// Enqueue hands over one message of the command topic. It never blocks.
// After Close the message is left unacknowledged and counted. Beyond
// MaxQueued a QoS 0 message (Ack nil) is dropped and counted, and a QoS 1
// message is acknowledged and refused as overloaded (see
// IntakeOptions.MaxQueued). Messages may be enqueued before Start.
func (in *Intake) Enqueue(m Message) {
	in.mu.Lock()
	defer in.mu.Unlock()
	qos0 := m.Ack == nil
	if m.ReceivedAt.IsZero() {
		m.ReceivedAt = in.opts.Now()
	}
	var overload *Rejected
	switch {
	case in.closed:
		in.unacked[causeClosed].Add(1)
		return
	case qos0 && in.depth0.Load() >= int64(in.opts.MaxQueued):
		in.qos0Dropped.Add(1)
		in.log.Warn("intake queue full: QoS 0 message dropped (send commands with QoS 1)",
			"max_queued", in.opts.MaxQueued, "payload_size", len(m.Payload))
		return
	case !qos0 && in.depth1.Load() >= int64(in.opts.MaxInflight):
		// Not dropped: that would hold back every later PUBACK. Its
		// payload is not kept, only what the notice needs.
		n := newRejected(ReasonOverloaded, fmt.Sprintf("more than %d QoS 1 messages in flight; send again", in.opts.MaxInflight),
			m.Payload, nil, m.ReceivedAt)
		overload = &n
		m.Payload = nil
	case len(m.Payload) > command.MaxSignedSize:
		// Refused at once, and the payload not kept: the queue holds
		// nothing larger than a command.
		n := newRejected(ReasonOversized, fmt.Sprintf("payload of %d bytes, limit %d", len(m.Payload), command.MaxSignedSize),
			m.Payload, nil, m.ReceivedAt)
		overload = &n
		m.Payload = nil
	}
	// The arrival time orders the journal (bonds.DB.AppendBatch): strictly
	// increasing in delivery order, even when the clock is coarse or
	// steps back.
	if m.ReceivedAt.IsZero() {
		m.ReceivedAt = in.opts.Now()
	}
	if !m.ReceivedAt.After(in.lastArrival) {
		m.ReceivedAt = in.lastArrival.Add(time.Nanosecond)
	}
	in.lastArrival = m.ReceivedAt
	in.queue = append(in.queue, item{seq: in.nextSeq, msg: m, overload: overload})
	in.nextSeq++
	in.depth.Add(1)
	if qos0 {
		in.depth0.Add(1)
	} else {
		in.depth1.Add(1)
	}
	in.cond.Signal()
}

// Start starts Concurrency workers, which verify messages, and the
// journaler, which journals them in enqueue order. They stop when ctx is
// done or Close is called. Errors wrap ErrStarted.
func (in *Intake) Start(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.started || in.closed {
		return ErrStarted
	}
	in.started = true
	run, cancel := context.WithCancel(ctx)
	in.cancel = cancel
	// Appends run to completion even while stopping: an append whose
	// caller gave up may still commit, and then its message would be
	// acknowledged only as a duplicate after a restart.
	journal := context.WithoutCancel(ctx)
	in.seqMu.Lock()
	in.workersLeft = in.opts.Concurrency
	in.seqMu.Unlock()
	in.wg.Add(in.opts.Concurrency + 2)
	for range in.opts.Concurrency {
		go in.worker(run, journal)
	}
	go in.journaler(run, journal)
	go func() {
		defer in.wg.Done()
		<-run.Done()
		in.stop()
	}()
	return nil
}

// stop makes the workers return after their current message. Messages
// still queued are left unacknowledged: the broker redelivers them.
func (in *Intake) stop() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return
	}
	in.closed = true
	in.unacked[causeClosed].Add(uint64(len(in.queue)))
	for _, it := range in.queue {
		in.undepth(it.msg.Ack == nil)
	}
	in.queue = nil
	in.cond.Broadcast()
}

// undepth counts a message out of the depths.
func (in *Intake) undepth(qos0 bool) {
	in.depth.Add(-1)
	if qos0 {
		in.depth0.Add(-1)
	} else {
		in.depth1.Add(-1)
	}
}

// Close stops the intake and waits for its goroutines: messages being
// journaled finish (and are acknowledged, in order), rejection notices
// being published are abandoned (their messages stay unacknowledged), and
// queued messages are left unacknowledged.
func (in *Intake) Close() {
	in.stop()
	in.mu.Lock()
	cancel := in.cancel
	in.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	in.wg.Wait()
}

func (in *Intake) next() (item, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for len(in.queue) == 0 && !in.closed {
		in.cond.Wait()
	}
	if in.closed {
		return item{}, false
	}
	it := in.queue[0]
	in.queue[0] = item{}
	in.queue = in.queue[1:]
	return it, true
}

// worker decides messages: it verifies each and hands it to the
// journaler through the sequencer, or refuses it (publishes its notice and
// releases it) without waiting for the journaler.
func (in *Intake) worker(ctx, journal context.Context) {
	defer in.wg.Done()
	defer func() {
		in.seqMu.Lock()
		in.workersLeft--
		in.seqCond.Broadcast()
		in.seqMu.Unlock()
	}()
	for {
		it, ok := in.next()
		if !ok {
			return
		}
		in.handle(ctx, journal, it)
	}
}

// decide records the decision about message seq for the journaler.
func (in *Intake) decide(seq uint64, d decision) {
	in.seqMu.Lock()
	in.decided[seq] = d
	in.seqCond.Broadcast()
	in.seqMu.Unlock()
}

// nextBatch waits for the decision about message seqNext and returns it
// with every decision that follows it without a gap, in seq order. It
// returns the seq of the first, and nil once the workers have stopped and
// nothing is left.
func (in *Intake) nextBatch() (uint64, []decision) {
	in.seqMu.Lock()
	defer in.seqMu.Unlock()
	for {
		if _, ok := in.decided[in.seqNext]; ok || in.workersLeft == 0 {
			break
		}
		in.seqCond.Wait()
	}
	first := in.seqNext
	var batch []decision
	for {
		d, ok := in.decided[in.seqNext]
		if !ok {
			return first, batch
		}
		delete(in.decided, in.seqNext)
		in.seqNext++
		batch = append(batch, d)
	}
}

// journaler journals the decided messages in enqueue order, in batches:
// it waits for the next message's decision, then appends that message
// and every one decided after it without a gap (everything decided while
// the previous batch committed) in one Journal.AppendBatch, and only then
// takes the next batch. A batch commits whole, and after every earlier
// one: whatever a crash keeps of the journal is a prefix of the delivery
// order, and a redelivered message is never journaled after a later one.
// It returns once the workers have stopped and their decisions are
// journaled.
func (in *Intake) journaler(ctx, journal context.Context) {
	defer in.wg.Done()
	for {
		first, batch := in.nextBatch()
		if batch == nil {
			return
		}
		in.journalBatch(ctx, journal, batch, first)
	}
}

// journalBatch appends the commands of batch (whose first message is
// seq first) and releases them in seq order. Refused messages are skipped:
// their workers release them.
func (in *Intake) journalBatch(ctx, journal context.Context, batch []decision, first uint64) {
	var arrivals []bonds.Arrival
	var settles []func(bool) // of arrivals, nil where not handed to OnArrival
	for _, d := range batch {
		if d.refused {
			continue
		}
		arrivals = append(arrivals, bonds.Arrival{Command: d.c, ReceivedAt: d.recv})
		var settle func(bool)
		if d.final == "" && in.opts.OnArrival != nil {
			// As AppendBatch will write it.
			settle = in.opts.OnArrival(bonds.Entry{Command: d.c, ReceivedAt: d.recv.Round(0).UTC(),
				UpdatedAt: d.recv.Round(0).UTC(), State: bonds.StateReceived})
		}
		settles = append(settles, settle)
	}
	if len(arrivals) == 0 {
		return
	}
	// A batch that cannot be journaled (a disk error) is tried again
	// until it is, or until Close: moving on would journal later commands
	// before it, and the broker would redeliver it after them. Meanwhile
	// nothing after it is acknowledged.
	entries, errs, err := in.appendBatch(journal, arrivals)
	for attempt := 1; err != nil; attempt++ {
		in.unacked[causeJournal].Add(1)
		wait := journalRetry(attempt)
		in.log.Error("batch not journaled: retrying before any later command; nothing after it is acknowledged",
			"commands", len(arrivals), "attempt", attempt, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		if ctx.Err() != nil {
			in.log.Error("batch not journaled at close: its commands are left unacknowledged for redelivery",
				"commands", len(arrivals))
			break
		}
		entries, errs, err = in.appendBatch(journal, arrivals)
	}
	// Durable or not, the commands handed early learn it at once, before
	// the release (which may wait for an earlier refusal's notice).
	for i, settle := range settles {
		if settle != nil {
			settle(err == nil && errs[i] == nil)
		}
	}
	i := 0
	for k, d := range batch {
		if d.refused {
			continue
		}
		var ack bool
		var before, after func()
		if err == nil {
			ack, before, after = in.journaled1(ctx, journal, d, entries[i], errs[i])
			if settles[i] != nil && errs[i] == nil {
				before = nil // handed on already (OnArrival)
			}
		}
		i++
		in.release(first+uint64(k), ack, before, d.ack)
		if after != nil {
			// Not in the journaler's way: a slow broker must not hold up
			// the next batch.
			in.wg.Add(1)
			go func() {
				defer in.wg.Done()
				after()
			}()
		}
	}
}

// appendBatch is Journal.AppendBatch, with a malformed answer as an error.
func (in *Intake) appendBatch(ctx context.Context, arrivals []bonds.Arrival) ([]bonds.Entry, []error, error) {
	entries, errs, err := in.opts.Journal.AppendBatch(ctx, arrivals)
	if err == nil && (len(entries) != len(arrivals) || len(errs) != len(arrivals)) {
		err = fmt.Errorf("journal returned %d entries and %d errors for %d commands", len(entries), len(errs), len(arrivals))
	}
	return entries, errs, err
}

// journalRetry is the wait before the attempt-th retry of a batch: from
// 100 ms doubling to 1 s, jittered to between half and all of it. Short:
// the commands wait unacknowledged, and must go on within about a second
// of the disk's recovery.
func journalRetry(attempt int) time.Duration {
	return backoff.Delay(100*time.Millisecond, time.Second, attempt-1)
}

// release records the outcome of message seq and calls, in enqueue order,
// the before hook and then the Ack of every message whose outcome is known
// and whose predecessors are all released. ack false leaves the message
// unacknowledged. The before hooks hand journaled commands to the
// scheduler, which therefore gets them in the order the broker delivered
// them, whatever order their verifications finished in: a lock's
// commands then run in their signers' counter order.
func (in *Intake) release(seq uint64, ack bool, before, fn func()) {
	in.relMu.Lock()
	defer in.relMu.Unlock()
	qos0 := fn == nil
	if !ack {
		fn = nil
	}
	in.done[seq] = outcome{before: before, ack: fn, qos0: qos0}
	for {
		o, ok := in.done[in.relNext]
		if !ok {
			return
		}
		delete(in.done, in.relNext)
		in.relNext++
		in.undepth(o.qos0)
		if o.before != nil {
			o.before()
		}
		if o.ack != nil {
			o.ack()
		}
	}
}

// handle decides one message: a refusal is recorded as such for the
// journaler, then its notice is published and the message released; a
// command to journal is handed to the journaler.
func (in *Intake) handle(ctx, journal context.Context, it item) {
	m := it.msg
	if it.overload != nil {
		in.decide(it.seq, decision{refused: true})
		ok := in.refuseNotice(ctx, *it.overload, unverified)
		in.release(it.seq, ok, nil, m.Ack)
		return
	}
	refuse := func(p []byte, recv time.Time, reason Reason, detail string, body *command.Body) {
		in.decide(it.seq, decision{refused: true})
		ok := in.refuseNotice(ctx, newRejected(reason, detail, p, body, recv), in.claimedSigner(p))
		in.release(it.seq, ok, nil, m.Ack)
	}
	recv := m.ReceivedAt
	if recv.IsZero() {
		recv = in.opts.Now()
	}
	p := m.Payload
	if len(p) > command.MaxSignedSize {
		refuse(p, recv, ReasonOversized, fmt.Sprintf("payload of %d bytes, limit %d", len(p), command.MaxSignedSize), nil)
		return
	}
	body, err := command.Peek(p)
	if err != nil {
		refuse(p, recv, ReasonMalformed, err.Error(), nil)
		return
	}
	if body.Op == command.OpEnterDFU {
		refuse(p, recv, ReasonUnsupported, "enter-dfu is not carried by this gateway: it does not serve the lock's bootloader yet (docs/dfu.md)", &body)
		return
	}
	v := command.Verifier{Roots: in.roots(), LockID: body.LockID, Now: in.opts.Now}
	ver, err := v.Verify(p, body.Op)
	c := bonds.Command{ID: body.CommandID, LockID: body.LockID, Operation: body.Op.String(),
		NotAfter: body.NotAfter, Payload: bytes.Clone(p)}
	var final bonds.State
	var status, detail string
	if err == nil && ver.Signer != nil && in.opts.Revoked != nil {
		if serial, revoked := in.opts.Revoked(ver.Signer.KID); revoked {
			// Like any other refused signer: not journaled, so the
			// command never reaches a lock (which would refuse it too).
			refuse(p, recv, ReasonSignerRejected, fmt.Sprintf("%v credential %q is revoked by the fleet revocation list %d",
				ver.Signer.Kind, ver.Signer.Subject, serial), &body)
			return
		}
	}
	switch {
	case err == nil:
		c.Operator = signerName(ver)
		if seen, ok := in.counter(journal, c.LockID, ver.SignerKey); ok && ver.Counter <= seen {
			final, status = bonds.StateRejected, StatusReplay
			detail = fmt.Sprintf("counter %d, the lock already accepted %d from this signer", ver.Counter, seen)
		}
	case errors.Is(err, command.ErrExpired):
		// Verify's last step: the signature verified, the command is
		// authentic, and it is journaled so that it gets its one result.
		c.Operator = in.expiredSigner(p, body)
		final, status, detail = bonds.StateExpired, StatusExpired, err.Error()
	default:
		refuse(p, recv, reasonOf(err), err.Error(), &body)
		return
	}
	in.decide(it.seq, decision{ack: m.Ack, c: c, body: body, recv: recv, final: final, status: status, detail: detail})
}

// journaled1 handles the outcome of the append of one command of a batch
// (e, err): if it was journaled and d.final is set, it moves it there at
// once. ack reports whether the message may be acknowledged; before, if
// not nil, runs in enqueue order just before the Ack (handing the command
// on); after, if not nil, runs once it was released (a best-effort
// notice).
func (in *Intake) journaled1(ctx, journal context.Context, d decision, e bonds.Entry, err error) (ack bool, before, after func()) {
	c, body, recv, final, status, detail := d.c, &d.body, d.recv, d.final, d.status, d.detail
	log := in.log.With("command_id", c.ID, "lock_id", c.LockID, "op", c.Operation, "operator", c.Operator)
	switch {
	case errors.Is(err, bonds.ErrDuplicate):
		in.duplicates.Add(1)
		in.byReason[ReasonDuplicate].Add(1)
		d := "command ID already journaled: its result is on the result topic"
		if !bytes.Equal(e.Payload, c.Payload) {
			d = "command ID already journaled with a different payload: its result is on the result topic"
		}
		log.Info("duplicate command acknowledged", "state", e.State)
		n := newRejected(ReasonDuplicate, d, c.Payload, body, recv)
		n.State = e.State
		return true, nil, func() { _ = in.notify(ctx, n) }
	case err != nil:
		in.unacked[causeJournal].Add(1)
		log.Error("command not journaled: left unacknowledged for redelivery", "err", err)
		return false, nil, nil
	}
	in.journaled.Add(1)
	if final == "" {
		log.Info("command journaled")
		return true, in.submit(e), nil
	}
	log.Info("command journaled and refused", "state", final, "status", status, "detail", detail)
	_, err = in.opts.Journal.Transition(journal, c.ID, final, func(e *bonds.Entry) {
		e.Result = &bonds.Result{Status: status, Detail: detail}
	})
	if err != nil {
		// The entry is durable in state received: hand it to the scheduler,
		// which refuses it in its turn (as it would after a restart).
		log.Error("journaled command not moved to its final state: handed to the scheduler", "state", final, "err", err)
		return true, in.submit(e), nil
	}
	return true, in.opts.OnResult, nil
}

// submit returns the hook that hands e to the scheduler.
func (in *Intake) submit(e bonds.Entry) func() {
	if in.opts.OnJournaled == nil {
		return nil
	}
	return func() { in.opts.OnJournaled(e) }
}

// unverified is the signer logged for a refusal whose credential does not
// chain to a trusted root (or that has none): whatever it claims is the
// sender's choice, so it is not a key of the log's rate limit.
const unverified = "unverified"

// roots are the fleet roots trusted now (IntakeOptions.CurrentRoots).
func (in *Intake) roots() cred.Roots {
	if in.opts.CurrentRoots != nil {
		return in.opts.CurrentRoots()
	}
	return in.opts.Roots
}

// claimedSigner names the signer p claims, for the log: see
// command.Verifier.Signer; unverified if its credential is not of a
// trusted root.
func (in *Intake) claimedSigner(p []byte) string {
	v := command.Verifier{Roots: in.roots()}
	if name, ok := v.Signer(p); ok {
		return name
	}
	return unverified
}

// refuseNotice counts and logs a refusal of input that is not
// journaled and publishes its notice n, and reports whether the message
// may be acknowledged: the broker acknowledged the notice, or the notice
// was suppressed by the rate limit (NoticeRate). The log line carries
// reason and signer, which key internal/ratelog's limit: the first
// refusal of each reason by each signer is logged every minute, however
// many others there are; reason_total counts that reason since start.
func (in *Intake) refuseNotice(ctx context.Context, n Rejected, signer string) bool {
	in.refused.Add(1)
	total := in.byReason[n.Reason].Add(1)
	notice := in.notices.take()
	in.log.Warn("command refused", "reason", n.Reason, "signer", signer, "reason_total", total,
		"detail", n.Detail, "command_id", n.CommandID, "lock_id", n.LockID, "op", n.Operation,
		"payload_size", n.PayloadSize, "notice", notice)
	if !notice {
		// Rate-limited (a flood): acknowledged without a notice, counted.
		in.suppressed.Add(1)
		return true
	}
	if err := in.notify(ctx, n); err != nil {
		in.unacked[causeNotice].Add(1)
		return false
	}
	return true
}

// notify publishes n on the rejected topic.
func (in *Intake) notify(ctx context.Context, n Rejected) error {
	ctx, cancel := context.WithTimeout(ctx, in.opts.PublishTimeout)
	defer cancel()
	err := in.opts.Publisher.Publish(ctx, in.opts.Topics.Rejected, mustJSON(n), false)
	if err != nil {
		in.log.Warn("rejection notice not published", "reason", n.Reason, "command_id", n.CommandID, "err", err)
	}
	return err
}

// counter returns the highest counter the lock is known to have accepted
// from signer, if any. A lock the gateway does not know has none; a read
// error skips the check (the lock makes it anyway).
func (in *Intake) counter(ctx context.Context, id bonds.LockID, signer string) (uint64, bool) {
	l, err := in.opts.Journal.Lock(ctx, id)
	if err != nil {
		if !errors.Is(err, bonds.ErrNotFound) {
			in.log.Warn("lock record not read: counter check skipped", "lock_id", id, "err", err)
		}
		return 0, false
	}
	n, ok := l.Counters[signer]
	return n, ok
}

// expiredSigner names the signer of an authentic but expired command: it
// verifies the same bytes again on a clock just before their not-after
// time. "" if that fails (the credential was not valid yet then).
func (in *Intake) expiredSigner(p []byte, body command.Body) string {
	at := body.NotAfter.Add(-time.Second)
	v := command.Verifier{Roots: in.roots(), LockID: body.LockID, Now: func() time.Time { return at }}
	ver, err := v.Verify(p, body.Op)
	if err != nil {
		return ""
	}
	return signerName(ver)
}

// signerName is the operator of a verified command: its credential's
// subject, or "root:<kid hex>" for the fleet root.
func signerName(v *command.Verified) string {
	if v.Signer != nil {
		return v.Signer.Subject
	}
	return v.SignerKey
}

// reasonOf maps a refusal of Verify (other than expiry) to its reason.
func reasonOf(err error) Reason {
	switch {
	case errors.Is(err, command.ErrSignerRejected):
		return ReasonSignerRejected
	case errors.Is(err, command.ErrBadSignature):
		return ReasonBadSignature
	case errors.Is(err, command.ErrForbidden):
		return ReasonForbidden
	}
	// ErrMalformed, ErrUnknownOp; ErrWrongLock cannot happen (the verifier
	// takes the lock ID from the body).
	return ReasonMalformed
}

// bucket is a token bucket: take succeeds at most burst times at once and
// rate times a second on average.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newBucket(rate float64, burst int, now func() time.Time) *bucket {
	return &bucket{rate: rate, burst: float64(burst), tokens: float64(burst), now: now, last: now()}
}

func (b *bucket) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.now()
	if el := t.Sub(b.last); el > 0 {
		b.tokens = min(b.burst, b.tokens+el.Seconds()*b.rate)
	}
	b.last = t
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
