package lock

import (
	"fmt"
	"testing"
	"time"
)

func TestLockoutBacksOffExponentially(t *testing.T) {
	l := newLockout(LockoutPolicy{Free: 2, Base: time.Second, Max: 10 * time.Second, GlobalFailures: 1000})
	now := time.Unix(1000, 0)
	for i := 1; i <= 2; i++ {
		if u := l.fail("a", now); !u.IsZero() && u.After(now) {
			t.Fatalf("failure %d locked out until %v; the first 2 are free", i, u)
		}
	}
	want := []time.Duration{1, 2, 4, 8, 10, 10}
	for i, w := range want {
		u := l.fail("a", now)
		if got := u.Sub(now); got != w*time.Second {
			t.Fatalf("failure %d: lockout %v, want %v", i+3, got, w*time.Second)
		}
	}
	if l.until("a", now).IsZero() {
		t.Fatal("peer not locked out")
	}
	if !l.until("b", now).IsZero() {
		t.Fatal("another peer is locked out by a's failures")
	}
	if !l.until("a", now.Add(11*time.Second)).IsZero() {
		t.Fatal("lockout did not end")
	}
}

func TestLockoutGlobalCapAgainstAddressRotation(t *testing.T) {
	l := newLockout(LockoutPolicy{Free: 5, GlobalFailures: 10, GlobalWindow: time.Minute, GlobalLockout: 30 * time.Second})
	now := time.Unix(1000, 0)
	// Eleven failures, each from a fresh address: no single peer reaches
	// its own lockout, but together they trip the global cap.
	for i := range 11 {
		l.fail(fmt.Sprintf("peer-%d", i), now)
	}
	if u := l.until("fresh-peer", now); u.Sub(now) != 30*time.Second {
		t.Fatalf("global lockout: %v", u.Sub(now))
	}
	if !l.until("fresh-peer", now.Add(31*time.Second)).IsZero() {
		t.Fatal("global lockout did not end")
	}
}

func TestLockoutForgetsOldFailuresAndIsBounded(t *testing.T) {
	l := newLockout(LockoutPolicy{Free: 1, Forget: time.Minute, GlobalFailures: 1 << 20})
	now := time.Unix(1000, 0)
	l.fail("a", now)
	l.fail("a", now.Add(2*time.Minute))
	if l.failures("a") != 1 {
		t.Fatalf("failures %d, want 1 after the forget period", l.failures("a"))
	}
	for i := range 1000 {
		l.fail(fmt.Sprintf("p%d", i), now)
	}
	if len(l.peers) > maxPeers {
		t.Fatalf("%d peers tracked, bound %d", len(l.peers), maxPeers)
	}
}
