package fragment

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// fakeClock is a manual clock for Options.Now; tests never depend on the
// wall clock.
type fakeClock struct{ t time.Time }

func newClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

// newTestReassembler returns a Reassembler on a fake clock.
func newTestReassembler(t testing.TB, opts Options) (*Reassembler, *fakeClock) {
	t.Helper()
	c := newClock()
	opts.Now = c.Now
	return NewReassembler(opts), c
}

// raw builds a fragment from explicit header fields, valid or not.
func raw(id uint8, offset, total uint16, payload ...byte) []byte {
	f := make([]byte, HeaderSize, HeaderSize+len(payload))
	f[0] = id
	binary.BigEndian.PutUint16(f[1:3], offset)
	binary.BigEndian.PutUint16(f[3:5], total)
	return append(f, payload...)
}

// seq returns n bytes start, start+1, … (mod 256).
func seq(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

// mustSplit is Split that fails the test on error.
func mustSplit(t testing.TB, id uint8, msg []byte, mtu int) [][]byte {
	t.Helper()
	frags, err := Split(id, msg, mtu)
	if err != nil {
		t.Fatalf("Split(%d, %d bytes, mtu %d): %v", id, len(msg), mtu, err)
	}
	return frags
}

// addIncomplete adds a fragment that must be accepted without completing a
// message.
func addIncomplete(t testing.TB, r *Reassembler, f []byte) {
	t.Helper()
	msg, err := r.Add(f)
	if err != nil || msg != nil {
		t.Fatalf("Add(% x) = %d-byte message, %v; want nil, nil", f, len(msg), err)
	}
}

// addComplete adds a fragment that must complete the message want.
func addComplete(t testing.TB, r *Reassembler, f, want []byte) {
	t.Helper()
	msg, err := r.Add(f)
	if err != nil {
		t.Fatalf("Add(% x): %v; want the message", f, err)
	}
	if string(msg) != string(want) {
		t.Fatalf("Add(% x) = % x; want % x", f, msg, want)
	}
}

// addErr adds a fragment that must be refused with an error wrapping want.
func addErr(t testing.TB, r *Reassembler, f []byte, want error) {
	t.Helper()
	msg, err := r.Add(f)
	if !errors.Is(err, want) {
		t.Fatalf("Add(% x) error = %v; want %v", f, err, want)
	}
	if msg != nil {
		t.Fatalf("Add(% x) returned a message with error %v", f, err)
	}
}

// wantPending checks how many messages are in progress.
func wantPending(t testing.TB, r *Reassembler, want int) {
	t.Helper()
	if got := r.Pending(); got != want {
		t.Fatalf("Pending() = %d; want %d", got, want)
	}
}

// sentinels lists every sentinel error of the package.
var sentinels = []error{
	ErrBadMTU, ErrShortFragment, ErrMessageTooLarge, ErrBadLength,
	ErrConflict, ErrDiscarded, ErrTooManyInFlight, ErrTimeout,
}

// countSentinels returns how many sentinels err wraps.
func countSentinels(err error) int {
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	return n
}
