package bluelink

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/edhoc"
)

// Identity binding (docs/protocol.md §5.8 step 12, docs/bluez.md
// "Impostors"). An advertisement is unauthenticated: anyone can advertise
// any lock ID. What binds a device to a lock is the handshake, in which the
// device proves a fleet credential whose subject is the lock ID dialled.
// A device that proves anything else (typically a genuine credential of
// another lock, its key read out of that lock's flash) is refused before
// any command or bonding, counted, logged with its address and both IDs,
// and its address is not dialled again for that lock for a while, so that
// the real lock advertising the same ID is reached instead.

// DefaultRefuseFor and DefaultMaxRefused are Options.RefuseFor's and
// Options.MaxRefused's defaults.
const (
	DefaultRefuseFor  = 10 * time.Minute
	DefaultMaxRefused = 256
)

// RefusedError is a device that did not prove the identity of the lock it
// was dialled for. It wraps ErrRefused, ErrImpostor when the device proved
// another lock's credential, and the handshake's error.
type RefusedError struct {
	// Lock is the lock ID dialled (the one the device advertised).
	Lock bonds.LockID
	// Address is the refused device's address; for a Dial that found
	// only refused devices, all of them, comma-separated.
	Address string
	// Presented is the subject of the genuine lock credential the device
	// proved instead (another lock's ID), "" if it proved none.
	Presented string
	// Others is whether another device advertising Lock, not refused, is
	// in range: a retry reaches it (Retryable).
	Others bool
	// Err is the handshake's error, or nil.
	Err error
}

func (e *RefusedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bluelink: lock %s: device %s refused", e.Lock, e.Address)
	if e.Presented != "" {
		fmt.Fprintf(&b, ": an impostor, it proved the credential of lock %s", e.Presented)
	} else {
		b.WriteString(": it did not prove the lock's identity")
	}
	if e.Others {
		b.WriteString("; another device advertising the lock is tried next")
	} else {
		b.WriteString("; no other device advertising the lock is in range")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns ErrRefused, ErrImpostor if the device proved another
// lock's credential, and Err.
func (e *RefusedError) Unwrap() []error {
	errs := []error{ErrRefused}
	if e.Presented != "" {
		errs = append(errs, ErrImpostor)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// boundResolver checks the peer's credential with the gateway's verifier
// bound to one lock's subject, and remembers why it refused one. It is
// used by one handshake, from its goroutine.
type boundResolver struct {
	bound, any *cred.Verifier

	refused   error  // the verifier's refusal, nil if none
	presented string // the subject of another lock's genuine credential
}

// newBoundResolver binds v (the gateway's verifier of lock credentials)
// to lock id.
func newBoundResolver(v *cred.Verifier, id bonds.LockID) *boundResolver {
	bound := *v
	bound.Subject = cred.LockSubject(id)
	// Only to name what an impostor proved: the same policy without the
	// subject, and without the cache, which keeps accepted credentials
	// only.
	any := *v
	any.Subject, any.Cache = "", nil
	return &boundResolver{bound: &bound, any: &any}
}

var _ edhoc.CredentialResolver = (*boundResolver)(nil)

// ResolveCredential implements edhoc.CredentialResolver.
func (r *boundResolver) ResolveCredential(idCred []byte) (edhoc.Credential, error) {
	c, err := r.bound.ResolveCredential(idCred)
	if err == nil {
		return c, nil
	}
	if errors.Is(err, edhoc.ErrCredentialRejected) {
		r.refused = err
		if errors.Is(err, cred.ErrWrongSubject) {
			if c2, err2 := r.any.ResolveCredential(idCred); err2 == nil {
				if cc, ok := c2.Info.(*cred.Cert); ok {
					r.presented = cc.Subject
				}
			}
		}
	}
	return c, err
}

// refusal is a device refused for a lock, remembered until until.
type refusal struct {
	until     time.Time
	presented string
}

type refusalKey struct {
	lock bonds.LockID
	addr string
}

// refusals remembers, for a while and for a bounded number of devices,
// which addresses were refused for which lock ID.
type refusals struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[refusalKey]refusal
}

func (r *refusals) add(id bonds.LockID, addr, presented string) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.purgeLocked(now)
	k := refusalKey{id, strings.ToUpper(addr)}
	if _, ok := r.m[k]; !ok && len(r.m) >= r.max {
		// Full of live entries: forget the one that expires first.
		var oldest refusalKey
		first := true
		for k2, v := range r.m {
			if first || v.until.Before(r.m[oldest].until) {
				oldest, first = k2, false
			}
		}
		delete(r.m, oldest)
	}
	r.m[k] = refusal{until: now.Add(r.ttl), presented: presented}
}

// get returns the live refusal of addr for lock id.
func (r *refusals) get(id bonds.LockID, addr string) (refusal, bool) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	k := refusalKey{id, strings.ToUpper(addr)}
	f, ok := r.m[k]
	if ok && !now.Before(f.until) {
		delete(r.m, k)
		return refusal{}, false
	}
	return f, ok
}

func (r *refusals) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.purgeLocked(r.now())
	return len(r.m)
}

func (r *refusals) purgeLocked(now time.Time) {
	for k, f := range r.m {
		if !now.Before(f.until) {
			delete(r.m, k)
		}
	}
}

// metrics are the Link's counters; Link is a prometheus.Collector.
type metrics struct {
	impostors prometheus.Counter
	refused   prometheus.Counter
	remember  *prometheus.Desc
}

func newMetrics() *metrics {
	return &metrics{
		impostors: prometheus.NewCounter(prometheus.CounterOpts{Name: "gatewayd_link_impostors_total",
			Help: "Devices that advertised a lock's ID and proved another lock's genuine credential in the handshake: refused before any command or bonding (docs/bluez.md, Impostors)."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "gatewayd_link_refused_devices_total",
			Help: "Devices dialled for a lock whose credential the gateway refused in the handshake (impostors included)."}),
		remember: prometheus.NewDesc("gatewayd_link_refused_addresses",
			"Device addresses the link avoids for a lock ID after refusing them, for RefuseFor (bounded).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (l *Link) Describe(ch chan<- *prometheus.Desc) {
	l.met.impostors.Describe(ch)
	l.met.refused.Describe(ch)
	ch <- l.met.remember
}

// Collect implements prometheus.Collector.
func (l *Link) Collect(ch chan<- prometheus.Metric) {
	l.met.impostors.Collect(ch)
	l.met.refused.Collect(ch)
	ch <- prometheus.MustNewConstMetric(l.met.remember, prometheus.GaugeValue, float64(l.refused.len()))
}
