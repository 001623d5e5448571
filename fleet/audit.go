package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
)

// Defaults of AuditOptions.
const (
	DefaultAuditInterval = 15 * time.Minute
	DefaultAuditPages    = 4
)

// Reasons of gatewayd_audit_chain_breaks_total: how a page read from a
// lock failed to extend the chain the gateway holds.
const (
	BreakAltered   = "altered"   // an entry or the head does not hash to what the chain says
	BreakReordered = "reordered" // entries out of order or repeated
	BreakGap       = "gap"       // a sequence number skipped while the lock retains it
	BreakRewound   = "rewound"   // the log went back: next_seq or the page start below the cursor
	BreakMalformed = "malformed" // not an audit page in the spec's CBOR
	BreakSignature = "signature" // a signed page whose signature does not verify under the lock's key
)

var breakReasons = []string{BreakAltered, BreakReordered, BreakGap, BreakRewound, BreakMalformed, BreakSignature}

// AuditStore is the part of the database the audit reader uses; *bonds.DB
// satisfies it.
type AuditStore interface {
	AuditCursor(ctx context.Context, lock bonds.LockID) (bonds.AuditCursor, error)
	AdvanceAudit(ctx context.Context, lock bonds.LockID, a bonds.AuditAdvance) (bonds.AuditCursor, error)
}

// AuditOptions configure reading the locks' audit logs (docs/operations.md,
// "Audit trail"). With a Store, every session whose Session is an
// AuditReader ends, after its queued commands, with reading the lock's
// log: up to Pages pages of 16 entries, each verified against the lock's
// cursor (firmware/lock/audit: Cursor.Advance) and queued for the broker
// with the cursor's move in one write (bonds.DB.AdvanceAudit). A page
// that does not extend the chain is counted
// (gatewayd_audit_chain_breaks_total{reason}), logged with the lock and
// the sequence numbers, and leaves the cursor where it was. Reading stops
// as soon as a command for the lock is waiting: commands go first.
type AuditOptions struct {
	// Store keeps the cursors and the entries read; nil reads no logs.
	Store AuditStore
	// Heard returns the locks in range now. With it, a lock heard whose
	// log was not read for Interval gets a session of its own to read it
	// (when no command needs one). nil: logs are read only after command
	// sessions.
	Heard func() []bonds.LockID
	// Interval is how often the log of a lock heard is read at least
	// (default 15 min).
	Interval time.Duration
	// Pages bounds the pages read in one session (default 4: 64 entries).
	Pages int
	// OnEntries, if set, is called after entries were queued for the
	// broker (so its publisher wakes). It must not block.
	OnEntries func()
}

func (o *AuditOptions) withDefaults() error {
	if o.Interval < 0 || o.Pages < 0 {
		return fmt.Errorf("%w: negative audit interval or pages", ErrConfig)
	}
	if o.Interval == 0 {
		o.Interval = DefaultAuditInterval
	}
	if o.Pages == 0 {
		o.Pages = DefaultAuditPages
	}
	return nil
}

// readAudit reads lq's lock's audit log over sess, up to Pages pages,
// while no command for the lock waits.
func (s *Scheduler) readAudit(lq *lockQueue, sess Session) {
	if s.opts.Audit.Store == nil {
		return
	}
	s.mu.Lock()
	lq.audit = false
	if s.opts.Audit.Heard != nil {
		// An attempt, whatever comes of it: the scheduled reads wait
		// Interval (auditScheduler forgets it then).
		s.audited[lq.id] = time.Now()
	}
	s.mu.Unlock()
	ar, ok := sess.(AuditReader)
	if !ok {
		return
	}
	s.mu.Lock()
	refused, was := s.noAudit[lq.id]
	if was && time.Since(refused) >= s.opts.Audit.Interval {
		delete(s.noAudit, lq.id)
		was = false
	}
	s.mu.Unlock()
	if was {
		return // it refused read-audit lately: not once per session
	}
	for range s.opts.Audit.Pages {
		if s.ctx.Err() != nil || s.commandWaiting(lq) || s.yield(lq, classBackground) {
			return
		}
		if !s.readAuditPage(lq.id, ar, sess) {
			break
		}
	}
}

// commandWaiting reports whether lq has a command to run.
func (s *Scheduler) commandWaiting(lq *lockQueue) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(lq.jobs) > 0
}

// readAuditPage reads one page from the lock's cursor and queues what it
// verified. It reports whether the lock has more to read.
func (s *Scheduler) readAuditPage(lock bonds.LockID, ar AuditReader, sess Session) bool {
	log := s.log.With("lock", lock.String())
	jctx, cancel := s.jctx()
	stored, err := s.opts.Audit.Store.AuditCursor(jctx, lock)
	cancel()
	cur := audit.NewCursor(lock[:])
	switch {
	case err == nil:
		cur = audit.Cursor{Next: stored.Seq, Hash: stored.Head}
	case errors.Is(err, bonds.ErrNotFound):
		stored = bonds.AuditCursor{}
	default:
		s.met.auditFailures.WithLabelValues("store").Inc()
		log.Warn("audit cursor not read; the log is read later", "err", err)
		return false
	}
	if len(stored.Pending)+audit.MaxPageEntries+1 > bonds.MaxAuditPending { // a page and a loss record
		s.met.auditFailures.WithLabelValues("backlog").Inc()
		log.Debug("audit entries wait for the broker; the log is read later", "pending", len(stored.Pending))
		return false
	}
	if cur.Next > math.MaxUint32 {
		// read-audit's from_seq is 32 bits: 4 billion entries.
		s.met.auditFailures.WithLabelValues("refused").Inc()
		log.Warn("audit cursor beyond read-audit's range", "seq", cur.Next)
		return false
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.AttemptTimeout)
	res, err := ar.ReadAudit(ctx, cur.Next, audit.MaxPageEntries)
	cancel()
	switch {
	case err != nil:
		s.met.auditFailures.WithLabelValues("link").Inc()
		log.Debug("read-audit failed; the log is read later", "seq", cur.Next, "err", err)
		return false
	case res == nil || res.Status != command.StatusOK:
		s.met.auditFailures.WithLabelValues("refused").Inc()
		var rerr error = ErrNoResult
		if res != nil {
			rerr = res.Err()
		}
		log.Warn("the lock refused read-audit; asking again after the audit interval", "seq", cur.Next, "err", rerr)
		s.mu.Lock()
		s.noAudit[lock] = time.Now()
		s.mu.Unlock()
		return false
	}
	page, err := audit.DecodePage(res.Data)
	before := cur
	var missed uint64
	if err == nil {
		missed, err = cur.Advance(page)
	}
	sigErr := false
	if pk, ok := sess.(PeerKeyer); err == nil && ok && len(page.Sig) > 0 {
		if key := pk.PeerKey(); key != nil {
			err = audit.VerifySignature(key, page)
			sigErr = err != nil
		}
	}
	if err != nil {
		reason := classifyBreak(before, page, err)
		if sigErr {
			reason = BreakSignature
		}
		s.met.chainBreaks.WithLabelValues(reason).Inc()
		first := int64(-1)
		if len(page.Entries) > 0 {
			first = int64(page.Entries[0].Seq)
		}
		// One line per lock and minute at most (the daemon's ratelog):
		// the message and the lock are the repeat key. The page is kept
		// in it as evidence (§14.5.6), without its signature.
		sum := sha256.Sum256(res.Data)
		log.Warn("audit chain break: the cursor stays", "reason", reason, "seq", before.Next,
			"page_first_seq", first, "page_next_seq", page.Next, "page_entries", len(page.Entries),
			"page_sha256", hex.EncodeToString(sum[:]), "page", evidence(page, res.Data), "err", err)
		return false
	}
	now := s.now().UTC()
	var recs []bonds.AuditRecord
	if missed > 0 {
		recs = append(recs, bonds.AuditRecord{Seq: before.Next, Missed: missed, ReadAt: now})
		log.Warn("audit entries overwritten by the lock before they were read", "seq", before.Next, "missed", missed)
	}
	for _, e := range page.Entries {
		b, err := e.Encode()
		if err != nil { // impossible: DecodePage checked the fields
			s.met.chainBreaks.WithLabelValues(BreakMalformed).Inc()
			log.Warn("audit chain break: the cursor stays", "reason", BreakMalformed, "seq", e.Seq, "err", err)
			return false
		}
		recs = append(recs, bonds.AuditRecord{Seq: e.Seq, Entry: b, ReadAt: now})
	}
	if cur.Next == before.Next {
		return false // nothing new
	}
	jctx, cancel = s.jctx()
	_, err = s.opts.Audit.Store.AdvanceAudit(jctx, lock, bonds.AuditAdvance{
		FromSeq: stored.Seq, FromHead: stored.Head, Seq: cur.Next, Head: cur.Hash, Records: recs})
	cancel()
	if err != nil {
		s.met.auditFailures.WithLabelValues("store").Inc()
		log.Warn("audit entries not queued; they are read again later", "seq", before.Next, "err", err)
		return false
	}
	s.met.auditEntries.Add(float64(len(page.Entries)))
	s.met.auditMissed.Add(float64(missed))
	log.Debug("audit entries read", "from", before.Next, "next", cur.Next, "entries", len(page.Entries))
	if s.opts.Audit.OnEntries != nil {
		s.opts.Audit.OnEntries()
	}
	return cur.Next < page.Next
}

// evidence is the page as received, for the log: its CBOR without the
// signature (base64), or, for bytes that are not a page, their size.
func evidence(p audit.Page, raw []byte) string {
	p.Sig = nil
	if b, err := audit.EncodePage(p); err == nil && p.Head != nil {
		return base64.StdEncoding.EncodeToString(b)
	}
	return fmt.Sprintf("not a page (%d bytes)", len(raw))
}

// classifyBreak names how page, read from cursor c, failed with err.
func classifyBreak(c audit.Cursor, p audit.Page, err error) string {
	if errors.Is(err, audit.ErrMalformed) {
		return BreakMalformed
	}
	es := p.Entries
	if p.Next < c.Next || len(es) > 0 && es[0].Seq < c.Next {
		return BreakRewound
	}
	for i := 1; i < len(es); i++ {
		if es[i].Seq <= es[i-1].Seq {
			return BreakReordered
		}
	}
	if errors.Is(err, audit.ErrGap) {
		return BreakGap
	}
	return BreakAltered
}

// auditScheduler asks, every min(Interval, 1 min), for a read of each
// heard lock's log that was not read for Interval.
func (s *Scheduler) auditScheduler() {
	defer s.wg.Done()
	tick := time.NewTicker(min(s.opts.Audit.Interval, time.Minute))
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		heard := s.opts.Audit.Heard()
		now := time.Now()
		s.mu.Lock()
		for id, at := range s.audited {
			if now.Sub(at) >= s.opts.Audit.Interval {
				delete(s.audited, id) // due again; forgets locks gone
			}
		}
		for _, id := range heard {
			if _, recent := s.audited[id]; !recent && !s.closed {
				s.requestAudit(id)
			}
		}
		s.mu.Unlock()
	}
}

// requestAudit asks lock's worker for a read of its log, starting one if
// the lock has none. s.mu is held.
func (s *Scheduler) requestAudit(id bonds.LockID) {
	lq := s.locks[id]
	if lq == nil {
		lq = &lockQueue{id: id, wake: make(chan struct{}, 1)}
		s.locks[id] = lq
		s.wg.Add(1)
		go s.worker(lq)
	}
	lq.audit = true
	if lq.jobIn == nil {
		lq.jobIn = make(chan struct{}, 1)
	}
}

// auditTurn is the worker's step before a session: with no command for
// the lock but a read of its audit log to do (an audit-only session), it
// waits for the one audit-only session slot, so such sessions never take
// more than one of MaxSessions; a command enqueued for the lock meanwhile
// ends the wait (run false: the worker looks at its queue again).
// auditOnly says the worker holds the audit-only slot.
func (s *Scheduler) auditTurn(lq *lockQueue) (auditOnly, run bool) {
	s.mu.Lock()
	only := len(lq.jobs) == 0 && lq.audit
	jobIn := lq.jobIn
	s.mu.Unlock()
	if !only {
		return false, true
	}
	select {
	case s.auditSlot <- struct{}{}:
		return true, true
	case <-jobIn:
		return false, false
	case <-s.ctx.Done():
		return false, false
	}
}

// auditSession runs a session with lq's lock only to read its log.
func (s *Scheduler) auditSession(lq *lockQueue) {
	sess, err := s.dial(lq)
	if err != nil {
		// No backoff of its own: the next read is a session's or the
		// next Interval's.
		s.mu.Lock()
		lq.audit = false
		s.audited[lq.id] = time.Now()
		s.mu.Unlock()
		s.met.auditFailures.WithLabelValues("link").Inc()
		s.log.Debug("audit read: lock not reached", "lock", lq.id, "err", err)
		return
	}
	s.active.Add(1)
	defer func() {
		if err := sess.Close(); err != nil {
			s.log.Debug("closing a session", "lock", lq.id, "err", err)
		}
		s.active.Add(-1)
	}()
	s.readAudit(lq, sess)
}
