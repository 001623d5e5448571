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

// Model is the link model of the performance figures: every Dial takes
// Connect, every request Exchange, and nothing fails. It records when
// each session started and each request ended, on the clock it runs on;
// run in a testing/synctest bubble, its delays pass in the bubble's
// virtual time, so orderings and durations are exact and free of the
// machine's noise.
type Model struct {
	// Connect is the time of a Dial (with the handshake); Exchange the
	// time of one request.
	Connect, Exchange time.Duration

	mu     sync.Mutex
	events []Event
	done   map[string]time.Time // by signed command: when its request ended
}

var _ fleet.Link = (*Model)(nil)

// Event is a session start or a request's end on a Model.
type Event struct {
	// Dial is true for a session start (a Dial called, At when it was
	// called), false for a request that got its answer (At when it did).
	Dial bool
	Lock bonds.LockID
	Op   command.Op
	// Signed is the request's signed command (for the fakes of the fleet
	// tests, its command ID).
	Signed []byte
	At     time.Time
}

// Dial implements fleet.Link.
func (m *Model) Dial(ctx context.Context, lock bonds.LockID) (fleet.Session, error) {
	m.record(Event{Dial: true, Lock: lock, At: time.Now()})
	if err := sleep(ctx, m.Connect); err != nil {
		return nil, err
	}
	return &modelSession{m: m, lock: lock}, nil
}

func (m *Model) record(e Event) {
	m.mu.Lock()
	m.events = append(m.events, e)
	if !e.Dial {
		if m.done == nil {
			m.done = map[string]time.Time{}
		}
		m.done[string(e.Signed)] = e.At
	}
	m.mu.Unlock()
}

// Done reports when the request carrying signed got its answer.
func (m *Model) Done(signed []byte) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.done[string(signed)]
	return at, ok
}

// Answered counts the requests that got their answer.
func (m *Model) Answered() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.done)
}

// Events returns what happened so far, in order.
func (m *Model) Events() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Event(nil), m.events...)
}

type modelSession struct {
	m      *Model
	lock   bonds.LockID
	closed bool
}

func (s *modelSession) Do(ctx context.Context, op command.Op, signed []byte) (*command.Result, error) {
	if s.closed {
		return nil, errors.New("fleettest: Do on a closed session")
	}
	if err := sleep(ctx, s.m.Exchange); err != nil {
		return nil, err
	}
	s.m.record(Event{Lock: s.lock, Op: op, Signed: append([]byte(nil), signed...), At: time.Now()})
	return OK(op), nil
}

func (s *modelSession) Close() error {
	s.closed = true
	return nil
}
