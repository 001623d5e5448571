package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/internal/backoff"
)

// journalTimeout bounds one journal write. Journal writes run on a context
// that Close does not cancel: a result the lock gave is recorded even
// while the scheduler stops.
const journalTimeout = 30 * time.Second

// maxTransitions bounds the transitions of one journal write (admitting a
// large backlog takes several).
const maxTransitions = 256

// StatusLinkError is the result status of a command failed by a link
// error that is not retryable (the lock's own refusals carry its status
// names: "forbidden", "replay", ...).
const StatusLinkError = "link_error"

// warnAfter is the number of consecutive retryable link errors of a lock
// after which one Warn line says it is unreachable (the others are Debug).
const warnAfter = 3

// Scheduler carries journaled commands to locks: see the package doc.
type Scheduler struct {
	opts      Options
	log       *slog.Logger
	met       *metrics
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	connect   *pool         // the connect slot: one Dial at a time, granted by priority
	slots     *pool         // session slots: MaxSessions, granted by priority
	active    atomic.Int64  // open sessions
	steps     atomic.Uint64 // steps made: admissions, attempts begun, link errors, journal writes (Progress)
	startedAt time.Time     // s.now() at Start: entries received before it are resumed (job.resumed)

	mu      sync.Mutex
	started bool
	closed  bool
	stopCtx func() bool // stops the AfterFunc of Start's ctx
	inbox   []bonds.Entry
	wakeIn  chan struct{} // cap 1: inbox has entries
	rescan  chan struct{} // cap 1: a job was dropped; read the journal again soon
	known   map[bonds.CommandID]bool
	gates   map[bonds.CommandID]*gate // entries submitted early, not yet admitted (SubmitEarly)
	locks   map[bonds.LockID]*lockQueue
	audited map[bonds.LockID]time.Time // when each lock's audit log was last read (AuditOptions)
	noAudit map[bonds.LockID]time.Time // when each lock last refused read-audit

	auditSlot chan struct{} // cap 1: one audit-only session at a time
}

// job is one admitted command.
type job struct {
	id       bonds.CommandID
	lock     bonds.LockID
	op       command.Op
	payload  []byte
	received time.Time
	deadline time.Time // zero: none
	running  bool      // an attempt is on its way (guarded by Scheduler.mu)
	enqueued time.Time // monotonic: when it entered its lock's queue (for ageing)

	// The journal holds a command as it arrived (received; queued or
	// running only if an older version or a test wrote that) until its
	// outcome: admission, each attempt and a retryable failure are kept
	// in memory, and the outcome is written with them in one write
	// (outcome). Owned by the lock's worker once enqueued.
	state    bonds.State // the entry's state in the journal
	attempts int         // attempts begun and not yet written
	resumed  bool        // received before Start: an attempt before the restart is not counted
	// gate, if not nil, is the append of an entry submitted before it
	// committed (SubmitEarly): nothing is sent or written for j before
	// it opens durable.
	gate *gate
}

// gate is the journal append of an entry submitted early: open once the
// append is decided, ok if it committed the entry as new.
type gate struct {
	done chan struct{}
	ok   bool // written before done is closed
}

// lockQueue is one lock's FIFO of jobs, owned by one worker goroutine.
// Only the worker removes jobs or changes failures, lastErr, failedAt and
// notBefore; admission appends jobs under Scheduler.mu.
type lockQueue struct {
	id   bonds.LockID
	jobs []*job
	wake chan struct{} // cap 1: Wake

	failures  int       // consecutive retryable link errors
	lastErr   error     // the last link error, for expiry details
	failedAt  time.Time // monotonic: when the last retryable link error happened
	notBefore time.Time // monotonic: no connect before

	audit   bool          // a read of the lock's audit log is wanted (guarded by Scheduler.mu)
	jobIn   chan struct{} // cap 1, or nil: a job was enqueued (for a worker waiting to read the audit log)
	heardAt time.Time     // monotonic: the last Wake (guarded by Scheduler.mu)
}

// New returns a scheduler; Start starts it.
func New(opts Options) (*Scheduler, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scheduler{
		opts:    o,
		log:     o.Logger.With("subsystem", "fleet"),
		ctx:     ctx,
		cancel:  cancel,
		connect: newPool(1),
		slots:   newPool(o.MaxSessions),
		wakeIn:  make(chan struct{}, 1),
		rescan:  make(chan struct{}, 1),
		known:   map[bonds.CommandID]bool{},
		gates:   map[bonds.CommandID]*gate{},
		locks:   map[bonds.LockID]*lockQueue{},
		audited: map[bonds.LockID]time.Time{},
		noAudit: map[bonds.LockID]time.Time{},

		auditSlot: make(chan struct{}, 1),
	}
	s.met = newMetrics(s)
	return s, nil
}

func (s *Scheduler) now() time.Time { return s.opts.Now() }

// Start loads the journal's pending entries (received, queued, and running
// ones, which a crash interrupted) and starts carrying them and everything
// submitted to their locks. The scheduler runs until Close or until ctx
// ends.
func (s *Scheduler) Start(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case s.started:
		s.mu.Unlock()
		return ErrStarted
	}
	s.started = true
	s.startedAt = s.now()
	s.mu.Unlock()
	pending, err := s.opts.Journal.Pending(ctx)
	if err != nil {
		s.mu.Lock()
		s.started = false
		s.mu.Unlock()
		return fmt.Errorf("fleet: start: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	for _, e := range pending {
		if !s.known[e.ID] {
			s.known[e.ID] = true
			s.inbox = append(s.inbox, e)
		}
	}
	s.stopCtx = context.AfterFunc(ctx, s.cancel)
	s.wg.Add(2)
	go s.intake()
	go s.rescanner()
	if s.opts.Audit.Store != nil && s.opts.Audit.Heard != nil {
		s.wg.Add(1)
		go s.auditScheduler()
	}
	s.signal(s.wakeIn)
	s.log.Info("scheduler started", "resumed", len(pending))
	return nil
}

// Submit hands the scheduler an entry just appended to the journal. It
// never blocks on I/O. An entry already known (submitted, or resumed by
// Start) is ignored, as is anything after Close.
func (s *Scheduler) Submit(e bonds.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.known[e.ID] || e.State.Terminal() {
		return
	}
	s.known[e.ID] = true
	s.met.received.WithLabelValues(opLabel(e.Operation)).Inc()
	s.inbox = append(s.inbox, e)
	s.signal(s.wakeIn)
}

// SubmitEarly hands the scheduler an entry (state received) whose append
// to the journal has not committed yet, and returns settle, which the
// caller must call once the append is decided: durable true if it
// committed the entry as new, false otherwise (a duplicate, a failed
// write given up at close). Meanwhile the scheduler admits the entry and
// may connect to its lock and run the handshake, which need no
// durability, but sends nothing to the lock and writes nothing about it:
// a command reaches a lock only once journaled, as with Submit. An entry
// not durable is dropped. It never blocks on I/O; an entry already known
// (and anything after Close) is ignored, with a settle that does nothing.
// The daemon passes it as the intake's OnArrival: the connection is made
// while the append's fsync runs instead of after it.
func (s *Scheduler) SubmitEarly(e bonds.Entry) (settle func(durable bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.known[e.ID] || e.State.Terminal() {
		return func(bool) {}
	}
	g := &gate{done: make(chan struct{})}
	s.known[e.ID] = true
	s.gates[e.ID] = g
	s.inbox = append(s.inbox, e)
	s.signal(s.wakeIn)
	var once sync.Once
	return func(durable bool) {
		once.Do(func() {
			if durable { // journaled as new: received, as Submit counts it
				s.met.received.WithLabelValues(opLabel(e.Operation)).Inc()
			}
			g.ok = durable
			close(g.done)
		})
	}
}

// durable waits until j's append is decided (at once for an entry not
// submitted early) and reports whether it committed. False also when the
// scheduler closes first (the entry, if it committed, stays pending for
// the next Start).
func (s *Scheduler) durable(j *job) bool {
	if j.gate == nil {
		return true
	}
	select {
	case <-j.gate.done:
		if j.gate.ok {
			j.gate = nil
		}
		return j.gate == nil
	case <-s.ctx.Done():
		return false
	}
}

// drop forgets j, removed from its queue, whose append did not commit as
// new (or the scheduler closes): nothing was sent or written for it.
func (s *Scheduler) drop(j *job) {
	s.forget(j.id)
	s.steps.Add(1)
	if s.ctx.Err() == nil {
		s.log.Debug("command submitted early not journaled as new: dropped", "command", j.id, "lock", j.lock)
	}
}

// Wake tells the scheduler that a lock was just heard advertising (the
// daemon calls it for every advertisement). A lock that waits in backoff
// after link errors, and was heard since its last failure, connects
// HeardRetry after that failure (at once if that has passed) instead of
// waiting out a backoff grown long by repeated radio faults; a lock that
// is not heard keeps its backoff. Wake is cheap: a map lookup.
func (s *Scheduler) Wake(lock bonds.LockID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lq := s.locks[lock]; lq != nil {
		lq.heardAt = time.Now()
		s.signal(lq.wake)
	}
}

// Close stops the scheduler and waits for every goroutine it started.
// Requests in flight are abandoned: their entries stay pending in the
// journal, and the next Start sends them again (the lock deduplicates). A
// result already received is still written.
func (s *Scheduler) Close() error {
	s.mu.Lock()
	s.closed = true
	stop := s.stopCtx
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.cancel()
	s.wg.Wait()
	return nil
}

func (s *Scheduler) signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// jctx returns a context for one journal write.
func (s *Scheduler) jctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(s.ctx), journalTimeout)
}

// intake admits submitted entries into their lock's queue.
func (s *Scheduler) intake() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.wakeIn:
		}
		s.mu.Lock()
		batch := s.inbox
		s.inbox = nil
		s.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		slices.SortStableFunc(batch, func(a, b bonds.Entry) int { return a.ReceivedAt.Compare(b.ReceivedAt) })
		jobs := s.admit(batch)
		s.mu.Lock()
		for _, j := range jobs {
			if j != nil {
				s.enqueue(j)
			}
		}
		s.mu.Unlock()
	}
}

// admit returns the jobs of the entries of batch, in batch order; an entry
// it finishes instead (unknown operation, already expired) has a nil job.
// Admission writes nothing (the entry stays as the journal has it, which
// recovery treats alike: see outcome); the entries it finishes are written
// in one journal write.
func (s *Scheduler) admit(batch []bonds.Entry) []*job {
	jobs := make([]*job, len(batch))
	var w writes
	s.steps.Add(1)
	for i, e := range batch {
		s.mu.Lock()
		g := s.gates[e.ID]
		delete(s.gates, e.ID)
		s.mu.Unlock()
		e, ok := s.fresh(e)
		if !ok {
			continue
		}
		op, ok := command.ParseOp(e.Operation)
		if !ok {
			// What admission writes waits for the append (rare: the
			// intake verified the command).
			if j := (&job{id: e.ID, lock: e.LockID, gate: g}); !s.durable(j) {
				s.drop(j)
				continue
			}
			err := fmt.Errorf("%w %q", ErrUnknownOperation, e.Operation)
			w.add(s.terminalReq(e.ID, e.LockID, e.Operation, e.ReceivedAt, bonds.StateRejected, command.StatusUnknownOp.String(), err.Error(), nil))
			continue
		}
		j := &job{id: e.ID, lock: e.LockID, op: op, payload: e.Payload, received: e.ReceivedAt, deadline: e.NotAfter,
			state: e.State, resumed: e.ReceivedAt.Before(s.startedAt), gate: g}
		if j.deadline.IsZero() {
			j.deadline = e.ReceivedAt.Add(s.opts.MaxAge)
		}
		if s.overdue(j) {
			if !s.durable(j) {
				s.drop(j)
				continue
			}
			w.add(s.expireReq(j, nil))
			continue
		}
		jobs[i] = j
		if e.State == bonds.StateRunning {
			s.log.Info("resuming an interrupted command", "command", e.ID, "lock", e.LockID, "op", e.Operation)
		}
	}
	s.write(&w)
	return jobs
}

// fresh reads e back from the journal, and reports whether it is still
// pending. An entry submitted again (by the rescanner, which read it
// pending just before it finished) must not run again once finished and
// forgotten: that would send it to the lock again (which would answer
// duplicate_command) and have its second outcome refused. A finished entry
// is forgotten again. A read error keeps e: its outcome write would refuse
// it if it has finished.
func (s *Scheduler) fresh(e bonds.Entry) (bonds.Entry, bool) {
	ctx, cancel := s.jctx()
	cur, err := s.opts.Journal.Entry(ctx, e.ID)
	cancel()
	switch {
	case err != nil:
		return e, true
	case cur.State.Terminal():
		s.forget(e.ID)
		return cur, false
	}
	return cur, true
}

// writes are journal transitions to make in one write, each with what
// to do with its outcome (nil: nothing).
type writes struct {
	reqs []bonds.TransitionReq
	done []func(bonds.Entry, error)
}

func (w *writes) add(r bonds.TransitionReq, done func(bonds.Entry, error)) {
	w.reqs = append(w.reqs, r)
	w.done = append(w.done, done)
}

// write makes w's transitions, in order, in one journal write (one
// TransitionBatch, maxTransitions at most per write), and hands each its
// outcome: the entry, or the item's own error (ErrNotFound,
// ErrBadTransition: retrying cannot help).
//
// A write that fails as a whole (a full or read-only disk, EPERM, EIO, a
// write that timed out) is tried again, after a short backoff
// (writeRetryMin doubling to writeRetryMax), until it is written: the
// jobs stay owned by their worker (and a lock's later commands wait behind
// them, in order), and every command goes on within about writeRetryMax of
// the disk's recovery. Only a closed journal, or the scheduler closing,
// ends the retries; the whole write's error then goes to every item, and
// their entries stay pending in the journal for the next Start.
func (s *Scheduler) write(w *writes) {
	for len(w.reqs) > 0 {
		n := min(len(w.reqs), maxTransitions)
		reqs, done := w.reqs[:n], w.done[:n]
		w.reqs, w.done = w.reqs[n:], w.done[n:]
		entries, errs, err := s.writeRetrying(reqs)
		for i, d := range done {
			if d == nil {
				continue
			}
			if err != nil {
				d(bonds.Entry{}, err)
			} else {
				d(entries[i], errs[i])
			}
		}
	}
}

// Retries of a journal write that failed as a whole: see write.
const (
	writeRetryMin = 50 * time.Millisecond
	writeRetryMax = time.Second
)

// writeRetrying is one TransitionBatch, tried again until it is written
// (see write).
func (s *Scheduler) writeRetrying(reqs []bonds.TransitionReq) ([]bonds.Entry, []error, error) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := s.jctx()
		entries, errs, err := s.opts.Journal.TransitionBatch(ctx, reqs)
		cancel()
		if err == nil && (len(entries) != len(reqs) || len(errs) != len(reqs)) {
			err = fmt.Errorf("fleet: journal answered %d entries and %d errors for %d transitions", len(entries), len(errs), len(reqs))
		}
		if err == nil {
			s.steps.Add(1)
			if attempt > 0 {
				s.resolve(reqs, entries, errs)
				s.log.Info("journal writable again; commands go on", "transitions", len(reqs), "tries", attempt+1)
			}
			return entries, errs, nil
		}
		s.met.journalErrors.Inc()
		if errors.Is(err, bonds.ErrClosed) || s.ctx.Err() != nil {
			return nil, nil, err
		}
		wait := backoff.Delay(writeRetryMin, writeRetryMax, attempt)
		level := slog.LevelDebug
		if attempt == 0 {
			level = slog.LevelError
		}
		s.log.Log(s.ctx, level, "journal write failed; retrying, the commands wait in order", "transitions", len(reqs),
			"tries", attempt+1, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return nil, nil, err
		}
	}
}

// resolve settles, after a retried write, the items refused as
// ErrBadTransition because an earlier try did commit after all (its
// caller stopped waiting, say): an entry already in the state asked for
// is that item's success.
func (s *Scheduler) resolve(reqs []bonds.TransitionReq, entries []bonds.Entry, errs []error) {
	for i, r := range reqs {
		if !errors.Is(errs[i], bonds.ErrBadTransition) {
			continue
		}
		ctx, cancel := s.jctx()
		e, err := s.opts.Journal.Entry(ctx, r.ID)
		cancel()
		if err == nil && e.State == r.To {
			entries[i], errs[i] = e, nil
		}
	}
}

// rescanner reads the journal's pending entries again, RescanAfterDrop
// after a job was dropped and every Rescan regardless, and submits those
// the scheduler does not know: a command whose journal write failed (a
// disk hiccup) is taken up again without a restart.
func (s *Scheduler) rescanner() {
	defer s.wg.Done()
	tick := time.NewTicker(s.opts.Rescan)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		case <-s.rescan:
			t := time.NewTimer(s.opts.RescanAfterDrop)
			select {
			case <-s.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		ctx, cancel := s.jctx()
		pending, err := s.opts.Journal.Pending(ctx)
		cancel()
		if err != nil {
			s.log.Error("reading the journal's pending commands failed; trying again", "err", err)
			s.signal(s.rescan)
			continue
		}
		n := 0
		for _, e := range pending {
			s.mu.Lock()
			known := s.known[e.ID]
			s.mu.Unlock()
			if !known {
				s.Submit(e)
				n++
			}
		}
		if n > 0 {
			s.log.Info("commands taken up again from the journal", "commands", n)
		}
	}
}

func (s *Scheduler) forget(id bonds.CommandID) {
	s.mu.Lock()
	delete(s.known, id)
	s.mu.Unlock()
}

// enqueue puts j in its lock's queue, in receive order behind the job
// running, and starts the lock's worker if it has none. s.mu is held.
func (s *Scheduler) enqueue(j *job) {
	lq := s.locks[j.lock]
	if lq == nil {
		lq = &lockQueue{id: j.lock, wake: make(chan struct{}, 1)}
		s.locks[j.lock] = lq
		s.wg.Add(1)
		go s.worker(lq)
	}
	j.enqueued = time.Now()
	i := len(lq.jobs)
	for i > 0 && !lq.jobs[i-1].running && lq.jobs[i-1].received.After(j.received) {
		i--
	}
	lq.jobs = slices.Insert(lq.jobs, i, j)
	if lq.jobIn != nil {
		s.signal(lq.jobIn)
	}
}

func (s *Scheduler) overdue(j *job) bool { return !s.now().Before(j.deadline) }

// worker carries one lock's jobs until its queue is empty.
func (s *Scheduler) worker(lq *lockQueue) {
	defer s.wg.Done()
	for {
		if s.ctx.Err() != nil {
			return
		}
		if s.expireOverdue(lq) {
			return // queue empty, worker gone
		}
		if wait := time.Until(lq.notBefore); wait > 0 {
			s.backoff(lq, wait)
			continue
		}
		auditOnly, run := s.auditTurn(lq)
		if !run {
			continue
		}
		if s.acquire(s.ctx, s.slots, lq) != nil {
			if auditOnly {
				<-s.auditSlot
			}
			return
		}
		s.session(lq)
		s.release(s.slots)
		if auditOnly {
			<-s.auditSlot
		}
	}
}

// expireOverdue expires the jobs of lq that are not running and whose
// deadline passed. It reports whether the queue is empty, in which case
// the worker is unregistered and must return.
func (s *Scheduler) expireOverdue(lq *lockQueue) bool {
	s.mu.Lock()
	var late []*job
	lq.jobs = slices.DeleteFunc(lq.jobs, func(j *job) bool {
		if !j.running && s.overdue(j) {
			late = append(late, j)
			return true
		}
		return false
	})
	s.mu.Unlock()
	for _, j := range late {
		s.expire(j, lq.lastErr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(lq.jobs) == 0 && !lq.audit {
		delete(s.locks, lq.id)
		return true
	}
	return false
}

// backoff waits up to wait, or until the earliest deadline of lq's jobs,
// a Wake, or Close.
func (s *Scheduler) backoff(lq *lockQueue, wait time.Duration) {
	s.mu.Lock()
	for _, j := range lq.jobs {
		wait = min(wait, max(j.deadline.Sub(s.now()), 0))
	}
	s.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-lq.wake:
		s.heard(lq)
	case <-s.ctx.Done():
	}
}

// heard shortens lq's backoff after a Wake: a lock heard advertising
// since its last failure is worth trying HeardRetry after that failure.
// A Wake from before the failure (heard during the failed attempt)
// changes nothing.
func (s *Scheduler) heard(lq *lockQueue) {
	s.mu.Lock()
	at := lq.heardAt
	s.mu.Unlock()
	if at.Before(lq.failedAt) {
		return
	}
	if soon := lq.failedAt.Add(s.opts.HeardRetry); soon.Before(lq.notBefore) {
		lq.notBefore = soon
	}
}

// head returns lq's first job, expiring overdue ones first; nil if none.
func (s *Scheduler) head(lq *lockQueue) *job {
	for {
		s.mu.Lock()
		if len(lq.jobs) == 0 {
			s.mu.Unlock()
			return nil
		}
		j := lq.jobs[0]
		if !s.overdue(j) {
			s.mu.Unlock()
			return j
		}
		lq.jobs = lq.jobs[1:]
		s.mu.Unlock()
		s.expire(j, lq.lastErr)
	}
}

// remove takes j, the head, out of lq.
func (s *Scheduler) remove(lq *lockQueue, j *job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lq.jobs = slices.DeleteFunc(lq.jobs, func(x *job) bool { return x == j })
}

// begin starts an attempt of j, in memory: the attempt is written with
// j's outcome (outcome). A crash before that loses only the count: the
// entry is still pending in the journal, and the next Start sends it again,
// which the lock answers with its first outcome (duplicate_command) if it
// ran it.
func (s *Scheduler) begin(j *job) {
	s.mu.Lock()
	j.running = true
	s.mu.Unlock()
	j.attempts++
	s.met.attempts.Inc()
	s.steps.Add(1)
}

// outcome adds to w the transitions that write j's outcome, req (a
// terminal state), from the state the journal has j in: for succeeded and
// failed, through queued and running (which counts the attempts made,
// j.attempts); expired and rejected directly, adding j.attempts. They are
// one write, so the journal never shows an attempt without its outcome. An
// intermediate transition the journal refuses (the entry was not in the
// state j says) leaves the verdict to req's own, which has done.
func (s *Scheduler) outcome(w *writes, j *job, req bonds.TransitionReq, done func(bonds.Entry, error)) {
	switch req.To {
	case bonds.StateSucceeded, bonds.StateFailed:
		switch j.state {
		case bonds.StateReceived:
			w.add(bonds.TransitionReq{ID: j.id, To: bonds.StateQueued}, nil)
		case bonds.StateRunning:
			// An attempt interrupted before this start: counted already.
			w.add(bonds.TransitionReq{ID: j.id, To: bonds.StateQueued}, nil)
		}
		w.add(bonds.TransitionReq{ID: j.id, To: bonds.StateRunning, Attempts: j.attempts}, nil)
	default:
		req.Attempts = j.attempts
	}
	w.add(req, done)
}

// session runs one session with lq's lock: it connects for the head job,
// then carries jobs in order until the queue is empty, a link error, or
// MaxPerSession. The caller holds a session slot.
func (s *Scheduler) session(lq *lockQueue) {
	j := s.head(lq)
	if j == nil {
		s.mu.Lock()
		audit := lq.audit
		s.mu.Unlock()
		if audit {
			s.auditSession(lq)
		}
		return
	}
	granted := s.sessionClass(lq)
	s.begin(j)
	sess, err := s.dial(lq)
	if err != nil {
		s.linkError(lq, j, err)
		return
	}
	s.active.Add(1)
	defer func() {
		if err := sess.Close(); err != nil {
			s.log.Debug("closing a session", "lock", lq.id, "err", err)
		}
		s.active.Add(-1)
	}()
	for n := 1; ; n++ {
		if !s.durable(j) {
			// Connected while its append committed, which it did not
			// (or closing): nothing was sent; the next one, if any.
			s.remove(lq, j)
			s.drop(j)
			if s.ctx.Err() != nil {
				return
			}
			if j = s.head(lq); j == nil {
				return
			}
			s.begin(j)
			continue
		}
		res, err := s.do(sess, j)
		if err != nil {
			s.linkError(lq, j, err)
			return
		}
		lq.failures = 0
		s.remove(lq, j)
		// A command boundary: more urgent work for another lock
		// waiting for a slot ends a session with less urgent work left.
		yielded := n < s.opts.MaxPerSession && s.ctx.Err() == nil && s.commandWaiting(lq) && s.yield(lq, granted)
		more := n < s.opts.MaxPerSession && s.ctx.Err() == nil && !yielded
		// The result of j, with its attempts, is one write.
		var w writes
		req, done := s.finishReq(j, res)
		s.outcome(&w, j, req, done)
		s.write(&w)
		var next *job
		if more {
			next = s.head(lq) // expiring overdue ones
		}
		if next == nil {
			if s.ctx.Err() == nil && !yielded {
				// After the commands: the lock's audit log.
				s.readAudit(lq, sess)
			}
			return
		}
		s.begin(next)
		j = next
	}
}

// dial takes the connect slot for the Link's Dial, and runs the handshake
// (if the Session has its own) after releasing it.
func (s *Scheduler) dial(lq *lockQueue) (Session, error) {
	lock := lq.id
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.AttemptTimeout)
	defer cancel()
	if err := s.acquire(ctx, s.connect, lq); err != nil {
		return nil, fmt.Errorf("fleet: waiting to connect to lock %s: %w", lock, err)
	}
	sess, err := s.opts.Link.Dial(ctx, lock)
	s.release(s.connect)
	if err != nil {
		return nil, fmt.Errorf("fleet: connect to lock %s: %w", lock, err)
	}
	if h, ok := sess.(Handshaker); ok {
		if err := h.Handshake(ctx); err != nil {
			_ = sess.Close()
			return nil, fmt.Errorf("fleet: handshake with lock %s: %w", lock, err)
		}
	}
	return sess, nil
}

// do sends j over sess.
func (s *Scheduler) do(sess Session, j *job) (*command.Result, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.AttemptTimeout)
	defer cancel()
	res, err := sess.Do(ctx, j.op, j.payload)
	switch {
	case err != nil:
		return nil, fmt.Errorf("fleet: %s on lock %s: %w", j.op, j.lock, err)
	case res == nil:
		return nil, fmt.Errorf("fleet: %s on lock %s: %w", j.op, j.lock, ErrNoResult)
	case res.CommandID != nil && !bytes.Equal(res.CommandID, j.id[:]):
		return nil, fmt.Errorf("fleet: %s on lock %s: the lock answered for command %x: %w",
			j.op, j.lock, res.CommandID, ErrNoResult)
	}
	return res, nil
}

func (s *Scheduler) retryable(err error) bool {
	return errors.Is(err, ErrLockAway) || s.opts.Retryable(err)
}

// linkError handles a failed connect, handshake or request of j, which is
// running. A retryable error puts it back to queued, behind a backoff; any
// other fails it.
func (s *Scheduler) linkError(lq *lockQueue, j *job, err error) {
	if s.ctx.Err() != nil {
		// Closing: the entry stays pending, for the next Start.
		s.remove(lq, j)
		s.forget(j.id)
		return
	}
	retry := s.retryable(err)
	s.met.linkErrors.WithLabelValues(fmt.Sprint(retry)).Inc()
	lq.lastErr = err
	if !retry {
		s.log.Warn("link error", "lock", lq.id, "command", j.id, "op", j.op.String(), "retryable", false, "err", err)
		s.remove(lq, j)
		if !s.durable(j) {
			s.drop(j)
			return
		}
		var w writes
		req, done := s.terminalReq(j.id, j.lock, j.op.String(), j.received, bonds.StateFailed, StatusLinkError, err.Error(), nil)
		s.outcome(&w, j, req, done)
		s.write(&w)
		return
	}
	lq.failures++
	wait := s.opts.Backoff(lq.failures)
	lq.failedAt = time.Now()
	lq.notBefore = lq.failedAt.Add(wait)
	level := slog.LevelDebug
	if lq.failures == warnAfter {
		level = slog.LevelWarn
	}
	s.log.Log(s.ctx, level, "link error, retrying", "lock", lq.id, "command", j.id, "op", j.op.String(),
		"failures", lq.failures, "retry_in", wait, "err", err)
	// Back in the queue, in memory: the journal still holds it pending,
	// and the attempt is written with its outcome.
	s.mu.Lock()
	j.running = false
	s.mu.Unlock()
	s.steps.Add(1)
}

// finishReq is the transition recording the lock's answer to j.
func (s *Scheduler) finishReq(j *job, res *command.Result) (bonds.TransitionReq, func(bonds.Entry, error)) {
	status, detail := res.Status, res.Detail
	if status == command.StatusDuplicateCommand {
		if orig, err := res.Duplicate(); err == nil {
			status = orig
			detail = "the lock had run it before (duplicate_command)"
		} else {
			detail = "duplicate_command without a readable original status"
		}
	}
	state := bonds.StateSucceeded
	if status != command.StatusOK {
		state = bonds.StateFailed
	}
	payload, err := command.MarshalResult(j.op, res)
	if err != nil {
		s.log.Debug("result not re-encodable; stored without payload", "command", j.id, "err", err)
		payload = nil
	}
	return s.terminalReq(j.id, j.lock, j.op.String(), j.received, state, status.String(), detail, payload)
}

// expire ends j, not running, which can no longer run in time.
func (s *Scheduler) expire(j *job, lastErr error) {
	if !s.durable(j) {
		s.drop(j)
		return
	}
	var w writes
	req, done := s.expireReq(j, lastErr)
	s.outcome(&w, j, req, done)
	s.write(&w)
}

// expireReq is expire's transition (outcome adds j's attempts).
func (s *Scheduler) expireReq(j *job, lastErr error) (bonds.TransitionReq, func(bonds.Entry, error)) {
	deadline := j.deadline.UTC().Format(time.RFC3339)
	resumed := j.resumed
	return s.terminalWith(j.id, j.lock, j.op.String(), j.received, bonds.StateExpired, func(e *bonds.Entry) string {
		if e.Attempts == 0 && lastErr == nil {
			if resumed {
				// Attempts are written with the outcome: one the
				// previous run began may have reached the lock.
				return "not run before its deadline " + deadline + " since the gateway restarted; an attempt before the restart, if any, is not counted"
			}
			return "not run before its deadline " + deadline
		}
		d := fmt.Sprintf("not run before its deadline %s after %d attempts", deadline, e.Attempts)
		if lastErr != nil {
			d += "; last error: " + lastErr.Error()
		}
		return d
	})
}

// terminalReq is the transition of an entry to a terminal state with its
// result.
func (s *Scheduler) terminalReq(id bonds.CommandID, lock bonds.LockID, op string, received time.Time,
	to bonds.State, status, detail string, payload []byte) (bonds.TransitionReq, func(bonds.Entry, error)) {
	return s.terminalWith(id, lock, op, received, to, func(*bonds.Entry) string { return detail }, func(r *bonds.Result) {
		r.Status, r.Payload = status, payload
	})
}

// terminalWith returns the transition of an entry to a terminal state
// with its result, and what follows its outcome (the job is forgotten
// either way: write retries a failed write until the scheduler closes,
// which leaves the entry pending for the next Start; an entry the journal
// refuses is not where the scheduler thought, and the rescanner reads it
// back if it is still pending).
func (s *Scheduler) terminalWith(id bonds.CommandID, lock bonds.LockID, op string, received time.Time,
	to bonds.State, detail func(*bonds.Entry) string, more ...func(*bonds.Result)) (bonds.TransitionReq, func(bonds.Entry, error)) {
	status := string(to)
	req := bonds.TransitionReq{ID: id, To: to, Mutate: func(e *bonds.Entry) {
		r := &bonds.Result{Status: status, Detail: detail(e)}
		for _, f := range more {
			f(r)
		}
		e.Result = r
	}}
	return req, func(e bonds.Entry, err error) {
		defer s.forget(id)
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, bonds.ErrClosed) {
				s.log.Warn("stopping before the result was written; the command runs again at the next start "+
					"(the lock answers a repeated command ID with its first result)", "what", "result",
					"command", id, "lock", lock, "op", op, "state", to, "err", err)
				return
			}
			s.log.Error("journal refused a result; the command is taken up again from the journal if it is pending",
				"what", "result", "command", id, "lock", lock, "op", op, "state", to, "err", err)
			s.signal(s.rescan)
			return
		}
		s.met.results.WithLabelValues(opLabel(op), string(to)).Inc()
		s.met.duration.Observe(max(s.now().Sub(received), 0).Seconds())
		st := ""
		if e.Result != nil {
			st = e.Result.Status
		}
		s.log.Info("command finished", "command", id, "lock", lock, "op", op, "state", to,
			"status", st, "attempts", e.Attempts)
		if s.opts.OnResult != nil {
			s.opts.OnResult()
		}
	}
}

// waiting counts commands admitted or submitted and not running.
func (s *Scheduler) waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.inbox)
	for _, lq := range s.locks {
		for _, j := range lq.jobs {
			if !j.running {
				n++
			}
		}
	}
	return n
}
