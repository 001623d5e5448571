package lock

import (
	"sync"
	"time"
)

// LockoutPolicy sets how failed handshakes and failed authorisations back
// off. Zero fields take the defaults.
type LockoutPolicy struct {
	// Free is the number of failures a peer may have before any lockout
	// (default 2: a gateway with a stale credential, a typo).
	Free int
	// Base is the first lockout; each further failure doubles it
	// (default 2 s).
	Base time.Duration
	// Max caps one peer's lockout (default 5 min).
	Max time.Duration
	// GlobalFailures is the number of unauthenticated failures (refused
	// handshakes and pairings) from all peers together, within
	// GlobalWindow, above which the lock throttles new handshakes for
	// GlobalLockout: an attacker who rotates BLE addresses gains nothing
	// (defaults 20 in 60 s, 60 s). Failures of authenticated sessions do
	// not count here, and the throttle never refuses their requests
	// (docs/protocol.md §13.8).
	GlobalFailures int
	GlobalWindow   time.Duration
	GlobalLockout  time.Duration
	// GlobalInterval is the throttle: while it holds, the lock starts at
	// most one handshake per GlobalInterval with a peer that is not bonded
	// over an encrypted link (default 5 s). Bonded, encrypted peers (the
	// dock's gateway) are not throttled.
	GlobalInterval time.Duration
	// Forget is how long after its last failure a peer's count resets
	// (default 15 min).
	Forget time.Duration
}

func (p LockoutPolicy) withDefaults() LockoutPolicy {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if p.Free <= 0 {
		p.Free = 2
	}
	if p.GlobalFailures <= 0 {
		p.GlobalFailures = 20
	}
	def(&p.Base, 2*time.Second)
	def(&p.Max, 5*time.Minute)
	def(&p.GlobalWindow, time.Minute)
	def(&p.GlobalLockout, time.Minute)
	def(&p.GlobalInterval, 5*time.Second)
	def(&p.Forget, 15*time.Minute)
	return p
}

// lockout tracks failures per peer address and globally. It lives in RAM:
// a reboot clears it, which an attacker over BLE cannot cause. The table is
// bounded: the oldest entry is dropped past maxPeers.
type lockout struct {
	mu     sync.Mutex
	p      LockoutPolicy
	peers  map[string]*peerFailures
	recent []time.Time // unauthenticated failures from all peers, within GlobalWindow
	global time.Time   // handshakes throttled until then
	slot   time.Time   // while throttled, the next handshake may start then
}

type peerFailures struct {
	n     int
	last  time.Time
	until time.Time
}

const maxPeers = 64

func newLockout(p LockoutPolicy) *lockout {
	return &lockout{p: p.withDefaults(), peers: map[string]*peerFailures{}}
}

// until returns when peer's backoff or the global throttle ends, for
// status; the zero time if neither holds.
func (l *lockout) until(peer string, now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clamp(now)
	u := l.global
	if f, ok := l.peers[peer]; ok && f.until.After(u) {
		u = f.until
	}
	if !u.After(now) {
		return time.Time{}
	}
	return u
}

// admit decides whether a handshake from peer may start at now: the zero
// time if it may, else when to try again. A peer in its own backoff waits
// for it. While the global throttle holds, a peer that is not reserved
// (bonded over an encrypted link) takes the one handshake slot of the
// current GlobalInterval, or waits for the next.
func (l *lockout) admit(peer string, reserved bool, now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clamp(now)
	if f, ok := l.peers[peer]; ok && f.until.After(now) {
		return f.until
	}
	if reserved || !l.global.After(now) {
		return time.Time{}
	}
	if l.slot.After(now) {
		return l.slot
	}
	l.slot = now.Add(l.p.GlobalInterval)
	return time.Time{}
}

// peerUntil returns when peer's own backoff ends; the zero time if it is
// not backed off. The global throttle does not apply: it gates new
// handshakes only, never an authenticated session's requests.
func (l *lockout) peerUntil(peer string, now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clamp(now)
	if f, ok := l.peers[peer]; ok && f.until.After(now) {
		return f.until
	}
	return time.Time{}
}

// clamp keeps every end within its longest duration from now. The times
// are on the lock's clock, which set-time may move back: without this, a
// clock moved back an hour would stretch a 5 s slot or a 60 s throttle to
// an hour. Called with mu held.
func (l *lockout) clamp(now time.Time) {
	if l.global.Sub(now) > l.p.GlobalLockout {
		l.global = now.Add(l.p.GlobalLockout)
	}
	if l.slot.Sub(now) > l.p.GlobalInterval {
		l.slot = now.Add(l.p.GlobalInterval)
	}
	for _, f := range l.peers {
		if f.until.Sub(now) > l.p.Max {
			f.until = now.Add(l.p.Max)
		}
	}
}

// fail records an unauthenticated failure of peer at now (a refused
// handshake or pairing): it counts for the peer and toward the global
// throttle. It returns the peer's lockout end, or the throttle's.
func (l *lockout) fail(peer string, now time.Time) time.Time {
	return l.failure(peer, now, true)
}

// failAuthenticated records a failure of an authenticated session's
// request: it counts for the peer's address only.
func (l *lockout) failAuthenticated(peer string, now time.Time) time.Time {
	return l.failure(peer, now, false)
}

func (l *lockout) failure(peer string, now time.Time, global bool) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.peers[peer]
	if !ok || now.Sub(f.last) > l.p.Forget {
		if !ok && len(l.peers) >= maxPeers {
			l.evictOldest()
		}
		f = &peerFailures{}
		l.peers[peer] = f
	}
	f.n++
	f.last = now
	if f.n > l.p.Free {
		d := l.p.Base << min(f.n-l.p.Free-1, 30)
		if d > l.p.Max || d <= 0 {
			d = l.p.Max
		}
		f.until = now.Add(d)
	}
	if !global {
		return f.until
	}
	cut := 0
	for cut < len(l.recent) && now.Sub(l.recent[cut]) > l.p.GlobalWindow {
		cut++
	}
	l.recent = append(l.recent[cut:], now)
	if len(l.recent) > l.p.GlobalFailures {
		l.global = now.Add(l.p.GlobalLockout)
		l.recent = l.recent[:0]
	}
	u := f.until
	if l.global.After(u) {
		u = l.global
	}
	return u
}

// failures returns peer's current failure count.
func (l *lockout) failures(peer string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f, ok := l.peers[peer]; ok {
		return f.n
	}
	return 0
}

func (l *lockout) evictOldest() {
	var oldest string
	var t time.Time
	for k, f := range l.peers {
		if oldest == "" || f.last.Before(t) {
			oldest, t = k, f.last
		}
	}
	delete(l.peers, oldest)
}
