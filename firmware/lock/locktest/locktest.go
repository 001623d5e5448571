// Package locktest holds fakes for tests of the reference lock: an
// actuator that counts its moves and can fail or cut the power, and an
// in-memory store that can lose power and "reboot" with what it had
// durably written. It may import the standard library and firmware/ only,
// and is never used by production code.
package locktest

import (
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/gatewayd/gatewayd/firmware/command"
)

// ErrPowerCut is returned by every write after Store.Cut.
var ErrPowerCut = errors.New("locktest: power cut")

// Actuator is a fake bolt.
type Actuator struct {
	mu    sync.Mutex
	moves int
	state command.LockState
	// Fail, if set, makes Move fail (the bolt jams).
	Fail error
	// BeforeMove, if set, runs at the start of Move; a non-nil error is
	// returned as Move's (use it to cut the power at the worst moment).
	BeforeMove func(target command.LockState) error
}

// Move implements lock.Actuator.
func (a *Actuator) Move(target command.LockState) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.BeforeMove != nil {
		if err := a.BeforeMove(target); err != nil {
			return err
		}
	}
	if a.Fail != nil {
		return a.Fail
	}
	a.moves++
	a.state = target
	return nil
}

// SetBeforeMove sets BeforeMove under the actuator's lock, for a test
// that sets it while the lock may be serving (the lock's goroutine reads
// it in Move, and the race detector does not see the ordering that a
// socket between them gives).
func (a *Actuator) SetBeforeMove(f func(target command.LockState) error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.BeforeMove = f
}

// Moves returns how many times the bolt moved.
func (a *Actuator) Moves() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.moves
}

// State returns the bolt's position.
func (a *Actuator) State() command.LockState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

// Store is an in-memory lock.Store whose Puts are atomic, with a power
// switch.
type Store struct {
	mu   sync.Mutex
	data map[uint16][]byte
	cut  bool
	puts int
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{data: map[uint16][]byte{}} }

// Get implements lock.Store.
func (s *Store) Get(key uint16) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[key]
	return slices.Clone(v), ok, nil
}

// Put implements lock.Store.
func (s *Store) Put(key uint16, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return ErrPowerCut
	}
	s.puts++
	s.data[key] = slices.Clone(data)
	return nil
}

// Delete implements lock.Store.
func (s *Store) Delete(key uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return ErrPowerCut
	}
	delete(s.data, key)
	return nil
}

// Cut cuts the power: every later write fails.
func (s *Store) Cut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut = true
}

// Reboot returns a powered store holding what s had written.
func (s *Store) Reboot() *Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Store{data: maps.Clone(s.data)}
}

// Raw returns a copy of a record, for tests that inspect what is durable.
func (s *Store) Raw(key uint16) []byte {
	v, _, _ := s.Get(key)
	return v
}
