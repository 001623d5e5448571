package fleet

import (
	"context"
	"slices"
	"time"

	"github.com/gatewayd/gatewayd/firmware/command"
)

// class is a command's priority class; a lower class is more urgent. See
// the package doc, "Priorities".
type class int

const (
	// classUrgent: lock and unlock, a rider waits at the dock; and any
	// command that waited longer than Options.AgeAfter.
	classUrgent class = iota
	// classUser: user management (add-user, remove-user, list-users) and
	// the other operator administration (allow-bond, clear-bonds,
	// set-time, set-revocations).
	classUser
	// classBackground: status, and the reads of the locks' audit logs.
	classBackground
)

// classOf returns op's class, before ageing.
func classOf(op command.Op) class {
	switch op {
	case command.OpLock, command.OpUnlock:
		return classUrgent
	case command.OpStatus, command.OpReadAudit:
		return classBackground
	default:
		return classUser
	}
}

// jobClass is j's class at now: its operation's, or urgent once it has
// waited AgeAfter since it was enqueued (so background work is never
// starved by a continuous urgent load). s.mu is held.
func (s *Scheduler) jobClass(j *job, now time.Time) class {
	if now.Sub(j.enqueued) >= s.opts.AgeAfter {
		return classUrgent
	}
	return classOf(j.op)
}

// queueClass is lq's class: that of its most urgent command, running or
// waiting. A lock's commands run in their order (a signer's counter
// order), so its urgent command runs only after those ahead of it in the
// queue; the whole queue therefore takes the urgency of its most urgent
// command (priority inheritance), never the head's alone, which would
// keep an unlock behind its own lock's status waiting for every other
// background session. A queue with no command (an audit-only session, or
// the audit read at a session's end) is background. s.mu is held.
func (s *Scheduler) queueClass(lq *lockQueue, now time.Time) class {
	c := classBackground
	for _, j := range lq.jobs {
		c = min(c, s.jobClass(j, now))
		if c == classUrgent {
			break
		}
	}
	return c
}

// pool is a set of n slots granted by priority: a freed slot goes to the
// waiter whose lock's queue has the most urgent class (at the time of the
// grant), the longest waiting first among equals. The session slots and
// the connect slot are pools. Its fields are guarded by Scheduler.mu.
type pool struct {
	free    int
	waiters []*waiter
}

// waiter is a worker waiting for a slot of a pool.
type waiter struct {
	lq    *lockQueue
	since time.Time
	ready chan struct{} // closed when the slot is handed to it
}

func newPool(n int) *pool { return &pool{free: n} }

// acquire takes a slot of p for lq, waiting for it by priority, or fails
// when ctx ends.
func (s *Scheduler) acquire(ctx context.Context, p *pool, lq *lockQueue) error {
	s.mu.Lock()
	if p.free > 0 {
		p.free--
		s.mu.Unlock()
		return nil
	}
	w := &waiter{lq: lq, since: time.Now(), ready: make(chan struct{})}
	p.waiters = append(p.waiters, w)
	s.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-w.ready:
		// Granted as ctx ended: pass it on.
		s.releaseLocked(p)
	default:
		p.waiters = slices.DeleteFunc(p.waiters, func(x *waiter) bool { return x == w })
	}
	return ctx.Err()
}

// release frees a slot of p, handing it to the most urgent waiter.
func (s *Scheduler) release(p *pool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked(p)
}

func (s *Scheduler) releaseLocked(p *pool) {
	if len(p.waiters) == 0 {
		p.free++
		return
	}
	now := time.Now()
	best, bc := 0, s.queueClass(p.waiters[0].lq, now)
	for i, w := range p.waiters[1:] {
		if c := s.queueClass(w.lq, now); c < bc {
			best, bc = i+1, c
		}
	}
	w := p.waiters[best]
	p.waiters = slices.Delete(p.waiters, best, best+1)
	close(w.ready)
}

// yield reports whether the session with lq should end at this command
// boundary: a lock whose queue is of a more urgent class than the
// session's waits for a session slot. The session's class is the more
// urgent of its class when it began (granted) and what lq has left: a
// session begun for urgent work carries its lock's following commands
// too (up to MaxPerSession), as ending it would cost a second connect
// (the scarcest resource: one at a time) for a lock already connected;
// a session begun for background work yields as soon as more urgent work
// waits. A session is never cut within a command; a yielding lock waits
// for a slot again, its commands in their order.
func (s *Scheduler) yield(lq *lockQueue, granted class) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.slots.waiters) == 0 || granted == classUrgent {
		return false
	}
	now := time.Now()
	mine := min(granted, s.queueClass(lq, now))
	if mine == classUrgent {
		return false
	}
	for _, w := range s.slots.waiters {
		if s.queueClass(w.lq, now) < mine {
			s.met.yields.Inc()
			return true
		}
	}
	return false
}

// sessionClass is lq's class as its session begins.
func (s *Scheduler) sessionClass(lq *lockQueue) class {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queueClass(lq, time.Now())
}
