package lock

import (
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// Bond window limits (design brief §6).
const (
	// MaxBondWindow is the longest window allow-bond may open.
	MaxBondWindow = 60 * time.Second
	// DefaultBondWindow is used when allow-bond names no duration.
	DefaultBondWindow = 30 * time.Second
	// MaxPairingFailures wrong passkeys close the window.
	MaxPairingFailures = 3
)

// bondWindow is the one open window, if any. It lives in RAM only: a
// reboot closes it.
type bondWindow struct {
	addr     string
	passkey  uint32
	until    time.Time
	failures int
}

// drawPasskey returns a uniformly random passkey in 000000..999999
// (rejection sampling, so no value is more likely than another).
func drawPasskey(r io.Reader) (uint32, error) {
	const limit = (1 << 32) / 1000000 * 1000000
	var b [4]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("lock: drawing a passkey: %w", err)
		}
		if v := binary.BigEndian.Uint32(b[:]); v < limit {
			return v % 1000000, nil
		}
	}
}

// pair checks one pairing attempt against the window. It returns nil when
// addr may bond now; the window is then closed.
func (w *bondWindow) pair(addr string, passkey uint32, now time.Time) error {
	switch {
	case w.until.IsZero() || !now.Before(w.until):
		return fmt.Errorf("%w: no bond window is open", ErrPairingRefused)
	case addr != w.addr:
		return fmt.Errorf("%w: the window is open for another peer", ErrPairingRefused)
	}
	var a, b [4]byte
	binary.BigEndian.PutUint32(a[:], passkey)
	binary.BigEndian.PutUint32(b[:], w.passkey)
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		w.failures++
		if w.failures >= MaxPairingFailures {
			*w = bondWindow{}
			return fmt.Errorf("%w: wrong passkey; %d failures closed the window", ErrPairingRefused, MaxPairingFailures)
		}
		return fmt.Errorf("%w: wrong passkey", ErrPairingRefused)
	}
	*w = bondWindow{}
	return nil
}

// passkeyFor returns the open window's passkey when it is open for addr.
func (w *bondWindow) passkeyFor(addr string, now time.Time) (uint32, bool) {
	if w.until.IsZero() || !now.Before(w.until) || addr != w.addr {
		return 0, false
	}
	return w.passkey, true
}

// fail counts a pairing with addr that failed below the lock (in SMP),
// as a wrong passkey.
func (w *bondWindow) fail(addr string, now time.Time) error {
	if _, open := w.passkeyFor(addr, now); !open {
		return fmt.Errorf("%w: no bond window is open for this peer", ErrPairingRefused)
	}
	w.failures++
	if w.failures >= MaxPairingFailures {
		*w = bondWindow{}
		return fmt.Errorf("%w: pairing failed; %d failures closed the window", ErrPairingRefused, MaxPairingFailures)
	}
	return fmt.Errorf("%w: pairing failed", ErrPairingRefused)
}
