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
	// GlobalFailures is the number of failures from all peers together,
	// within GlobalWindow, above which every peer is locked out for
	// GlobalLockout: an attacker who rotates BLE addresses gains nothing
	// (defaults 20 in 60 s, 60 s).
	GlobalFailures int
	GlobalWindow   time.Duration
	GlobalLockout  time.Duration
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
	recent []time.Time // failures from all peers, within GlobalWindow
	global time.Time   // everyone locked out until then
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

// until returns when peer may try again; the zero time if it may now.
func (l *lockout) until(peer string, now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.global
	if f, ok := l.peers[peer]; ok && f.until.After(u) {
		u = f.until
	}
	if !u.After(now) {
		return time.Time{}
	}
	return u
}

// fail records a failure of peer at now and returns its lockout end.
func (l *lockout) fail(peer string, now time.Time) time.Time {
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
