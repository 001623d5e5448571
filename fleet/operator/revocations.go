package operator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/internal/atomicfile"
)

// RevocationsOptions configures NewRevocations. Roots is required.
type RevocationsOptions struct {
	// Roots are the fleet roots a list must be signed by.
	Roots cred.Roots
	// Path is the file that keeps the newest list across restarts (the
	// daemon puts it beside the database); "" keeps it in memory only.
	Path string
	// OwnKID is the gateway's own credential kid: a list that revokes it
	// is logged at error level (the locks will refuse this gateway).
	OwnKID []byte
	// GatewayID names the gateway in the log.
	GatewayID string
	Logger    *slog.Logger // nil discards
}

// Revocations holds the newest fleet revocation list the gateway has
// verified (docs/mqtt.md "Revocations", docs/protocol.md §5.11). It takes
// lists from the retained revocations topic, keeps only a newer one
// (higher serial) and writes it to Path before using it; the intake asks
// it whether a signer is revoked, the link hands its list to locks that
// hold an older one. Its methods are safe for concurrent use.
type Revocations struct {
	opts RevocationsOptions
	log  *slog.Logger

	mu    sync.Mutex // serialises Offer, SetRoots and Reload
	cur   atomic.Pointer[cred.Revocations]
	roots atomic.Pointer[cred.Roots] // the roots lists must be signed by (SetRoots)

	installed, refused                  atomic.Uint64
	descSerial, descOffers, descRevoked *prometheus.Desc
}

// NewRevocations returns the store, with the list from Path if there is
// one. A file that does not verify is an error: starting without it could
// let an older list (or none) re-admit revoked credentials until the
// retained message arrives.
func NewRevocations(o RevocationsOptions) (*Revocations, error) {
	if len(o.Roots) == 0 {
		return nil, fmt.Errorf("%w: revocations need the fleet Roots", ErrOptions)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Revocations{opts: o, log: o.Logger.With("subsystem", "revocations", "gateway", o.GatewayID)}
	r.roots.Store(&o.Roots)
	var l prometheus.Labels // none: the scrape target names the dock
	r.descSerial = prometheus.NewDesc("gatewayd_revocations_serial",
		"Serial of the fleet revocation list the gateway holds (0: none); it hands the list to locks that report an older one.", nil, l)
	r.descOffers = prometheus.NewDesc("gatewayd_revocations_offers_total",
		"Revocation lists received, by outcome: installed (newer, verified and stored), refused (not signed by a fleet root, malformed, or older than the one held, or not stored).",
		[]string{"outcome"}, l)
	r.descRevoked = prometheus.NewDesc("gatewayd_revocations_gateway_revoked",
		"1 if the revocation list the gateway holds revokes this gateway's own credential (locks refuse its handshakes; issue it a new credential), else 0.", nil, l)
	if o.Path == "" {
		return r, nil
	}
	raw, err := os.ReadFile(o.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("operator: reading the revocation list: %w", err)
	}
	list, err := cred.ParseRevocations(raw, o.Roots)
	if err != nil {
		return nil, fmt.Errorf("operator: revocation list %s: %w", o.Path, err)
	}
	r.cur.Store(list)
	r.warnOwn(list)
	return r, nil
}

// Current returns the list held, or nil.
func (r *Revocations) Current() *cred.Revocations { return r.cur.Load() }

// OwnRevoked reports whether the held list revokes the gateway's own
// credential (RevocationsOptions.OwnKID).
func (r *Revocations) OwnRevoked() bool {
	l := r.cur.Load()
	return l != nil && len(r.opts.OwnKID) > 0 && l.IsRevoked(r.opts.OwnKID)
}

// Revoked reports whether the held list revokes kid, and the list's serial.
func (r *Revocations) Revoked(kid []byte) (serial uint64, revoked bool) {
	l := r.cur.Load()
	if l == nil {
		return 0, false
	}
	return l.Serial, l.IsRevoked(kid)
}

// Offer verifies raw and installs it if its serial is above the held
// list's: written to Path first, then used. The same list again is
// accepted and changes nothing. An older list, another list with the same
// serial, or one that does not verify is refused with an error wrapping
// ErrRevocations (and, for a bad list, the firmware/cred sentinel).
func (r *Revocations) Offer(raw []byte) (installed bool, err error) {
	defer func() {
		if err != nil {
			r.refused.Add(1)
		}
	}()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.offer(raw)
}

// offer is Offer under mu.
func (r *Revocations) offer(raw []byte) (installed bool, err error) {
	list, err := cred.ParseRevocations(raw, *r.roots.Load())
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrRevocations, err)
	}
	cur := r.cur.Load()
	switch {
	case cur != nil && list.Serial < cur.Serial:
		return false, fmt.Errorf("%w: list %d is older than the one held (%d)", ErrRevocations, list.Serial, cur.Serial)
	case cur != nil && list.Serial == cur.Serial && !bytes.Equal(list.Raw, cur.Raw):
		return false, fmt.Errorf("%w: another list %d is already held", ErrRevocations, list.Serial)
	case cur != nil && list.Serial == cur.Serial:
		return false, nil
	}
	if r.opts.Path != "" {
		if err := atomicfile.Write(r.opts.Path, 0o644, func(w io.Writer) error { _, err := w.Write(list.Raw); return err }); err != nil {
			return false, fmt.Errorf("%w: storing list %d: %w", ErrRevocations, list.Serial, err)
		}
	}
	r.cur.Store(list)
	r.installed.Add(1)
	r.log.Warn("revocation list installed", "serial", list.Serial, "revoked", len(list.Revoked), "issued_at", list.IssuedAt)
	r.warnOwn(list)
	return true, nil
}

// SetRoots makes roots the fleet roots lists must be signed by, for a
// reload of the fleet roots (SIGHUP). The list held must verify under
// them: otherwise the roots are refused with an error wrapping
// ErrRevocations (and the firmware/cred sentinel), and the old roots
// stay. Dropping the root that signed the held list would leave the
// gateway with no list it can trust until a new one arrives, so that is
// the operator's decision to make with a restart (which refuses to start
// in that case, naming the file to delete).
func (r *Revocations) SetRoots(roots cred.Roots) error {
	if len(roots) == 0 {
		return fmt.Errorf("%w: no fleet roots", ErrRevocations)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur := r.cur.Load(); cur != nil {
		if _, err := cred.ParseRevocations(cur.Raw, roots); err != nil {
			return fmt.Errorf("%w: the revocation list held (serial %d) does not verify under the new fleet roots: %w",
				ErrRevocations, cur.Serial, err)
		}
	}
	r.roots.Store(&roots)
	return nil
}

// Reload reads the list at Path again (a reload, SIGHUP) and installs it
// if it is newer than the one held, as Offer does; the same list changes
// nothing. So a list copied there by hand (a dock cut off from the
// broker) takes effect without a restart. A missing file, or no Path,
// is not an error.
func (r *Revocations) Reload() (installed bool, err error) {
	if r.opts.Path == "" {
		return false, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	raw, err := os.ReadFile(r.opts.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: reading the revocation list: %w", ErrRevocations, err)
	}
	installed, err = r.offer(raw)
	if err != nil {
		r.refused.Add(1)
	}
	return installed, err
}

func (r *Revocations) warnOwn(list *cred.Revocations) {
	if len(r.opts.OwnKID) > 0 && list.IsRevoked(r.opts.OwnKID) {
		r.log.Error("THIS GATEWAY'S CREDENTIAL IS REVOKED by the fleet revocation list: locks will refuse its handshakes; replace its credential",
			"serial", list.Serial, "kid", fmt.Sprintf("%x", r.opts.OwnKID))
	}
}

// Handle takes one message of the revocations topic: it offers the list,
// logs the outcome and acknowledges the message (a refused list is not
// retried: the same bytes would be refused again). An empty payload (a
// cleared retained message) is ignored.
func (r *Revocations) Handle(m Message) {
	defer func() {
		if m.Ack != nil {
			m.Ack()
		}
	}()
	if len(m.Payload) == 0 {
		return
	}
	if _, err := r.Offer(m.Payload); err != nil {
		r.log.Warn("revocation list refused", "payload_size", len(m.Payload), "err", err)
	}
}

// Describe implements prometheus.Collector.
func (r *Revocations) Describe(ch chan<- *prometheus.Desc) {
	ch <- r.descSerial
	ch <- r.descOffers
	ch <- r.descRevoked
}

// Collect implements prometheus.Collector.
func (r *Revocations) Collect(ch chan<- prometheus.Metric) {
	serial := uint64(0)
	if l := r.cur.Load(); l != nil {
		serial = l.Serial
	}
	ch <- prometheus.MustNewConstMetric(r.descSerial, prometheus.GaugeValue, float64(serial))
	ch <- prometheus.MustNewConstMetric(r.descOffers, prometheus.CounterValue, float64(r.installed.Load()), "installed")
	ch <- prometheus.MustNewConstMetric(r.descOffers, prometheus.CounterValue, float64(r.refused.Load()), "refused")
	revoked := 0.0
	if r.OwnRevoked() {
		revoked = 1
	}
	ch <- prometheus.MustNewConstMetric(r.descRevoked, prometheus.GaugeValue, revoked)
}
