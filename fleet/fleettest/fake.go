// Package fleettest holds Links for tests of the fleet scheduler: Fake, a
// scripted link that counts what the scheduler does with it (dials and
// sessions in progress, requests per lock in order); RefLink, which
// hosts real reference locks (firmware/lock) reached over in-memory pipes
// with the real secure channel and command protocol; and Model, the link
// model of the scheduler's priority tests and benchmarks (fixed connect
// and exchange times, run in virtual time). It is never used by
// production code.
package fleettest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/fleet"
)

// RetryableError is an error that says it is retryable, as the BlueZ
// client's errors do.
type RetryableError struct{ Msg string }

func (e *RetryableError) Error() string { return e.Msg }

// Retryable reports true.
func (e *RetryableError) Retryable() bool { return true }

// ErrFatal is a link error that is not retryable.
var ErrFatal = errors.New("fleettest: fatal link error")

// Call is one request a Fake session carried.
type Call struct {
	Lock   bonds.LockID
	Op     command.Op
	Signed []byte
}

// Fake is a scripted Link. Its zero value is usable: every dial succeeds
// and every request gets an ok result. Set the fields before the
// scheduler starts.
type Fake struct {
	// DialErr, if set, is called for every dial with the count of dials
	// to that lock so far (1 for the first); a non-nil error fails it.
	DialErr func(lock bonds.LockID, n int) error
	// DoErr, if set, is called for every request with the count of
	// requests to that lock so far (1 for the first); a non-nil error
	// fails it (the session is then abandoned by the scheduler).
	DoErr func(lock bonds.LockID, n int, signed []byte) error
	// Result, if set, makes the result of a request; nil is an ok result.
	Result func(lock bonds.LockID, op command.Op, signed []byte) *command.Result
	// DialDelay, HandshakeDelay and DoDelay are latencies (they give
	// overlapping calls a chance to show).
	DialDelay, HandshakeDelay, DoDelay time.Duration

	mu                       sync.Mutex
	dials                    map[bonds.LockID]int
	dos                      map[bonds.LockID]int
	calls                    []Call
	dialing, maxDialing      int
	handshaking, maxHandshak int
	open, maxOpen            int
	perLock                  map[bonds.LockID]int
	maxPerLock               int
	doing                    map[string]bool
	concurrentSame           int
}

var _ fleet.Link = (*Fake)(nil)

func (f *Fake) init() {
	if f.dials == nil {
		f.dials, f.dos, f.perLock, f.doing = map[bonds.LockID]int{}, map[bonds.LockID]int{}, map[bonds.LockID]int{}, map[string]bool{}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Dial implements fleet.Link.
func (f *Fake) Dial(ctx context.Context, lock bonds.LockID) (fleet.Session, error) {
	f.mu.Lock()
	f.init()
	f.dials[lock]++
	n := f.dials[lock]
	f.dialing++
	f.maxDialing = max(f.maxDialing, f.dialing)
	f.mu.Unlock()
	err := sleep(ctx, f.DialDelay)
	if err == nil && f.DialErr != nil {
		err = f.DialErr(lock, n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dialing--
	if err != nil {
		return nil, err
	}
	f.open++
	f.maxOpen = max(f.maxOpen, f.open)
	f.perLock[lock]++
	f.maxPerLock = max(f.maxPerLock, f.perLock[lock])
	return &fakeSession{f: f, lock: lock}, nil
}

type fakeSession struct {
	f      *Fake
	lock   bonds.LockID
	closed bool
}

// Handshake implements fleet.Handshaker.
func (s *fakeSession) Handshake(ctx context.Context) error {
	f := s.f
	f.mu.Lock()
	f.handshaking++
	f.maxHandshak = max(f.maxHandshak, f.handshaking)
	f.mu.Unlock()
	err := sleep(ctx, f.HandshakeDelay)
	f.mu.Lock()
	f.handshaking--
	f.mu.Unlock()
	return err
}

func (s *fakeSession) Do(ctx context.Context, op command.Op, signed []byte) (*command.Result, error) {
	f := s.f
	f.mu.Lock()
	if s.closed {
		f.mu.Unlock()
		return nil, errors.New("fleettest: Do on a closed session")
	}
	f.dos[s.lock]++
	n := f.dos[s.lock]
	if f.doing[string(signed)] {
		f.concurrentSame++
	}
	f.doing[string(signed)] = true
	f.mu.Unlock()
	err := sleep(ctx, f.DoDelay)
	if err == nil && f.DoErr != nil {
		err = f.DoErr(s.lock, n, signed)
	}
	f.mu.Lock()
	delete(f.doing, string(signed))
	if err == nil {
		f.calls = append(f.calls, Call{Lock: s.lock, Op: op, Signed: append([]byte(nil), signed...)})
	}
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if f.Result != nil {
		if r := f.Result(s.lock, op, signed); r != nil {
			return r, nil
		}
	}
	return OK(op), nil
}

func (s *fakeSession) Close() error {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if !s.closed {
		s.closed = true
		f.open--
		f.perLock[s.lock]--
	}
	return nil
}

// OK returns an ok result for op, with valid data for the ops that carry
// some.
func OK(op command.Op) *command.Result {
	r := &command.Result{Status: command.StatusOK, Battery: 90, Firmware: "1.0.0"}
	if op == command.OpStatus {
		r.Data, _ = command.EncodeLockStatus(command.LockStatus{Slots: 16})
	}
	return r
}

// FakeStats is what a Fake counted.
type FakeStats struct {
	// Dials and Requests count every call, by lock (failed ones too).
	Dials, Requests map[bonds.LockID]int
	// MaxDialing is the most Dials in progress at once; MaxHandshaking
	// the most handshakes.
	MaxDialing, MaxHandshaking int
	// MaxOpen is the most sessions open at once, MaxOpenPerLock the most
	// to one lock, and Open those open now.
	MaxOpen, MaxOpenPerLock, Open int
	// ConcurrentSame counts requests sent while a request with the same
	// signed bytes was in flight (a command run twice at once).
	ConcurrentSame int
	// Calls are the requests that got a result, in order.
	Calls []Call
}

// Stats returns a copy of the counters.
func (f *Fake) Stats() FakeStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	st := FakeStats{Dials: map[bonds.LockID]int{}, Requests: map[bonds.LockID]int{},
		MaxDialing: f.maxDialing, MaxHandshaking: f.maxHandshak, MaxOpen: f.maxOpen,
		MaxOpenPerLock: f.maxPerLock, Open: f.open, ConcurrentSame: f.concurrentSame,
		Calls: append([]Call(nil), f.calls...)}
	for k, v := range f.dials {
		st.Dials[k] = v
	}
	for k, v := range f.dos {
		st.Requests[k] = v
	}
	return st
}
