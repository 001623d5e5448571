package emulator

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
)

// D-Bus names BlueZ uses.
const (
	busName       = "org.bluez"
	ifaceOM       = "org.freedesktop.DBus.ObjectManager"
	ifaceProps    = "org.freedesktop.DBus.Properties"
	ifaceIntro    = "org.freedesktop.DBus.Introspectable"
	ifaceAdapter  = "org.bluez.Adapter1"
	ifaceDevice   = "org.bluez.Device1"
	ifaceService  = "org.bluez.GattService1"
	ifaceChar     = "org.bluez.GattCharacteristic1"
	ifaceDesc     = "org.bluez.GattDescriptor1"
	ifaceAgentMgr = "org.bluez.AgentManager1"
	ifaceAgent    = "org.bluez.Agent1"
	rootPath      = dbus.ObjectPath("/org/bluez")
)

// Lock service and characteristics (docs/protocol.md §1).
const (
	ServiceUUID = "97510001-ce6d-40c7-b7c2-022a651afaf6"
	InboxUUID   = "97510002-ce6d-40c7-b7c2-022a651afaf6"
	OutboxUUID  = "97510003-ce6d-40c7-b7c2-022a651afaf6"
	InfoUUID    = "97510004-ce6d-40c7-b7c2-022a651afaf6"
	// CompanyID is the ManufacturerData key of the lock payload (§1.1).
	CompanyID uint16 = 0xFFFF
	// CCCUUID is the Client Characteristic Configuration descriptor's
	// UUID, exported under Outbox.
	CCCUUID = "00002902-0000-1000-8000-00805f9b34fb"
)

// Defaults of Options.
const (
	// DefaultMTU is Options.MTU's default: BlueZ 5.66's main.conf
	// [GATT] ExchangeMTU default, what the gateway's bluetoothd offers.
	DefaultMTU = 517
	// DefaultLockMTU is LockOptions.MTU's default: what an nRF52832
	// lock's SoftDevice is commonly built to accept
	// (NRF_SDH_BLE_GATT_MAX_MTU_SIZE 247).
	DefaultLockMTU = 247
	// DefaultResolveDelay is Options.ResolveDelay's default.
	DefaultResolveDelay  = 100 * time.Millisecond
	DefaultRadioInterval = time.Second
	DefaultAwayTimeout   = 30 * time.Second
	DefaultCallTimeout   = 25 * time.Second
	// DefaultPairFailureStall is Options.PairFailureStall's default.
	DefaultPairFailureStall = 3 * time.Second
)

// Options configure an emulator. Addr is required.
type Options struct {
	// Addr is the bus address (what DBUS_SYSTEM_BUS_ADDRESS holds).
	Addr string
	// Adapter is the adapter's name; default "hci0".
	Adapter string
	// AdapterAddress is the adapter's BLE address; default
	// "00:11:22:33:44:55".
	AdapterAddress string
	// Seed makes the radio (RSSI variations) reproducible.
	Seed uint64
	// Logger receives debug lines; nil discards.
	Logger *slog.Logger
	// Unpowered starts the adapter with Powered false.
	Unpowered bool
	// MTU is the largest ATT MTU the adapter offers in the Exchange MTU
	// of a connection (main.conf [GATT] ExchangeMTU); default 517, as
	// BlueZ. A connection's ATT MTU is the smaller of it and the lock's
	// (LockOptions.MTU), as the ATT Exchange MTU settles it: 517 with a
	// BlueZ peripheral on real BlueZ (bluez/internal/realbluez).
	MTU int
	// ResolveDelay is the time from Connected true to ServicesResolved
	// true: service discovery on a first connection, the GATT cache
	// restore (and its Database Hash check) on later ones. Device1.Connect
	// returns as soon as the link is up, before ServicesResolved, as
	// BlueZ 5.66 does; until then the GATT objects answer as on a
	// disconnected device. Real BlueZ under the tier took 0.15-0.55 s
	// (up to 3.5 s measured); default 100 ms; negative: none (resolved
	// at once, still after the reply).
	ResolveDelay time.Duration
	// RadioInterval is the radio's tick: advertisements and RSSI changes;
	// default 1 s.
	RadioInterval time.Duration
	// AwayTimeout is how long a device stays after its last advertisement
	// (BlueZ's TemporaryTimeout); default 30 s.
	AwayTimeout time.Duration
	// ConnectLatency is how long Device1.Connect takes; default 0.
	ConnectLatency time.Duration
	// ExchangeLatency delays each GATT write to Inbox (before the lock
	// gets it and WriteValue returns) and each notification from Outbox
	// (before its PropertiesChanged); default 0.
	ExchangeLatency time.Duration
	// DropRate is the probability, in [0,1], that a GATT write to Inbox
	// is the last before the connection drops (as a supervision timeout,
	// see Faults.DropAfterWrites). Drawn from Seed's source.
	DropRate float64
	// AbortRate is the probability, in [0,1], that a Device1.Connect
	// fails with le-connection-abort-by-local. Drawn from Seed's source.
	AbortRate float64
	// MaxConnections caps simultaneous connections; 0 is no cap.
	MaxConnections int
	// CallTimeout bounds every call the emulator makes on the bus (an
	// agent's RequestPasskey); default 25 s, as BlueZ's agent timeout.
	CallTimeout time.Duration
	// Bonds restores bonds kept by a previous emulator (see Bonds and
	// Restart): the addresses of bonded devices.
	Bonds []string
	// PairFailureStall is how long, after a failed pairing, the next LE
	// connection attempt on the adapter is held while bluetoothd resumes
	// discovery (src/adapter.c bonding_complete → resume_discovery): a
	// Device1.Connect in that window returns only when it has passed
	// (plus ConnectLatency). Real BlueZ 5.66 under the tier stalled
	// several seconds. Default DefaultPairFailureStall; negative: none.
	PairFailureStall time.Duration
}

func (o *Options) defaults() {
	if o.Adapter == "" {
		o.Adapter = "hci0"
	}
	if o.AdapterAddress == "" {
		o.AdapterAddress = "00:11:22:33:44:55"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MTU <= 0 {
		o.MTU = DefaultMTU
	}
	if o.RadioInterval <= 0 {
		o.RadioInterval = DefaultRadioInterval
	}
	if o.AwayTimeout <= 0 {
		o.AwayTimeout = DefaultAwayTimeout
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.ResolveDelay == 0 {
		o.ResolveDelay = DefaultResolveDelay
	}
	if o.PairFailureStall == 0 {
		o.PairFailureStall = DefaultPairFailureStall
	}
}

type ifaces map[string]map[string]dbus.Variant

// Emulator is a running bluetoothd stand-in. Its methods are safe for
// concurrent use.
type Emulator struct {
	opts    Options
	conn    *dbus.Conn
	sock    *busSock // conn's socket; nil when signals go through godbus (see wire.go)
	log     *slog.Logger
	adapter dbus.ObjectPath
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu         sync.Mutex
	closed     bool
	objs       map[dbus.ObjectPath]ifaces
	rnd        *rand.Rand
	locks      map[string]*hosted  // by address
	dfuDevs    map[string]*dfuHost // whole locks (AddDevice), by application address
	devices    map[string]*device  // exported devices, by address
	discovery  map[string]*filter  // discovery sessions, by client unique name
	pending    map[string]*filter  // SetDiscoveryFilter before StartDiscovery
	connecting *device             // the one LE connection attempt in progress
	bonds      map[string]bool     // bonded addresses
	stored     map[string]*hosted  // devices BlueZ keeps on disk (not temporary), by address
	faults     map[string]*Faults  // injected faults, by address
	seq        uint64              // devices created so far (BlueZ's list order)
	gone       bool                // the adapter is unplugged (RemoveAdapter)
	wedged     bool                // the adapter is wedged (Wedge)
	cycles     uint64              // completed off→on power cycles
	agents     map[string]agentRef // by owner
	defAgent   string              // owner of the default agent
	pairing    map[string]context.CancelFunc
	stallUntil time.Time       // no LE connection completes before (PairFailureStall)
	adverts    map[advKey]bool // registered LEAdvertisement1 objects
	ticks      uint64          // radio ticks so far (tests wait on it)
	sigBuf     []byte          // emit's encoding buffer
	// connectHook, if set (tests), runs in Connect during the attempt.
	connectHook func()
	// exchangeHook, if set (tests) before a connection is made, runs on
	// the connection's goroutines as an exchange is delayed.
	exchangeHook func(kind string)
}

func v(x any) dbus.Variant { return dbus.MakeVariant(x) }

// Start connects to the bus at opts.Addr, exports the adapter and owns
// org.bluez. ctx bounds the start only: the emulator runs until Close
// (a Restart from inside a short-lived context must outlive it).
func Start(ctx context.Context, opts Options) (*Emulator, error) {
	opts.defaults()
	if opts.Addr == "" {
		return nil, fmt.Errorf("emulator: Options.Addr is required")
	}
	if !(opts.DropRate >= 0 && opts.DropRate <= 1) || !(opts.AbortRate >= 0 && opts.AbortRate <= 1) {
		return nil, fmt.Errorf("%w: DropRate %v, AbortRate %v: want [0,1]", ErrBadOptions, opts.DropRate, opts.AbortRate)
	}
	if opts.ExchangeLatency < 0 {
		return nil, fmt.Errorf("%w: ExchangeLatency %v", ErrBadOptions, opts.ExchangeLatency)
	}
	if opts.MTU < 23 || opts.MTU > 517 {
		return nil, fmt.Errorf("%w: MTU %d: want 23..517", ErrBadOptions, opts.MTU)
	}
	// Not dbus.WithContext(ctx): godbus closes such a connection when
	// ctx ends.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("emulator: start: %w", err)
	}
	conn, sock, err := dialBus(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("emulator: connecting to %s: %w", opts.Addr, err)
	}
	e := &Emulator{opts: opts, conn: conn, sock: sock, log: opts.Logger,
		adapter: rootPath + dbus.ObjectPath("/"+opts.Adapter),
		objs:    map[dbus.ObjectPath]ifaces{}, rnd: rand.New(rand.NewPCG(opts.Seed, 0x6c6f636b)),
		locks: map[string]*hosted{}, devices: map[string]*device{}, discovery: map[string]*filter{},
		pending: map[string]*filter{}, bonds: map[string]bool{}, agents: map[string]agentRef{},
		pairing: map[string]context.CancelFunc{}, stored: map[string]*hosted{}, faults: map[string]*Faults{},
		adverts: map[advKey]bool{}, dfuDevs: map[string]*dfuHost{}}
	for _, b := range opts.Bonds {
		e.bonds[b] = true
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.objs[rootPath] = ifaces{ifaceAgentMgr: {}}
	e.objs[e.adapter] = ifaces{ifaceAdapter: e.adapterProps(), ifaceAdvMgr: e.advMgrProps()}
	if err := e.export(); err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := e.watchOwners(); err != nil {
		_ = conn.Close()
		return nil, err
	}
	r, err := conn.RequestName(busName, dbus.NameFlagDoNotQueue)
	if err != nil {
		e.cancel()
		_ = conn.Close()
		e.wg.Wait()
		return nil, fmt.Errorf("emulator: RequestName: %w", err)
	}
	if r != dbus.RequestNameReplyPrimaryOwner {
		e.cancel()
		_ = conn.Close()
		e.wg.Wait()
		return nil, ErrNameTaken
	}
	e.wg.Go(e.radio)
	e.log.Debug("emulator started", "bus", opts.Addr, "adapter", e.adapter)
	return e, nil
}

func (e *Emulator) adapterProps() map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"Address": v(e.opts.AdapterAddress), "AddressType": v("public"),
		"Name": v("gatewayd-emu"), "Alias": v("gatewayd-emu"), "Class": v(uint32(0)),
		"Powered": v(!e.opts.Unpowered), "Discoverable": v(false), "DiscoverableTimeout": v(uint32(180)),
		"Pairable": v(true), "PairableTimeout": v(uint32(0)), "Discovering": v(false),
		"UUIDs": v([]string{
			"00001800-0000-1000-8000-00805f9b34fb", "00001801-0000-1000-8000-00805f9b34fb",
			"0000110e-0000-1000-8000-00805f9b34fb", "0000110c-0000-1000-8000-00805f9b34fb",
		}),
		// No ExperimentalFeatures: 5.66 has it only with experimental
		// features enabled (bluetoothd -E).
		"Modalias": v("usb:v1D6Bp0246d0542"), "Roles": v([]string{"central", "peripheral"}),
	}
}

// export registers the handlers. godbus finds a subtree handler at the
// nearest exported ancestor only, so every subtree interface is
// registered at /org/bluez.
func (e *Emulator) export() error {
	type reg struct {
		v       any
		path    dbus.ObjectPath
		iface   string
		subtree bool
	}
	for _, r := range []reg{
		{omHandler{e}, "/", ifaceOM, false},
		{propsHandler{e}, "/", ifaceProps, false},
		{introHandler{e}, "/", ifaceIntro, false},
		{propsHandler{e}, rootPath, ifaceProps, true},
		{introHandler{e}, rootPath, ifaceIntro, true},
		{adapterHandler{e}, rootPath, ifaceAdapter, true},
		{deviceHandler{e}, rootPath, ifaceDevice, true},
		{charHandler{e}, rootPath, ifaceChar, true},
		{descHandler{e}, rootPath, ifaceDesc, true},
		{agentMgrHandler{e}, rootPath, ifaceAgentMgr, true},
		{advMgrHandler{e}, rootPath, ifaceAdvMgr, true},
	} {
		var err error
		if r.subtree {
			err = e.conn.ExportSubtree(r.v, r.path, r.iface)
		} else {
			err = e.conn.Export(r.v, r.path, r.iface)
		}
		if err != nil {
			return fmt.Errorf("emulator: exporting %s at %s: %w", r.iface, r.path, err)
		}
	}
	return nil
}

// Close releases org.bluez, disconnects every device, and waits for every
// goroutine the emulator started.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	// Off the bus first, as a crashed bluetoothd is: clients see
	// org.bluez vanish and their calls in flight fail as the bus going
	// away (not with an answer such as "Not connected" from a link torn
	// down a moment before), even while a hosted lock is still busy
	// finishing a command (whose result then goes nowhere). Then end the
	// links and pairings, and wait for every goroutine.
	_, _ = e.conn.ReleaseName(busName)
	err := e.conn.Close()
	e.mu.Lock()
	for _, d := range e.devices {
		if d.conn != nil {
			d.conn.stop()
			d.conn = nil
		}
	}
	for _, c := range e.pairing {
		c()
	}
	e.mu.Unlock()
	e.wg.Wait()
	return err
}

// Bonds returns the addresses the adapter holds bonds with (for Restart).
func (e *Emulator) Bonds() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for a := range e.bonds {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// AdapterPath is the adapter's object path, e.g. /org/bluez/hci0.
func (e *Emulator) AdapterPath() dbus.ObjectPath { return e.adapter }

// DevicePath is the object path of the device with BLE address addr.
func (e *Emulator) DevicePath(addr string) dbus.ObjectPath {
	return e.adapter + dbus.ObjectPath("/dev_"+strings.ReplaceAll(addr, ":", "_"))
}

// ---- object tree (callers hold e.mu) ----

// standard are the interfaces gdbus adds to every object, listed in
// GetManagedObjects and InterfacesAdded as BlueZ does.
var standard = []string{ifaceIntro, ifaceProps}

// emit sends a signal: encoded here and written on the socket when it
// can be (see wire.go), else through godbus.
func (e *Emulator) emit(p dbus.ObjectPath, name string, args ...any) {
	var err error
	if e.sock != nil {
		var ok bool
		if e.sigBuf, ok = encodeSignal(e.sigBuf, e.sock.seq.GetSerial(), p, name, args); ok {
			err = e.sock.write(e.sigBuf)
		} else {
			err = e.conn.Emit(p, name, args...)
		}
	} else {
		err = e.conn.Emit(p, name, args...)
	}
	if err != nil {
		e.log.Debug("emit failed", "path", p, "signal", name, "err", err)
	}
}

func copyIfaces(in ifaces) map[string]map[string]dbus.Variant {
	out := make(map[string]map[string]dbus.Variant, len(in)+2)
	for i, ps := range in {
		c := make(map[string]dbus.Variant, len(ps))
		for k, x := range ps {
			c[k] = x
		}
		out[i] = c
	}
	for _, s := range standard {
		out[s] = map[string]dbus.Variant{}
	}
	return out
}

func (e *Emulator) addObject(p dbus.ObjectPath, in ifaces) {
	e.objs[p] = in
	e.emit("/", ifaceOM+".InterfacesAdded", p, copyIfaces(in))
}

func (e *Emulator) removeObject(p dbus.ObjectPath) {
	in, ok := e.objs[p]
	if !ok {
		return
	}
	delete(e.objs, p)
	names := slices.Concat(standard)
	for i := range in {
		names = append(names, i)
	}
	sort.Strings(names)
	e.emit("/", ifaceOM+".InterfacesRemoved", p, names)
}

// setProps updates properties and emits PropertiesChanged with those that
// changed.
func (e *Emulator) setProps(p dbus.ObjectPath, iface string, changes map[string]dbus.Variant) {
	e.setPropsForce(p, iface, changes)
}

// setPropsForce is setProps, the properties named in force being sent
// even when unchanged.
func (e *Emulator) setPropsForce(p dbus.ObjectPath, iface string, changes map[string]dbus.Variant, force ...string) {
	ps, ok := e.objs[p][iface]
	if !ok {
		return
	}
	changed := map[string]dbus.Variant{}
	for k, x := range changes {
		if old, ok := ps[k]; ok && !slices.Contains(force, k) && old.Signature() == x.Signature() && reflect.DeepEqual(old.Value(), x.Value()) {
			continue
		}
		ps[k] = x
		changed[k] = x
	}
	if len(changed) > 0 {
		e.emit(p, ifaceProps+".PropertiesChanged", iface, changed, []string{})
	}
}

func (e *Emulator) prop(p dbus.ObjectPath, iface, name string) (dbus.Variant, bool) {
	x, ok := e.objs[p][iface][name]
	return x, ok
}

func (e *Emulator) boolProp(p dbus.ObjectPath, iface, name string) bool {
	x, _ := e.prop(p, iface, name)
	b, _ := x.Value().(bool)
	return b
}

// ---- errors as BlueZ sends them ----

func bluezErr(name, msg string) *dbus.Error {
	return dbus.NewError("org.bluez.Error."+name, []any{msg})
}

func dbusErr(name, msg string) *dbus.Error {
	return dbus.NewError("org.freedesktop.DBus.Error."+name, []any{msg})
}

func msgPath(m dbus.Message) dbus.ObjectPath {
	p, _ := m.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
	return p
}

func msgSender(m dbus.Message) string {
	s, _ := m.Headers[dbus.FieldSender].Value().(string)
	return s
}

// lookup checks that the call's object exists and carries iface, as
// gdbus does before dispatching. The caller holds e.mu.
func (e *Emulator) lookup(m dbus.Message, iface string) (dbus.ObjectPath, *dbus.Error) {
	p := msgPath(m)
	o, ok := e.objs[p]
	if !ok {
		return p, dbusErr("UnknownObject", fmt.Sprintf("Method %q on interface %q doesn't exist", m.Headers[dbus.FieldMember].Value(), iface))
	}
	if _, ok := o[iface]; !ok {
		return p, dbusErr("UnknownMethod", fmt.Sprintf("Method %q on interface %q doesn't exist", m.Headers[dbus.FieldMember].Value(), iface))
	}
	return p, nil
}

// callCtx bounds a call the emulator makes on the bus.
func (e *Emulator) callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.ctx, e.opts.CallTimeout)
}

// ---- org.freedesktop.DBus.ObjectManager ----

type omHandler struct{ e *Emulator }

func (h omHandler) GetManagedObjects() (map[dbus.ObjectPath]map[string]map[string]dbus.Variant, *dbus.Error) {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	out := make(map[dbus.ObjectPath]map[string]map[string]dbus.Variant, len(h.e.objs))
	for p, in := range h.e.objs {
		out[p] = copyIfaces(in)
	}
	return out, nil
}

// ---- org.freedesktop.DBus.Properties ----

type propsHandler struct{ e *Emulator }

func (h propsHandler) ifaceOf(m dbus.Message, iface string) (dbus.ObjectPath, map[string]dbus.Variant, *dbus.Error) {
	p := msgPath(m)
	if p == "/" {
		return p, nil, dbusErr("InvalidArgs", fmt.Sprintf("No such interface '%s'", iface))
	}
	o, ok := h.e.objs[p]
	if !ok {
		return p, nil, dbusErr("UnknownObject", fmt.Sprintf("No such object %s", p))
	}
	ps, ok := o[iface]
	if !ok {
		return p, nil, dbusErr("InvalidArgs", fmt.Sprintf("No such interface '%s'", iface))
	}
	return p, ps, nil
}

func (h propsHandler) Get(m dbus.Message, iface, name string) (dbus.Variant, *dbus.Error) {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	_, ps, derr := h.ifaceOf(m, iface)
	if derr != nil {
		return dbus.Variant{}, derr
	}
	x, ok := ps[name]
	if !ok {
		return dbus.Variant{}, dbusErr("InvalidArgs", fmt.Sprintf("No such property '%s'", name))
	}
	return x, nil
}

func (h propsHandler) GetAll(m dbus.Message, iface string) (map[string]dbus.Variant, *dbus.Error) {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if msgPath(m) == "/" {
		return map[string]dbus.Variant{}, nil
	}
	_, ps, derr := h.ifaceOf(m, iface)
	if derr != nil {
		return nil, derr
	}
	out := make(map[string]dbus.Variant, len(ps))
	for k, x := range ps {
		out[k] = x
	}
	return out, nil
}

// writable lists the properties BlueZ lets clients set.
var writable = map[string]map[string]bool{
	ifaceAdapter: {"Powered": true, "Discoverable": true, "Pairable": true, "Alias": true,
		"DiscoverableTimeout": true, "PairableTimeout": true},
	ifaceDevice: {"Trusted": true, "Blocked": true, "Alias": true},
}

func (h propsHandler) Set(m dbus.Message, iface, name string, val dbus.Variant) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ps, derr := h.ifaceOf(m, iface)
	if derr != nil {
		return derr
	}
	old, ok := ps[name]
	if !ok {
		return dbusErr("InvalidArgs", fmt.Sprintf("No such property '%s'", name))
	}
	if !writable[iface][name] {
		return dbusErr("PropertyReadOnly", fmt.Sprintf("Property '%s' is not writable", name))
	}
	if old.Signature() != val.Signature() {
		return dbusErr("InvalidArgs", fmt.Sprintf("Invalid argument type: '%s'", val.Signature()))
	}
	if iface == ifaceAdapter && name == "Powered" {
		was, _ := old.Value().(bool)
		on, _ := val.Value().(bool)
		switch {
		case was && !on:
			e.powerOffLocked()
		case !was && on:
			// Powering the controller up again resets it: a wedge ends.
			e.cycles++
			e.wedged = false
		}
	}
	e.setProps(p, iface, map[string]dbus.Variant{name: val})
	return nil
}

// powerOffLocked ends discovery and every connection, as powering the
// controller down does.
func (e *Emulator) powerOffLocked() {
	for _, d := range e.devices {
		if d.conn != nil {
			e.disconnectLocked(d)
		}
	}
	clear(e.discovery)
	e.setProps(e.adapter, ifaceAdapter, map[string]dbus.Variant{"Discovering": v(false)})
}

// Restart simulates a bluetoothd crash and restart: it closes e and starts
// a new emulator on the same bus with the same options, keeping bonds and
// the locks on the radio. Clients see org.bluez vanish and come back with
// a fresh tree: the devices bluetoothd stored (bonded, or connected to and
// not made temporary again by a failed pairing), loaded without RSSI or
// advertising data; others come with the next discovery.
func (e *Emulator) Restart(ctx context.Context) (*Emulator, error) {
	e.mu.Lock()
	opts := e.opts
	var locks []*hosted
	for _, h := range e.locks {
		if h.dfu == nil {
			locks = append(locks, h)
		}
	}
	var devs []*dfuHost
	for _, dh := range e.dfuDevs {
		devs = append(devs, dh)
	}
	stored := slices.Collect(maps.Keys(e.stored))
	e.mu.Unlock()
	opts.Bonds = e.Bonds()
	if err := e.Close(); err != nil {
		return nil, err
	}
	n, err := Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	for _, h := range locks {
		if err := n.AddLock(h.l, h.addr, h.opts); err != nil {
			_ = n.Close()
			return nil, err
		}
	}
	for _, dh := range devs {
		if err := n.AddDevice(dh.dev, dh.addr, dh.opts); err != nil {
			_ = n.Close()
			return nil, err
		}
	}
	// bluetoothd loads the devices it stored (bonded, or connected to
	// and not made temporary again since) as it registers the adapter.
	n.mu.Lock()
	for _, a := range stored {
		if h := n.locks[a]; h != nil {
			n.stored[a] = h
		}
	}
	n.loadStoredLocked()
	n.mu.Unlock()
	return n, nil
}
