package lock

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

func TestPasskeyRangeAndFreshness(t *testing.T) {
	seen := map[uint32]bool{}
	for range 200 {
		p, err := drawPasskey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if p > 999999 {
			t.Fatalf("passkey %d out of range", p)
		}
		seen[p] = true
	}
	if len(seen) < 190 {
		t.Fatalf("only %d distinct passkeys in 200 draws", len(seen))
	}
	// Values at or above the rejection limit are redrawn, not folded.
	high := bytes.Repeat([]byte{0xff}, 4)
	p, err := drawPasskey(bytes.NewReader(append(high, 0, 0, 0, 7)))
	if err != nil || p != 7 {
		t.Fatalf("got %d, %v; want the second draw, 7", p, err)
	}
}

func TestPairingOutsideWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	var w bondWindow
	if err := w.pair("aa", 123456, now); !errors.Is(err, ErrPairingRefused) {
		t.Fatalf("no window: %v", err)
	}
	w = bondWindow{addr: "aa", passkey: 123456, until: now.Add(30 * time.Second)}
	if err := w.pair("aa", 123456, now.Add(30*time.Second)); !errors.Is(err, ErrPairingRefused) {
		t.Fatalf("expired window: %v", err)
	}
}

func TestPairingFromAnotherAddress(t *testing.T) {
	now := time.Unix(1000, 0)
	w := bondWindow{addr: "aa", passkey: 123456, until: now.Add(30 * time.Second)}
	if err := w.pair("bb", 123456, now); !errors.Is(err, ErrPairingRefused) {
		t.Fatalf("other address: %v", err)
	}
	if err := w.pair("aa", 123456, now); err != nil {
		t.Fatalf("right peer after a stranger's attempt: %v", err)
	}
	if err := w.pair("aa", 123456, now); !errors.Is(err, ErrPairingRefused) {
		t.Fatal("a window admits one bond only")
	}
}

func TestThreeWrongPasskeysCloseWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	w := bondWindow{addr: "aa", passkey: 123456, until: now.Add(30 * time.Second)}
	for i := range MaxPairingFailures {
		if err := w.pair("aa", 111111, now); !errors.Is(err, ErrPairingRefused) {
			t.Fatalf("wrong passkey %d: %v", i, err)
		}
	}
	if err := w.pair("aa", 123456, now); !errors.Is(err, ErrPairingRefused) {
		t.Fatal("the right passkey was accepted after three wrong ones")
	}
}

// BondPasskey gives the window's passkey to the right peer only, while the
// window is open; PairingFailed counts like a wrong passkey, and three
// close the window.
func TestBondPasskeyAndPairingFailed(t *testing.T) {
	now := time.Unix(1000, 0)
	w := bondWindow{addr: "aa", passkey: 654321, until: now.Add(30 * time.Second)}
	if pk, ok := w.passkeyFor("aa", now); !ok || pk != 654321 {
		t.Fatalf("passkeyFor(aa) = %d, %v", pk, ok)
	}
	if _, ok := w.passkeyFor("bb", now); ok {
		t.Fatal("passkey given to another peer")
	}
	if _, ok := w.passkeyFor("aa", now.Add(30*time.Second)); ok {
		t.Fatal("passkey given after the window closed")
	}
	if err := w.fail("bb", now); !errors.Is(err, ErrPairingRefused) || w.failures != 0 {
		t.Fatalf("a stranger's failure: %v, %d failures", err, w.failures)
	}
	for i := 1; i <= MaxPairingFailures; i++ {
		if err := w.fail("aa", now); !errors.Is(err, ErrPairingRefused) {
			t.Fatalf("failure %d: %v", i, err)
		}
		if _, open := w.passkeyFor("aa", now); open != (i < MaxPairingFailures) {
			t.Fatalf("after %d failures the window is open=%v", i, open)
		}
	}
	if err := w.pair("aa", 654321, now); !errors.Is(err, ErrPairingRefused) {
		t.Fatalf("right passkey after the window closed: %v", err)
	}
}
