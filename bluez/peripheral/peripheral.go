package peripheral

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/internal/locklink"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
)

// D-Bus names of the peripheral side of BlueZ.
const (
	ifaceProps      = "org.freedesktop.DBus.Properties"
	ifaceOM         = "org.freedesktop.DBus.ObjectManager"
	ifaceIntro      = "org.freedesktop.DBus.Introspectable"
	ifaceGattMgr    = "org.bluez.GattManager1"
	ifaceAdvMgr     = "org.bluez.LEAdvertisingManager1"
	ifaceAdv        = "org.bluez.LEAdvertisement1"
	ifaceService    = "org.bluez.GattService1"
	ifaceChar       = "org.bluez.GattCharacteristic1"
	agentCapability = "KeyboardOnly"
)

// InfoUUID is the lock's Info characteristic (docs/protocol.md §1).
const InfoUUID = "97510004-ce6d-40c7-b7c2-022a651afaf6"

// infoValue is Info's value: version 1, MaxMessage 2048, flags 0 (§1).
var infoValue = []byte{0x01, 0x08, 0x00, 0x00}

// Options configure a Peripheral. Adapter and Lock are required.
type Options struct {
	Adapter string     // adapter name, e.g. "hci1"
	Lock    *lock.Lock // the lock behind the GATT service
	// Path is where the objects are exported; "" is
	// /org/gatewayd/peripheral/<Adapter>.
	Path dbus.ObjectPath
	// Readvertise is how often the advertisement is registered again; 0
	// is 1 s, negative registers it once.
	Readvertise time.Duration
	// CallTimeout is the deadline of each D-Bus call; 0 is 5 s.
	CallTimeout time.Duration
	// Battery reports the charge advertised, in percent; nil is 100.
	Battery func() uint8
	// LocalName, if set, is advertised too (it costs advertising bytes).
	LocalName string
	// Advertiser chooses how the lock advertises: AdvertiseAuto (the
	// default) registers the LEAdvertisement1 and falls back to the kernel's
	// management interface when bluetoothd refuses it; AdvertiseDBus and
	// AdvertiseMgmt use only one.
	Advertiser Advertiser
	Logger     *slog.Logger // nil discards
	// Group, if not nil, is the set of peripherals sharing this one's
	// bluetoothd: bluetoothd has one default agent for all adapters, so
	// whichever peripheral's agent is the default hands each request to
	// the peripheral of the adapter the request's device is on.
	Group *Group
}

// Group lets several peripherals on one bluetoothd (one per adapter)
// share its one default agent (Options.Group). The zero value is ready;
// it must not be copied after first use.
type Group struct {
	mu sync.Mutex
	m  map[dbus.ObjectPath]*Peripheral // by adapter path
}

func (g *Group) add(p *Peripheral) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[dbus.ObjectPath]*Peripheral{}
	}
	g.m[p.adapter] = p
}

func (g *Group) remove(p *Peripheral) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m[p.adapter] == p {
		delete(g.m, p.adapter)
	}
}

// forDevice is the peripheral whose adapter dev is on, or fallback.
func (g *Group) forDevice(dev dbus.ObjectPath, fallback *Peripheral) *Peripheral {
	if g == nil {
		return fallback
	}
	adapter, _, ok := strings.Cut(strings.TrimPrefix(string(dev), "/org/bluez/"), "/")
	if !ok {
		return fallback
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if p, ok := g.m[dbus.ObjectPath("/org/bluez/"+adapter)]; ok {
		return p
	}
	return fallback
}

// Stats counts what the peripheral saw. Fields only grow.
type Stats struct {
	Connections    uint64 // GATT connections the lock served
	Disconnections uint64 // of them, those that ended
	Writes         uint64 // Inbox writes delivered
	Notifications  uint64 // Outbox notifications sent
	AgentRequests  uint64 // every Agent1 call bluetoothd made
	PasskeysGiven  uint64 // RequestPasskey answered with the window's passkey
	PairingsOK     uint64 // pairings lock.Pair accepted
	PairingsFailed uint64 // pairings counted with lock.PairingFailed
	Registrations  uint64 // full registrations (Start and each bluetoothd restart)
	Adverts        uint64 // advertisements (re-)registered
	Advertiser     string // "dbus" or "mgmt" once chosen, else "auto"
}

type counters struct {
	connections, disconnections, writes, notifications, agentRequests, passkeysGiven,
	pairingsOK, pairingsFailed, registrations, adverts atomic.Uint64
}

// Peripheral is a running lock peripheral.
type Peripheral struct {
	conn    *dbus.Conn
	opts    Options
	log     *slog.Logger
	adapter dbus.ObjectPath
	disp    *bluez.Dispatcher
	pcSub   *bluez.Subscription
	nameSub *bluez.Subscription

	app, svc, inbox, outbox, info, adv, agent dbus.ObjectPath

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stats  counters

	mu       sync.Mutex
	sessions map[dbus.ObjectPath]*session // by the peer's device path
	linked   map[dbus.ObjectPath]bool     // peers whose Device1 says Connected
	pending  map[string]uint32            // passkey given, pairing unresolved, by peer address
	advOn    bool
	advMode  Advertiser
	mgmt     *mgmtSocket // used by the goroutine that advertises

	closeOnce sync.Once
	closeErr  error
}

type session struct {
	link   *locklink.Link
	addr   string
	cancel context.CancelFunc
}

// Start exports the objects, registers the GATT application, the
// advertisement and the default agent on opts.Adapter, and starts the
// event loop. On failure nothing stays registered.
func Start(ctx context.Context, conn *dbus.Conn, opts Options) (_ *Peripheral, err error) {
	if conn == nil || opts.Lock == nil || opts.Adapter == "" {
		return nil, fmt.Errorf("%w: need a connection, Adapter and Lock", ErrInvalidOptions)
	}
	if opts.Path == "" {
		opts.Path = dbus.ObjectPath("/org/gatewayd/peripheral/" + opts.Adapter)
	}
	if !opts.Path.IsValid() {
		return nil, fmt.Errorf("%w: path %q", ErrInvalidOptions, opts.Path)
	}
	if opts.Readvertise == 0 {
		opts.Readvertise = time.Second
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 5 * time.Second
	}
	if opts.Battery == nil {
		opts.Battery = func() uint8 { return 100 }
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Peripheral{conn: conn, opts: opts, log: log.With("component", "bluez.peripheral", "adapter", opts.Adapter),
		adapter:  dbus.ObjectPath("/org/bluez/" + opts.Adapter),
		sessions: map[dbus.ObjectPath]*session{}, linked: map[dbus.ObjectPath]bool{}, pending: map[string]uint32{}, advMode: opts.Advertiser}
	p.app = opts.Path
	p.svc = p.app + "/service0"
	p.inbox, p.outbox, p.info = p.svc+"/char0", p.svc+"/char1", p.svc+"/char2"
	p.adv, p.agent = p.app+"/advertisement0", p.app+"/agent"
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.disp = bluez.NewDispatcher(conn, opts.CallTimeout)
	defer func() {
		if err != nil {
			p.cancel()
			p.unexport()
			p.closeSubs()
		}
	}()
	p.pcSub, err = p.disp.Subscribe(ctx, bluez.Match{Sender: bluez.BusName, PathNamespace: p.adapter,
		Interface: ifaceProps, Member: "PropertiesChanged"}, 1024)
	if err != nil {
		return nil, err
	}
	p.nameSub, err = p.disp.Subscribe(ctx, bluez.Match{Sender: "org.freedesktop.DBus", Path: "/org/freedesktop/DBus",
		Interface: "org.freedesktop.DBus", Member: "NameOwnerChanged", Arg0: bluez.BusName}, 16)
	if err != nil {
		return nil, err
	}
	if err := p.export(); err != nil {
		return nil, err
	}
	if err := p.register(ctx); err != nil {
		p.unregister()
		return nil, err
	}
	p.wg.Go(p.run)
	if opts.Group != nil {
		opts.Group.add(p)
	}
	return p, nil
}

func (p *Peripheral) advertiser() Advertiser {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.advMode
}

// AdapterPath is the adapter's object path.
func (p *Peripheral) AdapterPath() dbus.ObjectPath { return p.adapter }

// Stats returns the counters.
func (p *Peripheral) Stats() Stats {
	s := &p.stats
	return Stats{Connections: s.connections.Load(), Disconnections: s.disconnections.Load(), Writes: s.writes.Load(), Notifications: s.notifications.Load(),
		AgentRequests: s.agentRequests.Load(), PasskeysGiven: s.passkeysGiven.Load(), PairingsOK: s.pairingsOK.Load(),
		PairingsFailed: s.pairingsFailed.Load(), Registrations: s.registrations.Load(), Adverts: s.adverts.Load(),
		Advertiser: p.advertiser().String()}
}

func (p *Peripheral) call(ctx context.Context, path dbus.ObjectPath, method string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.CallTimeout)
	defer cancel()
	return bluez.MapError(p.conn.Object(bluez.BusName, path).CallWithContext(ctx, method, 0, args...).Err)
}

// register powers the adapter on and registers the application, the
// agent and the advertisement.
func (p *Peripheral) register(ctx context.Context) error {
	var v dbus.Variant
	cctx, cancel := context.WithTimeout(ctx, p.opts.CallTimeout)
	err := p.conn.Object(bluez.BusName, p.adapter).CallWithContext(cctx, ifaceProps+".Get", 0, bluez.IfaceAdapter, "Powered").Store(&v)
	cancel()
	if err != nil {
		if errors.Is(bluez.MapError(err), bluez.ErrDoesNotExist) {
			return fmt.Errorf("%w: %s", ErrNoAdapter, p.adapter)
		}
		return fmt.Errorf("peripheral: reading %s Powered: %w", p.adapter, bluez.MapError(err))
	}
	if on, _ := v.Value().(bool); !on {
		if err := p.call(ctx, p.adapter, ifaceProps+".Set", bluez.IfaceAdapter, "Powered", dbus.MakeVariant(true)); err != nil {
			return fmt.Errorf("peripheral: powering %s on: %w", p.adapter, err)
		}
	}
	if err := p.call(ctx, p.adapter, ifaceGattMgr+".RegisterApplication", p.app, map[string]dbus.Variant{}); err != nil {
		return fmt.Errorf("peripheral: RegisterApplication: %w", err)
	}
	if err := p.call(ctx, bluez.AgentManagerPath, bluez.IfaceAgentManager+".RegisterAgent", p.agent, agentCapability); err != nil {
		return fmt.Errorf("peripheral: RegisterAgent: %w", err)
	}
	if err := p.call(ctx, bluez.AgentManagerPath, bluez.IfaceAgentManager+".RequestDefaultAgent", p.agent); err != nil {
		return fmt.Errorf("peripheral: RequestDefaultAgent: %w", err)
	}
	if err := p.advertise(ctx); err != nil {
		return err
	}
	p.stats.registrations.Add(1)
	p.log.Debug("registered", "app", string(p.app))
	return nil
}

// advertise (re-)registers the advertisement with the lock's current
// payload, through LEAdvertisingManager1 or the management interface (see
// Advertiser).
func (p *Peripheral) advertise(ctx context.Context) error {
	p.mu.Lock()
	mode, on := p.advMode, p.advOn
	p.advOn = false
	p.mu.Unlock()
	if mode == AdvertiseMgmt {
		return p.advertiseMgmt()
	}
	if on {
		if err := p.call(ctx, p.adapter, ifaceAdvMgr+".UnregisterAdvertisement", p.adv); err != nil && !errors.Is(err, bluez.ErrDoesNotExist) {
			p.log.Debug("UnregisterAdvertisement", "err", err)
		}
	}
	if err := p.call(ctx, p.adapter, ifaceAdvMgr+".RegisterAdvertisement", p.adv, map[string]dbus.Variant{}); err != nil {
		if mode == AdvertiseAuto && errors.Is(err, bluez.ErrFailed) {
			p.log.Warn("bluetoothd refused the advertisement; advertising through the management interface", "err", err)
			p.mu.Lock()
			p.advMode = AdvertiseMgmt
			p.mu.Unlock()
			return p.advertiseMgmt()
		}
		return fmt.Errorf("peripheral: RegisterAdvertisement: %w", err)
	}
	p.mu.Lock()
	p.advOn = true
	if p.advMode == AdvertiseAuto {
		p.advMode = AdvertiseDBus
	}
	p.mu.Unlock()
	p.stats.adverts.Add(1)
	return nil
}

func (p *Peripheral) advertiseMgmt() error {
	if p.mgmt == nil {
		m, err := openMgmt(p.opts.Adapter)
		if err != nil {
			return err
		}
		p.mgmt = m
	}
	adv, rsp, err := advertisingData(bluez.TestCompanyID, Advertisement(p.opts.Lock, p.opts.Battery()), bluez.LockServiceUUID)
	if err != nil {
		return err
	}
	if err := p.mgmt.advertise(adv, rsp, p.opts.CallTimeout); err != nil {
		return err
	}
	p.stats.adverts.Add(1)
	return nil
}

// unregister undoes register, each call bounded by CallTimeout; errors
// are logged (bluetoothd may be gone).
func (p *Peripheral) unregister() {
	ctx := context.Background()
	for _, c := range []struct {
		path   dbus.ObjectPath
		method string
		arg    dbus.ObjectPath
	}{
		{p.adapter, ifaceAdvMgr + ".UnregisterAdvertisement", p.adv},
		{bluez.AgentManagerPath, bluez.IfaceAgentManager + ".UnregisterAgent", p.agent},
		{p.adapter, ifaceGattMgr + ".UnregisterApplication", p.app},
	} {
		if err := p.call(ctx, c.path, c.method, c.arg); err != nil {
			p.log.Debug("unregister", "method", c.method, "err", err)
		}
	}
}

// Advertisement is the lock's 11-byte ManufacturerData payload
// (docs/protocol.md §1.1): version 1, lock ID, flags, battery.
func Advertisement(l *lock.Lock, battery uint8) []byte {
	id := l.ID()
	b := make([]byte, 0, 11)
	b = append(b, 0x01)
	b = append(b, id[:]...)
	var flags byte
	if l.Bolt() == command.StateLocked {
		flags |= bluez.FlagLocked
	}
	return append(b, flags, battery)
}

func (p *Peripheral) run() {
	tick := make(<-chan time.Time)
	if p.opts.Readvertise > 0 {
		t := time.NewTicker(p.opts.Readvertise)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-tick:
			// Like the firmware, the lock does not advertise while a peer
			// is connected; re-adding the instance during a connection's
			// setup only adds churn.
			p.mu.Lock()
			busy := len(p.linked) > 0
			p.mu.Unlock()
			if busy {
				continue
			}
			if err := p.advertise(p.ctx); err != nil && p.ctx.Err() == nil {
				p.log.Debug("re-advertising", "err", err)
			}
		case s, ok := <-p.pcSub.C():
			if !ok {
				return
			}
			p.onPropertiesChanged(s)
		case s, ok := <-p.nameSub.C():
			if !ok {
				return
			}
			if len(s.Body) == 3 {
				if owner, _ := s.Body[2].(string); owner != "" {
					p.reregister()
				} else {
					p.bluetoothdGone()
				}
			}
		}
	}
}

// bluetoothdGone ends every connection: they died with bluetoothd.
func (p *Peripheral) bluetoothdGone() {
	p.log.Warn("bluetoothd left the bus")
	p.mu.Lock()
	defer p.mu.Unlock()
	for dev, s := range p.sessions {
		p.endLocked(dev, s)
	}
	clear(p.linked)
	p.advOn = false
}

// reregister registers everything with a new bluetoothd, retrying while
// its adapter comes up.
func (p *Peripheral) reregister() {
	p.log.Warn("bluetoothd restarted; registering again")
	p.bluetoothdGone()
	for attempt := 0; p.ctx.Err() == nil; attempt++ {
		err := p.register(p.ctx)
		if err == nil {
			return
		}
		if attempt == 50 {
			p.log.Error("registering with the new bluetoothd failed", "err", err)
			return
		}
		select {
		case <-p.ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (p *Peripheral) onPropertiesChanged(s *dbus.Signal) {
	if len(s.Body) < 2 {
		return
	}
	if iface, _ := s.Body[0].(string); iface != bluez.IfaceDevice {
		return
	}
	changed, _ := s.Body[1].(map[string]dbus.Variant)
	addr := addressOf(s.Path)
	if addr == "" {
		return
	}
	if paired, ok := changed["Paired"].Value().(bool); ok && paired {
		p.paired(s.Path, addr)
	}
	if c, ok := changed["Connected"].Value().(bool); ok && c {
		p.mu.Lock()
		p.linked[s.Path] = true
		p.mu.Unlock()
	}
	if c, ok := changed["Connected"].Value().(bool); ok && !c {
		p.mu.Lock()
		delete(p.linked, s.Path)
		if _, pending := p.pending[addr]; pending {
			delete(p.pending, addr)
			p.failedLocked(addr, "disconnected before pairing completed")
		}
		if sess, ok := p.sessions[s.Path]; ok {
			p.endLocked(s.Path, sess)
		}
		p.mu.Unlock()
	}
}

// paired resolves a pairing the agent gave a passkey for: the lock
// records the bond. A bond the lock refuses is removed from bluetoothd.
func (p *Peripheral) paired(dev dbus.ObjectPath, addr string) {
	p.mu.Lock()
	pk, pending := p.pending[addr]
	delete(p.pending, addr)
	p.mu.Unlock()
	if !pending {
		return
	}
	if err := p.opts.Lock.Pair(addr, pk); err != nil {
		p.log.Warn("the lock refused a completed pairing; removing the bond", "peer", addr, "err", err)
		if err := p.call(p.ctx, p.adapter, bluez.IfaceAdapter+".RemoveDevice", dev); err != nil {
			p.log.Debug("RemoveDevice", "err", err)
		}
		return
	}
	p.stats.pairingsOK.Add(1)
	p.log.Info("bonded", "peer", addr)
}

func (p *Peripheral) failedLocked(addr, why string) {
	err := p.opts.Lock.PairingFailed(addr)
	p.stats.pairingsFailed.Add(1)
	p.log.Info("pairing failed", "peer", addr, "why", why, "lock", err)
}

func (p *Peripheral) endLocked(dev dbus.ObjectPath, s *session) {
	delete(p.sessions, dev)
	p.stats.disconnections.Add(1)
	s.link.Close()
	s.cancel()
	p.log.Debug("connection ended", "peer", s.addr)
}

// addressOf returns "AA:BB:CC:DD:EE:FF" for a device path
// /org/bluez/hciN/dev_AA_BB_CC_DD_EE_FF, "" for anything else.
func addressOf(dev dbus.ObjectPath) string {
	i := strings.LastIndex(string(dev), "/dev_")
	if i < 0 {
		return ""
	}
	rest := string(dev[i+5:])
	if len(rest) != 17 || strings.Contains(rest, "/") {
		return ""
	}
	return strings.ReplaceAll(rest, "_", ":")
}

// sessionFor returns the connection of dev, starting the lock on it at the
// first write.
func (p *Peripheral) sessionFor(dev dbus.ObjectPath, mtu int) (*session, error) {
	addr := addressOf(dev)
	if addr == "" || !strings.HasPrefix(string(dev), string(p.adapter)+"/") {
		return nil, fmt.Errorf("write from unknown device %q", dev)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return nil, locklink.ErrLinkDown
	}
	if s, ok := p.sessions[dev]; ok {
		if mtu != 0 && mtu != s.link.MTU() {
			if err := s.link.SetMTU(mtu); err != nil {
				return nil, err
			}
		}
		return s, nil
	}
	if mtu == 0 {
		mtu = fragment.MinATTMTU
	}
	link, err := locklink.New(locklink.Options{MTU: mtu, Notify: p.notify})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(p.ctx)
	s := &session{link: link, addr: addr, cancel: cancel}
	p.sessions[dev] = s
	p.stats.connections.Add(1)
	p.wg.Go(func() {
		// Encrypted stays false: bluetoothd 5.66 tells a GATT application
		// nothing of the link's security (docs/real-bluez.md, "What the
		// lock peripheral cannot learn"), and Device1 Paired is the same
		// for a device that copies a bonded peer's address.
		err := locklink.Serve(ctx, p.opts.Lock, link, lock.Peer{Address: addr})
		p.log.Debug("lock connection ended", "peer", addr, "err", err)
	})
	p.log.Debug("connection", "peer", addr, "mtu", mtu)
	return s, nil
}

// notify sends p as an Outbox notification: a PropertiesChanged of its
// Value, which bluetoothd sends to the peers that enabled notifications.
func (p *Peripheral) notify(_ context.Context, b []byte) error {
	err := p.conn.Emit(p.outbox, ifaceProps+".PropertiesChanged", ifaceChar,
		map[string]dbus.Variant{"Value": dbus.MakeVariant(append([]byte(nil), b...))}, []string{})
	if err != nil {
		return err
	}
	p.stats.notifications.Add(1)
	return nil
}

// Close unregisters everything (each call bounded by CallTimeout), ends
// every connection and waits for the goroutines. It is idempotent.
func (p *Peripheral) Close() error {
	p.closeOnce.Do(func() {
		if p.opts.Group != nil {
			p.opts.Group.remove(p)
		}
		p.cancel()
		p.mu.Lock()
		for dev, s := range p.sessions {
			p.endLocked(dev, s)
		}
		p.mu.Unlock()
		p.wg.Wait()
		p.unregister()
		if p.mgmt != nil {
			if err := p.mgmt.stop(p.opts.CallTimeout); err != nil {
				p.log.Debug("removing the advertising instance", "err", err)
			}
			_ = p.mgmt.Close()
		}
		p.unexport()
		p.closeSubs()
	})
	return p.closeErr
}

func (p *Peripheral) closeSubs() {
	if p.pcSub != nil {
		_ = p.pcSub.Close()
	}
	if p.nameSub != nil {
		_ = p.nameSub.Close()
	}
	_ = p.disp.Close()
}
