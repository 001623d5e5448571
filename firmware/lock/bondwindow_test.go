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
