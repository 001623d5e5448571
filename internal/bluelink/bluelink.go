// Package bluelink implements fleet.Link over the BlueZ client: a lock is
// found by its advertised lock ID in the adapter's presence table, reached
// with an LE connection (bluez.Adapter.Connect), and spoken to through the
// secure channel (firmware/channel: EDHOC, then protected frames over the
// GATT fragment transport) with a lockclient.
//
// It is the one place where bluez/, fleet/ and firmware/ meet, so neither
// of them imports the others. It may import those, bonds (for lock IDs)
// and the standard library.
//
// # Identity
//
// An advertisement proves nothing. Each handshake binds the gateway's
// verifier to the lock ID dialled (docs/protocol.md §5.8 step 12), so a
// device that proves another lock's genuine credential (an impostor) is
// refused before any command or bonding, counted, logged with its address
// and both IDs, and not dialled for that lock again for RefuseFor; Dial
// tries the lock's bonded address first, then the other devices
// advertising its ID (identity.go).
//
// # Bonding
//
// With Options.ShouldBond, a session bonds with its lock right after the
// handshake (design brief §6: bonding only adds link encryption; it is
// not authorisation). Over the secure channel the gateway asks the lock
// for a bond window for itself (allow-bond, which the gateway's own
// credential permits); the lock answers with the window's peer address
// and a one-time random passkey. If the window is open for our adapter's
// address, bluez.Pair bonds through our Agent1 (KeyboardOnly), which
// answers bluetoothd's RequestPasskey with that passkey for exactly this
// device. A bonding failure never fails the session: it is logged and
// reported through Options.OnBond. The passkey is never logged, put in an
// error, or kept.
package bluelink

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/frame"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
	"github.com/gatewayd/gatewayd/fleet"
)

// Options configures a Link.
type Options struct {
	// Adapter finds and connects locks. Required.
	Adapter *bluez.Adapter
	// Channel is the gateway's side of the secure channel: its credential
	// and key, and the verifier of lock credentials (Verifier; a Resolver
	// is refused, as it cannot be bound). Required. Each handshake binds a
	// copy of the verifier to the lock dialled (Subject, the lock's ID), so
	// a device proving another lock's credential is refused.
	Channel channel.Config
	// Fragment are the GATT fragmentation limits; zero is the defaults.
	Fragment fragment.Options
	// Logger; nil discards.
	Logger *slog.Logger

	// Conn is the D-Bus connection of Adapter, and Agent our Agent1
	// exported and registered on it: bluez.Pair needs both (bluetoothd
	// sends a pairing's requests to the agent of the connection that
	// called Pair). Required with ShouldBond. With Conn, the first Dial
	// of each lock also disconnects a connection bluetoothd still holds
	// from a previous run (see Dial).
	Conn  *dbus.Conn
	Agent *bluez.Agent
	// ShouldBond is asked after each successful handshake whether to bond
	// with the lock (addr is its BLE address as the adapter sees it). It
	// is called from the session's goroutine and should be cheap. nil
	// never bonds.
	ShouldBond func(lock bonds.LockID, addr string) bool
	// OnBond, if not nil, is told about each bonding the link does or
	// finds, with the state to record (bonds.DB.SetBond):
	//   - bonds.BondBonding, err nil: an attempt starts (before allow-bond);
	//   - bonds.BondBonded, err nil: the attempt bonded, or BlueZ already
	//     holds a bond with the device (Device1.Paired, or Pair answered
	//     AlreadyExists); in the last two cases bonding is not reported
	//     first, as no attempt was made;
	//   - bonds.BondNone, err not nil: the attempt failed (allow-bond
	//     refused, the window open for another peer, Pair failed or timed
	//     out). None is what BlueZ holds after a failed pairing; a caller
	//     that wants to keep a lost bond marked lost remembers the state
	//     it had when ShouldBond said yes, and records that instead.
	// It is called from the session's goroutine, before Handshake returns.
	OnBond func(lock bonds.LockID, addr string, state bonds.BondState, err error)
	// BondTimeout bounds one bonding attempt (allow-bond, the Paired and
	// adapter address reads, Pair); 0 is DefaultBondTimeout. It is also
	// the bond window asked of the lock, clamped to 1..command.MaxBondWindow
	// seconds. The handshake's deadline does not cut it short (it has its
	// own budget); cancelling the handshake's context does.
	BondTimeout time.Duration

	// Address, if not nil, returns the address the lock last proved its
	// identity from (the database's bonded address), "" if none: Dial
	// tries that device first among those advertising the lock's ID.
	Address func(lock bonds.LockID) string
	// OnVerified, if not nil, is told after each handshake in which the
	// lock proved its identity (a credential with the dialled lock ID as
	// subject): the device's address and the credential. It is called from
	// the session's goroutine, before ShouldBond.
	OnVerified func(lock bonds.LockID, addr string, credential []byte)
	// OnRefused, if not nil, is told about each device refused in the
	// handshake because it did not prove the lock's identity: presented is
	// the other lock's ID its credential names (an impostor), "" if none.
	// A caller that recorded addr as the lock's forgets it (and its bond).
	// It is called from the session's goroutine.
	OnRefused func(lock bonds.LockID, addr, presented string)
	// RefuseFor is how long a device whose credential was refused for a
	// lock is not dialled again for that lock (0: DefaultRefuseFor), and
	// MaxRefused how many such devices are remembered at most (0:
	// DefaultMaxRefused; past it, the one whose time ends first is
	// forgotten).
	RefuseFor  time.Duration
	MaxRefused int
	// Now is the clock of RefuseFor; nil is time.Now.
	Now func() time.Time
	// Revocations, if not nil, returns the fleet revocation list the
	// gateway holds (nil: none). After each handshake the link hands it
	// to a lock whose status reports an older serial (docs/protocol.md
	// §13.9); the outcome does not change Handshake's.
	Revocations func() *cred.Revocations
	// Roots, if not nil, is asked for the fleet roots at each handshake,
	// replacing Channel.Verifier's Roots (the daemon swaps them on a
	// reload, SIGHUP). The map it returns must not change.
	Roots func() cred.Roots
}

// DefaultBondTimeout is Options.BondTimeout's default: the lock's default
// bond window (command.DefaultBondWindow).
const DefaultBondTimeout = 30 * time.Second

// Link reaches locks through BlueZ. It satisfies fleet.Link.
type Link struct {
	opts    Options
	log     *slog.Logger
	refused *refusals
	met     *metrics

	// lockSerial is the revocation serial each lock last reported (or was
	// given), so a session asks status only when the gateway's list is
	// newer than what it knows of the lock.
	serialMu   sync.Mutex
	lockSerial map[bonds.LockID]uint64

	mu      sync.Mutex
	checked map[dbus.ObjectPath]bool // devices checked for a stale connection
}

// New returns a Link.
func New(opts Options) (*Link, error) {
	if opts.Adapter == nil || opts.Channel.Cert == nil || opts.Channel.Verifier == nil {
		return nil, errors.New("bluelink: Adapter and Channel (with its Verifier) are required")
	}
	if opts.Channel.Resolver != nil {
		return nil, errors.New("bluelink: Channel.Resolver cannot be bound to the lock dialled; use Channel.Verifier")
	}
	if opts.RefuseFor < 0 || opts.MaxRefused < 0 {
		return nil, errors.New("bluelink: negative RefuseFor or MaxRefused")
	}
	if opts.RefuseFor == 0 {
		opts.RefuseFor = DefaultRefuseFor
	}
	if opts.MaxRefused == 0 {
		opts.MaxRefused = DefaultMaxRefused
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ShouldBond != nil && (opts.Conn == nil || opts.Agent == nil) {
		return nil, errors.New("bluelink: ShouldBond needs Conn and Agent")
	}
	if opts.BondTimeout < 0 {
		return nil, errors.New("bluelink: negative BondTimeout")
	}
	if opts.BondTimeout == 0 {
		opts.BondTimeout = DefaultBondTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Link{opts: opts, log: opts.Logger.With("subsystem", "bluelink"), met: newMetrics(),
		refused: &refusals{ttl: opts.RefuseFor, max: opts.MaxRefused, now: opts.Now, m: map[refusalKey]refusal{}}, lockSerial: map[bonds.LockID]uint64{},
		checked: map[dbus.ObjectPath]bool{}}, nil
}

var _ fleet.Link = (*Link)(nil)

// Dial connects to the lock with ID id, if the adapter hears it. The
// handshake runs in Session.Handshake, after the scheduler released its
// connect slot.
//
// Several devices may advertise the same ID (an impostor beside the real
// lock): Dial tries the address the lock last proved its identity from
// (Options.Address) first, then the others in the adapter's order, and
// skips those refused for this lock within RefuseFor. If every device
// advertising the ID was refused, it fails with a *RefusedError (not
// retryable).
//
// The first Dial of a lock (with Options.Conn) disconnects it first if
// bluetoothd says it is connected already: nothing of this Link holds
// that connection, so a previous run of gatewayd, SIGKILLed in a session,
// left it, and the lock is still in that run's secure channel; reusing the
// connection would have the new handshake wait until the lock gives up on
// the old session.
func (l *Link) Dial(ctx context.Context, id bonds.LockID) (fleet.Session, error) {
	cands, refused := l.candidates(id)
	if len(cands) == 0 {
		if len(refused) > 0 {
			e := &RefusedError{Lock: id, Address: strings.Join(refused, ","), Err: ErrRefused}
			for _, a := range refused {
				if f, ok := l.refused.get(id, a); ok && f.presented != "" {
					e.Presented = f.presented
				}
			}
			return nil, fmt.Errorf("bluelink: dial %s: every device advertising it was refused: %w", id, e)
		}
		return nil, fmt.Errorf("bluelink: dial %s: %w", id, fleet.ErrLockAway)
	}
	found := &cands[0]
	l.resetStale(ctx, id, found.Path)
	dev, err := l.opts.Adapter.Connect(ctx, bluez.DeviceOptions{Path: found.Path, Logger: l.opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("bluelink: connect %s (%s): %w", id, found.Address, err)
	}
	return &session{l: l, id: id, addr: found.Address, path: found.Path, dev: dev}, nil
}

// candidates are the devices advertising id that were not refused for it,
// the address it last proved its identity from first; refused are the
// addresses of those that were.
func (l *Link) candidates(id bonds.LockID) (cands []bluez.LockInfo, refused []string) {
	pref := ""
	if l.opts.Address != nil {
		pref = l.opts.Address(id)
	}
	for _, li := range l.opts.Adapter.Locks() {
		if li.Err != nil || li.LockID != id {
			continue
		}
		if _, ok := l.refused.get(id, li.Address); ok {
			refused = append(refused, li.Address)
			continue
		}
		if pref != "" && strings.EqualFold(li.Address, pref) {
			cands = append([]bluez.LockInfo{li}, cands...)
		} else {
			cands = append(cands, li)
		}
	}
	return cands, refused
}

// refuse records that the device of s did not prove the identity of its
// lock: the refusal is remembered, counted and logged, and the error says
// whether another device advertising the lock can be tried.
func (l *Link) refuse(s *session, res *boundResolver, err error) error {
	l.refused.add(s.id, s.addr, res.presented)
	l.met.refused.Inc()
	if o := l.opts.OnRefused; o != nil {
		o(s.id, s.addr, res.presented)
	}
	cands, _ := l.candidates(s.id)
	e := &RefusedError{Lock: s.id, Address: s.addr, Presented: res.presented, Others: len(cands) > 0, Err: err}
	if res.presented != "" {
		l.met.impostors.Inc()
		l.log.Warn("impostor refused: a device advertising the lock's ID proved another lock's credential",
			"addr", s.addr, "lock", s.id.String(), "presented_lock", res.presented, "others_in_range", len(cands),
			"avoided_for", l.opts.RefuseFor)
	} else {
		l.log.Warn("device refused: its credential does not prove the lock's identity",
			"addr", s.addr, "lock", s.id.String(), "others_in_range", len(cands), "avoided_for", l.opts.RefuseFor, "err", res.refused)
	}
	return e
}

// staleWait bounds the wait for a stale connection to go down.
const staleWait = 5 * time.Second

// resetStale disconnects the device at path if bluetoothd holds a
// connection to it that this Link did not make, once per device (see
// Dial). Failures are logged: the connect that follows finds out.
func (l *Link) resetStale(ctx context.Context, id bonds.LockID, path dbus.ObjectPath) {
	if l.opts.Conn == nil {
		return
	}
	l.mu.Lock()
	done := l.checked[path]
	l.mu.Unlock()
	if done {
		return
	}
	connected, err := l.connected(ctx, path)
	if err != nil {
		l.log.Debug("reading Device1.Connected before the first dial", "lock", id.String(), "err", err)
		return
	}
	l.mu.Lock()
	l.checked[path] = true
	l.mu.Unlock()
	if !connected {
		return
	}
	l.log.Info("lock connected before this run's first dial (a previous run was killed in a session?): disconnecting the stale link first",
		"lock", id.String())
	wctx, cancel := context.WithTimeout(ctx, staleWait)
	defer cancel()
	err = l.opts.Conn.Object(bluez.BusName, path).CallWithContext(wctx, bluez.IfaceDevice+".Disconnect", 0).Err
	if err := bluez.MapError(err); err != nil && !errors.Is(err, bluez.ErrNotConnected) {
		l.log.Warn("disconnecting a stale link", "lock", id.String(), "err", err)
		return
	}
	// bluetoothd answers before the link is down; a connect in between
	// reuses it (and has crashed a kernel: see bluez.Device.Close).
	for {
		c, err := l.connected(wctx, path)
		if err != nil || !c {
			return
		}
		select {
		case <-wctx.Done():
			l.log.Warn("stale link still up after Disconnect", "lock", id.String(), "err", wctx.Err())
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// connected reads the device's Device1.Connected.
func (l *Link) connected(ctx context.Context, path dbus.ObjectPath) (bool, error) {
	v, err := l.property(ctx, path, bluez.IfaceDevice+".Connected")
	if err != nil {
		return false, err
	}
	c, ok := v.Value().(bool)
	if !ok {
		return false, fmt.Errorf("bluelink: Device1.Connected is %s", v.Signature())
	}
	return c, nil
}

type session struct {
	l    *Link
	id   bonds.LockID
	addr string
	path dbus.ObjectPath
	dev  *bluez.Device

	mu   sync.Mutex
	conn *channel.Conn
	lc   *lockclient.Client
}

// Handshake runs EDHOC with the lock: both sides prove their fleet
// credentials, and the session keys are derived. Then, if
// Options.ShouldBond says so, it bonds (see the package doc); the outcome
// of that does not change Handshake's.
//
// A failed pairing costs the link: real BlueZ (5.66, Linux 6.1) drops it
// after SMP's Pairing Failed (the real-BlueZ tier, docs/real-bluez.md),
// and the next connection can wait seconds while bluetoothd resumes
// discovery. So after a failed bonding the session connects again (with
// the rest of ctx, not one short attempt) and runs the handshake once
// more, without bonding, for the command it was opened for.
func (s *session) Handshake(ctx context.Context) error {
	bondFailed, err := s.handshake(ctx, true)
	if err != nil || !bondFailed {
		return err
	}
	s.l.log.Info("the failed pairing dropped the link; connecting again for the session's command",
		"lock", s.id.String(), "addr", s.addr)
	s.mu.Lock()
	s.conn, s.lc = nil, nil
	s.mu.Unlock()
	if err := s.dev.Close(); err != nil {
		s.l.log.Debug("closing the link of the failed pairing", "lock", s.id.String(), "err", err)
	}
	dev, err := s.l.opts.Adapter.Connect(ctx, bluez.DeviceOptions{Path: s.path, Logger: s.l.opts.Logger})
	if err != nil {
		return fmt.Errorf("bluelink: connect %s (%s) again after a failed pairing: %w", s.id, s.addr, err)
	}
	s.dev = dev
	_, err = s.handshake(ctx, false)
	return err
}

// handshake is Handshake's EDHOC, then the bonding if bond and
// ShouldBond say so; bondFailed reports a bonding attempt that failed.
func (s *session) handshake(ctx context.Context, bond bool) (bondFailed bool, _ error) {
	cfg := s.l.opts.Channel
	v := cfg.Verifier
	if s.l.opts.Roots != nil {
		vc := *v
		vc.Roots = s.l.opts.Roots()
		v = &vc
	}
	res := newBoundResolver(v, s.id)
	cfg.Verifier, cfg.Resolver = res.bound, res
	conn, err := channel.Dial(ctx, channel.NewFragmentTransport(s.dev, s.l.opts.Fragment), cfg)
	if err != nil {
		if res.refused != nil {
			return false, fmt.Errorf("bluelink: handshake with %s (%s): %w", s.id, s.addr, s.l.refuse(s, res, err))
		}
		return false, fmt.Errorf("bluelink: handshake with %s (%s): %w", s.id, s.addr, err)
	}
	peer := conn.Peer()
	if peer == nil || peer.Kind != cred.KindLock || peer.Subject != cred.LockSubject(s.id) {
		// The bound verifier refuses this; never go on without the proof.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = conn.Close(cctx, frame.CloseNormal)
		cancel()
		return false, fmt.Errorf("bluelink: handshake with %s (%s): %w", s.id, s.addr, ErrRefused)
	}
	var list *cred.Revocations
	if s.l.opts.Revocations != nil {
		list = s.l.opts.Revocations()
	}
	if list.IsRevoked(peer.KID) {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = conn.Close(cctx, frame.CloseNormal)
		cancel()
		return false, fmt.Errorf("bluelink: handshake with %s (%s): %w by revocation list %d", s.id, s.addr, ErrLockRevoked, list.Serial)
	}
	if o := s.l.opts.OnVerified; o != nil {
		o(s.id, s.addr, peer.Raw)
	}
	lc := lockclient.New(conn)
	s.mu.Lock()
	s.conn, s.lc = conn, lc
	s.mu.Unlock()
	if bond && s.maybeBond(ctx, lc) {
		return true, nil
	}
	s.syncRevocations(ctx, lc, list)
	return false, nil
}

// RevocationTimeout bounds the status and set-revocations that hand a
// newer revocation list to a lock after a handshake.
const RevocationTimeout = 10 * time.Second

// syncRevocations hands the gateway's revocation list to the lock if the
// lock holds an older one: status tells the lock's serial (asked only when
// the list is newer than what the link last learnt of this lock), then
// set-revocations. Failures are logged; the next session tries again.
func (s *session) syncRevocations(ctx context.Context, lc *lockclient.Client, list *cred.Revocations) {
	if list == nil {
		return
	}
	l := s.l
	l.serialMu.Lock()
	known := l.lockSerial[s.id]
	l.serialMu.Unlock()
	if known >= list.Serial {
		return
	}
	log := l.log.With("lock", s.id.String(), "serial", list.Serial)
	rctx, cancel := context.WithTimeout(ctx, RevocationTimeout)
	defer cancel()
	r, err := lc.Status(rctx)
	if err != nil || r.Status != command.StatusOK {
		log.Warn("revocation list not delivered: status failed", "err", err, "status", statusOf(r))
		return
	}
	st, err := r.LockStatus()
	if err != nil {
		log.Warn("revocation list not delivered: status data", "err", err)
		return
	}
	if st.Revocations < list.Serial {
		r, err = lc.SetRevocations(rctx, list.Raw)
		if err != nil || r.Status != command.StatusOK {
			log.Warn("revocation list not delivered", "lock_serial", st.Revocations, "err", err, "status", statusOf(r))
			return
		}
		log.Info("revocation list delivered", "lock_serial", st.Revocations)
		st.Revocations = list.Serial
	}
	l.serialMu.Lock()
	l.lockSerial[s.id] = st.Revocations
	l.serialMu.Unlock()
}

func statusOf(r *command.Result) string {
	if r == nil {
		return ""
	}
	return r.Status.String()
}

// maybeBond bonds with the lock if ShouldBond says so and BlueZ holds no
// bond with it yet, and reports through OnBond. failed is a bonding
// attempt that failed.
func (s *session) maybeBond(ctx context.Context, lc *lockclient.Client) (failed bool) {
	o := &s.l.opts
	if o.ShouldBond == nil || !o.ShouldBond(s.id, s.addr) {
		return false
	}
	report := func(state bonds.BondState, err error) {
		if o.OnBond != nil {
			o.OnBond(s.id, s.addr, state, err)
		}
	}
	log := s.l.log.With("lock", s.id.String(), "addr", s.addr)
	// Its own budget, not the rest of the handshake's; a cancelled ctx
	// (the scheduler stopping) still ends it.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.BondTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			cancel()
		}
	})
	defer stop()

	paired, err := s.paired(bctx)
	switch {
	case err != nil:
		// Pair answers AlreadyExists if it is: try.
		log.Debug("reading Device1.Paired failed; trying to bond", "err", err)
	case paired:
		log.Info("BlueZ already holds a bond with the lock")
		report(bonds.BondBonded, nil)
		return false
	}
	report(bonds.BondBonding, nil)
	start := time.Now()
	already, paired, err := s.bond(bctx, lc)
	if err != nil {
		log.Warn("bonding failed; the session goes on unbonded", "err", err)
		report(bonds.BondNone, err)
		// A failed Pair: SMP failed and BlueZ drops the link.
		return paired
	}
	if already {
		log.Info("BlueZ already holds a bond with the lock")
	} else {
		log.Info("bonded", "took", time.Since(start).Round(time.Millisecond))
	}
	report(bonds.BondBonded, nil)
	return false
}

// bond opens a bond window over the secure channel and pairs with its
// passkey. already is BlueZ answering that it holds a bond; paired is
// Device1.Pair having been called (its failure drops the link). Errors
// never hold the passkey.
func (s *session) bond(ctx context.Context, lc *lockclient.Client) (already, paired bool, err error) {
	o := &s.l.opts
	window := min(max(o.BondTimeout.Round(time.Second), time.Second), command.MaxBondWindow*time.Second)
	r, err := lc.AllowBond(ctx, window)
	if err != nil {
		return false, false, fmt.Errorf("bluelink: allow-bond on %s: %w", s.id, err)
	}
	if r.Status != command.StatusOK {
		return false, false, fmt.Errorf("bluelink: allow-bond on %s: the lock answered %v %q", s.id, r.Status, r.Detail)
	}
	win, err := r.BondWindow()
	if err != nil {
		return false, false, fmt.Errorf("bluelink: allow-bond on %s: %w", s.id, err)
	}
	own, err := s.l.adapterAddress(ctx)
	if err != nil {
		return false, false, fmt.Errorf("bluelink: reading our adapter's address: %w", err)
	}
	if !strings.EqualFold(win.Peer, own) {
		return false, false, fmt.Errorf("%w: it is open for %s, our adapter is %s", ErrBondPeer, win.Peer, own)
	}
	err = bluez.Pair(ctx, o.Conn, o.Agent, s.path, win.Passkey)
	switch {
	case err == nil:
		return false, true, nil
	case errors.Is(err, bluez.ErrAlreadyExists):
		return true, true, nil
	}
	return false, true, fmt.Errorf("bluelink: pairing with %s (%s): %w", s.id, s.addr, err)
}

// paired reads the device's Device1.Paired.
func (s *session) paired(ctx context.Context) (bool, error) {
	v, err := s.l.property(ctx, s.path, bluez.IfaceDevice+".Paired")
	if err != nil {
		return false, err
	}
	p, ok := v.Value().(bool)
	if !ok {
		return false, fmt.Errorf("bluelink: Device1.Paired is %s", v.Signature())
	}
	return p, nil
}

// adapterAddress reads our adapter's Adapter1.Address: the peer address
// a lock sees, for which its bond window must be open. It is read for
// each bonding (rare), so a replaced adapter is not a stale address.
func (l *Link) adapterAddress(ctx context.Context) (string, error) {
	v, err := l.property(ctx, l.opts.Adapter.Path(), bluez.IfaceAdapter+".Address")
	if err != nil {
		return "", err
	}
	a, ok := v.Value().(string)
	if !ok || a == "" {
		return "", fmt.Errorf("bluelink: Adapter1.Address is %s %q", v.Signature(), a)
	}
	return a, nil
}

// property gets one D-Bus property (iface.name) of a BlueZ object.
func (l *Link) property(ctx context.Context, path dbus.ObjectPath, prop string) (dbus.Variant, error) {
	i := strings.LastIndexByte(prop, '.')
	var v dbus.Variant
	err := l.opts.Conn.Object(bluez.BusName, path).CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, prop[:i], prop[i+1:]).Store(&v)
	if err != nil {
		return v, fmt.Errorf("bluelink: reading %s of %s: %w", prop, path, bluez.MapError(err))
	}
	return v, nil
}

// PeerCredential is the lock's fleet credential (CWT) as it proved it in
// the handshake; nil before the handshake.
func (s *session) PeerCredential() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil || s.conn.Peer() == nil {
		return nil
	}
	return s.conn.Peer().Raw
}

// PeerKey is the lock's public key from its credential, as it proved it
// in the handshake (fleet.PeerKeyer); nil before the handshake.
func (s *session) PeerKey() ed25519.PublicKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil || s.conn.Peer() == nil {
		return nil
	}
	return s.conn.Peer().PublicKey
}

// client returns the session's lock client, after a handshake if there
// is none yet.
func (s *session) client(ctx context.Context) (*lockclient.Client, error) {
	s.mu.Lock()
	lc := s.lc
	s.mu.Unlock()
	if lc != nil {
		return lc, nil
	}
	if err := s.Handshake(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	lc = s.lc
	s.mu.Unlock()
	return lc, nil
}

// Do sends one request (signed, or for the gateway's own permissions when
// signed is nil).
func (s *session) Do(ctx context.Context, op command.Op, signed []byte) (*command.Result, error) {
	lc, err := s.client(ctx)
	if err != nil {
		return nil, err
	}
	var r *command.Result
	if signed == nil {
		r, err = lc.Do(ctx, command.Request{Op: op})
	} else {
		r, err = lc.Signed(ctx, op, signed)
	}
	if err != nil {
		return nil, fmt.Errorf("bluelink: %v on %s: %w", op, s.id, err)
	}
	return r, nil
}

var _ fleet.AuditReader = (*session)(nil)

// ReadAudit sends read-audit on the gateway's own credential (a
// gateway-role operation): up to max entries from fromSeq on.
func (s *session) ReadAudit(ctx context.Context, fromSeq uint64, max int) (*command.Result, error) {
	if fromSeq > math.MaxUint32 || max < 1 || max > command.MaxAuditEntries {
		return nil, fmt.Errorf("bluelink: read-audit on %s from %d, max %d: out of the protocol's range", s.id, fromSeq, max)
	}
	lc, err := s.client(ctx)
	if err != nil {
		return nil, err
	}
	r, err := lc.ReadAudit(ctx, uint32(fromSeq), uint8(max))
	if err != nil {
		return nil, fmt.Errorf("bluelink: read-audit on %s: %w", s.id, err)
	}
	return r, nil
}

// Close ends the session politely (a protected close frame, bounded to a
// second) and disconnects.
func (s *session) Close() error {
	s.mu.Lock()
	conn := s.conn
	s.conn, s.lc = nil, nil
	s.mu.Unlock()
	if conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(ctx, frame.CloseNormal)
		cancel()
	}
	return s.dev.Close()
}

// Retryable says whether a Link error may succeed on a later attempt: the
// lock is away, BlueZ said so (bluez.Retryable: busy, aborted, bluetoothd
// restarting, the link dropped), or a deadline passed. A handshake the lock
// refused (a credential problem) is not. A lock that closed the session
// (idle, rekey) is retryable.
//
// A device refused because it did not prove the lock's identity
// (*RefusedError) is retryable only while another device advertising the
// lock is in range: the next Dial reaches that one.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	if re, ok := errors.AsType[*RefusedError](err); ok {
		return re.Others
	}
	if errors.Is(err, fleet.ErrLockAway) || bluez.Retryable(err) {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, channel.ErrPeerClosed)
}
