package flash

import (
	"fmt"
	"slices"
	"sync"
)

// Store is the lock's persistent storage: small values by 16-bit key.
//
//   - Get returns a copy of the value of key, and whether it exists.
//   - Put replaces the value of key. It is atomic: after a power cut at any
//     moment, Get returns either the old value (or none) or the new one,
//     never a mix, and no other key changes. It is durable when it
//     returns nil: a power cut after that cannot undo it.
//   - Delete removes key, with the same atomicity and durability; deleting
//     a missing key is not an error.
//   - Keys lists the keys that have a value, in ascending order.
//
// Key 0xFFFF is reserved. Values are at most MaxData bytes (a File's limit
// depends on its page size). Implementations are safe for concurrent use.
type Store interface {
	Get(key uint16) ([]byte, bool, error)
	Put(key uint16, data []byte) error
	Delete(key uint16) error
	Keys() []uint16
}

// Recovery says what a File's Open found and repaired: the traces of a
// power cut. It is the zero value after a clean shutdown, or after a power
// cut that hit no write.
type Recovery struct {
	// TornRecord: a record write was cut (its partial bytes were found at
	// the end of a page); the Put or Delete it belonged to did not happen,
	// and the page was compacted.
	TornRecord bool
	// InterruptedGC: a page that was being formatted or filled by a
	// garbage collection was found uncommitted and was discarded (the data
	// it was copying is still in its source page).
	InterruptedGC bool
	// UnfinishedErase: a garbage collection had committed its new page but
	// not finished erasing the old one; Open finished the erase.
	UnfinishedErase bool
	// PagesErased counts the pages Open erased.
	PagesErased int
}

// Clean reports whether Open found no trace of a power cut.
func (r Recovery) Clean() bool { return r == Recovery{} }

// Recoverer is implemented by stores that report what their opening
// repaired (File does); the audit log records it.
type Recoverer interface {
	Recovery() Recovery
}

// Mem is a Store in memory, for unit tests: a map behind a mutex. It
// enforces the same key and size limits as a File with the default page
// size, but never runs out of space and knows no power cuts.
type Mem struct {
	mu sync.Mutex
	m  map[uint16][]byte
}

// NewMem returns an empty in-memory store.
func NewMem() *Mem { return &Mem{m: make(map[uint16][]byte)} }

var (
	_ Store     = (*Mem)(nil)
	_ Store     = (*File)(nil)
	_ Recoverer = (*File)(nil)
)

// Get returns a copy of the value of key.
func (s *Mem) Get(key uint16) ([]byte, bool, error) {
	if key == ReservedKey {
		return nil, false, fmt.Errorf("flash: get %#04x: %w", key, ErrBadKey)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return nil, false, nil
	}
	return slices.Clone(v), true, nil
}

// Put stores a copy of data under key.
func (s *Mem) Put(key uint16, data []byte) error {
	if key == ReservedKey {
		return fmt.Errorf("flash: put %#04x: %w", key, ErrBadKey)
	}
	if len(data) > MaxData {
		return fmt.Errorf("flash: put %#04x: %d bytes, limit %d: %w", key, len(data), MaxData, ErrTooLarge)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := make([]byte, len(data))
	copy(v, data)
	s.m[key] = v
	return nil
}

// Delete removes key.
func (s *Mem) Delete(key uint16) error {
	if key == ReservedKey {
		return fmt.Errorf("flash: delete %#04x: %w", key, ErrBadKey)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
	return nil
}

// Keys returns the keys with a value, ascending.
func (s *Mem) Keys() []uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]uint16, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
