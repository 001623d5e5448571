package bluez

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"
)

// D-Bus names used by the adapter client.
const (
	BusName           = "org.bluez"
	IfaceAdapter      = "org.bluez.Adapter1"
	IfaceDevice       = "org.bluez.Device1"
	ifaceProperties   = "org.freedesktop.DBus.Properties"
	ifaceObjectManage = "org.freedesktop.DBus.ObjectManager"
)

// LockServiceUUID is the lock's primary service (docs/protocol.md §1).
const LockServiceUUID = "97510001-ce6d-40c7-b7c2-022a651afaf6"

// TestCompanyID is the company ID locks use until the fleet's is assigned.
const TestCompanyID uint16 = 0xFFFF

// Options configures Open.
type Options struct {
	Adapter     string        // adapter name ("hci0") or address; "" takes the first
	ServiceUUID string        // discovery filter; "" is LockServiceUUID
	CompanyID   uint16        // ManufacturerData key; 0 is TestCompanyID
	AwayTimeout time.Duration // a lock unseen this long is gone; 0 is 30 s
	CallTimeout time.Duration // deadline of each D-Bus call; 0 is 5 s
	SweepEvery  time.Duration // how often away locks are looked for; 0 is AwayTimeout/4
	EventQueue  int           // Events buffer; 0 is 1024
	// SignalQueue is the buffer of each of the adapter's two signal
	// subscriptions; 0 is 4096. When signals are dropped the adapter
	// resynchronises from GetManagedObjects.
	SignalQueue int
	// MinRSSI, when not 0, is the discovery filter's RSSI threshold in
	// dBm (-127..20): bluetoothd drops weaker advertisements before they
	// become D-Bus signals, so a dock ignores locks at the next dock
	// without spending CPU on them. 0 is off (every lock heard).
	MinRSSI int16
	// UpdateEvery is how often, at most, a lock whose advertisements
	// change only its RSSI is reported Updated; 0 is 1 s, negative
	// reports every change. A change of anything else (lock ID, flags,
	// battery, a malformed advertisement) is reported at once, and a
	// held-back RSSI goes out with the first advertisement after
	// UpdateEvery. Locks is always current. At a dock, 1,000 locks
	// advertising 10 times a second with a jittering RSSI are otherwise
	// 10,000 events a second for consumers that need one a second.
	UpdateEvery time.Duration
	Logger      *slog.Logger // nil discards
	Now         func() time.Time
	// Dispatcher to subscribe through (one per connection); nil makes one
	// that Close closes.
	Dispatcher *Dispatcher

	// Wedged-adapter detection (see Adapter.PowerCycles). The adapter is
	// power-cycled when WedgeConnectFailures connects in a row (through
	// Adapter.Connect) failed with a retryable link error (0 is 5), or
	// when discovery is found stopped and StartDiscovery answers
	// InProgress at WedgeDiscoveryStrikes health checks in a row (0 is 3).
	// Health checks run every SweepEvery. At most one power cycle per
	// MinPowerCycleInterval (0 is 1 min). A negative count disables that
	// detection.
	WedgeConnectFailures  int
	WedgeDiscoveryStrikes int
	MinPowerCycleInterval time.Duration
}

// Lock state flags in the advertisement (docs/protocol.md §1.1).
const (
	FlagLocked     byte = 1 << 0
	FlagJammed     byte = 1 << 1
	FlagBondWindow byte = 1 << 2
	FlagBatteryLow byte = 1 << 3
)

// LockInfo is one lock as last seen.
type LockInfo struct {
	Address  string
	Path     dbus.ObjectPath
	LockID   [8]byte
	Flags    byte
	Battery  uint8
	RSSI     int16 // 0 when unknown
	LastSeen time.Time
	// Err is set (wrapping ErrAdvertisement) when the advertisement is
	// missing, mistyped or malformed; the other fields are then partial.
	Err error
}

// EventKind says what happened to a lock.
type EventKind int

// Event kinds.
const (
	Appeared EventKind = iota + 1
	Updated
	Gone
)

func (k EventKind) String() string {
	switch k {
	case Appeared:
		return "appeared"
	case Updated:
		return "updated"
	case Gone:
		return "gone"
	}
	return "unknown"
}

// Event reports a change of a lock.
type Event struct {
	Kind EventKind
	Lock LockInfo
}

type device struct {
	props   map[string]dbus.Variant
	info    LockInfo
	isLock  bool
	present bool
	// md is the lock payload (ManufacturerData[CompanyID]) info was
	// parsed from, when ManufacturerData holds nothing else; nil
	// otherwise. An advertisement carrying the same bytes needs no
	// parsing (onAdvert).
	md []byte
	// rssiStale: info.RSSI is newer than props["RSSI"] (onAdvert's
	// fast path sets only the first; update writes it back first).
	rssiStale bool
	// reported is when the last Appeared or Updated event went out;
	// held is set when an RSSI-only change was not reported yet
	// (Options.UpdateEvery).
	reported time.Time
	held     bool
}

// Adapter tracks the locks one BlueZ adapter sees. All state is kept by one
// goroutine, whatever the number of devices, except that on a connection
// made by DialBus the connection's reading goroutine applies
// advertisements (onAdvert) under the same lock.
//
// Recovery, without restarting anything: when bluetoothd leaves the bus
// its devices are forgotten (reported Gone); when a new bluetoothd takes
// org.bluez, or the adapter is removed and added again (at the same path:
// the kernel gives a re-plugged controller the lowest free index), the
// adapter is powered on, the discovery filter set and discovery started
// again. A health check every SweepEvery powers the adapter on again if
// something powered it off, restarts discovery if it stopped, and
// power-cycles an adapter found wedged (see Options).
type Adapter struct {
	conn    *dbus.Conn
	obj     dbus.BusObject
	path    dbus.ObjectPath
	opts    Options
	log     *slog.Logger
	disp    *Dispatcher
	ownDisp bool
	omSub   *Subscription
	pcSub   *Subscription
	nameSub *Subscription // NameOwnerChanged of org.bluez: bluetoothd restarts
	// tap, on a connection made by DialBus, hands over advertisements
	// decoded from the wire (takeAdvert; nil otherwise).
	tap      *tap
	restarts atomic.Uint64
	events   chan Event
	dropped  atomic.Uint64
	resyncs  atomic.Uint64
	ctx      context.Context // cancelled by Close: bounds the run goroutine's calls
	cancel   context.CancelFunc
	done     chan struct{}
	stopped  chan struct{}
	once     sync.Once
	closeErr error

	mu      sync.RWMutex
	devices map[dbus.ObjectPath]*device
	chars   map[dbus.ObjectPath]charPaths // by device: see charPaths

	// Adapter state, kept by the run goroutine (atomics: read by Ready
	// and metrics).
	present     atomic.Bool // the adapter object exists
	powered     atomic.Bool
	discovering atomic.Bool
	discStrikes int           // health checks in a row finding discovery stuck
	healthRuns  atomic.Uint64 // health checks completed (tests count them)
	lastCycle   time.Time     // last power cycle

	connFails   atomic.Int64 // connects in a row failed with a link error
	wedged      chan string  // a reason to power-cycle, from Connect
	powerCycles atomic.Uint64
	removals    atomic.Uint64
	connectErrs atomic.Uint64
}

// Open finds the adapter, powers it on, sets an LE discovery filter on the
// service UUID, starts discovery and tracks the locks it sees until Close.
func Open(ctx context.Context, conn *dbus.Conn, opts Options) (_ *Adapter, err error) {
	if opts.ServiceUUID == "" {
		opts.ServiceUUID = LockServiceUUID
	}
	if opts.CompanyID == 0 {
		opts.CompanyID = TestCompanyID
	}
	if opts.MinRSSI < -127 || opts.MinRSSI > 20 {
		return nil, fmt.Errorf("%w: MinRSSI %d dBm outside -127..20", ErrInvalidArguments, opts.MinRSSI)
	}
	if opts.AwayTimeout <= 0 {
		opts.AwayTimeout = 30 * time.Second
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 5 * time.Second
	}
	if opts.SweepEvery <= 0 {
		opts.SweepEvery = opts.AwayTimeout / 4
	}
	if opts.EventQueue <= 0 {
		opts.EventQueue = 1024
	}
	if opts.UpdateEvery == 0 {
		opts.UpdateEvery = time.Second
	}
	if opts.SignalQueue <= 0 {
		opts.SignalQueue = 4096
	}
	if opts.WedgeConnectFailures == 0 {
		opts.WedgeConnectFailures = 5
	}
	if opts.WedgeDiscoveryStrikes == 0 {
		opts.WedgeDiscoveryStrikes = 3
	}
	if opts.MinPowerCycleInterval <= 0 {
		opts.MinPowerCycleInterval = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &Adapter{
		conn:    conn,
		opts:    opts,
		log:     log.With("component", "bluez.adapter"),
		disp:    opts.Dispatcher,
		events:  make(chan Event, opts.EventQueue),
		wedged:  make(chan string, 1),
		ctx:     context.Background(),
		cancel:  func() {},
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
		devices: map[dbus.ObjectPath]*device{},
		chars:   map[dbus.ObjectPath]charPaths{},
	}
	if a.disp == nil {
		a.disp = NewDispatcher(conn, opts.CallTimeout)
		a.ownDisp = true
	}
	defer func() {
		if err != nil {
			a.closeSubs()
		}
	}()
	// Subscribe before reading the tree so nothing between is missed.
	a.omSub, err = a.disp.Subscribe(ctx, Match{Sender: BusName, Path: "/", Interface: ifaceObjectManage}, opts.SignalQueue)
	if err != nil {
		return nil, err
	}
	a.pcSub, err = a.disp.Subscribe(ctx, Match{Sender: BusName, PathNamespace: "/org/bluez", Interface: ifaceProperties, Member: "PropertiesChanged"}, opts.SignalQueue)
	if err != nil {
		return nil, err
	}
	a.nameSub, err = a.disp.Subscribe(ctx, Match{Sender: "org.freedesktop.DBus", Path: "/org/freedesktop/DBus",
		Interface: "org.freedesktop.DBus", Member: "NameOwnerChanged", Arg0: BusName}, 16)
	if err != nil {
		return nil, err
	}
	objs, err := a.managedObjects(ctx)
	if err != nil {
		return nil, err
	}
	var powered bool
	for _, p := range sortedPaths(objs) {
		props, ok := objs[p][IfaceAdapter]
		if !ok {
			continue
		}
		addr, _ := props["Address"].Value().(string)
		name := string(p[strings.LastIndexByte(string(p), '/')+1:])
		if opts.Adapter == "" || opts.Adapter == name || strings.EqualFold(opts.Adapter, addr) {
			a.path = p
			powered, _ = props["Powered"].Value().(bool)
			disc, _ := props["Discovering"].Value().(bool)
			a.discovering.Store(disc)
			break
		}
	}
	if a.path == "" {
		return nil, fmt.Errorf("%w: %q", ErrNoAdapter, opts.Adapter)
	}
	a.log = a.log.With("adapter", string(a.path))
	a.obj = conn.Object(BusName, a.path)
	a.present.Store(true)
	if err := a.start(ctx, powered); err != nil {
		return nil, err
	}
	a.load(objs, nil)
	if t := tapOf(conn); t != nil {
		// From now on the connection's reader takes this adapter's
		// advertisements out of the stream; those it took before are
		// in the tree just read or still queued on pcSub.
		if t.attach(string(a.path), a) {
			a.tap = t
		}
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	go a.run()
	return a, nil
}

// start powers the adapter on if needed, sets the discovery filter and
// starts discovery: at Open, and again after bluetoothd restarted.
func (a *Adapter) start(ctx context.Context, powered bool) error {
	if !powered {
		a.log.Info("powering adapter on")
		if err := a.call(ctx, ifaceProperties+".Set", IfaceAdapter, "Powered", dbus.MakeVariant(true)); err != nil {
			return fmt.Errorf("bluez: powering %s on: %w", a.path, err)
		}
	}
	a.powered.Store(true)
	// DuplicateData stays true: presence (AwayTimeout, LastSeen) and the
	// scheduler's "heard" wake-ups need every advertisement, and with it
	// false BlueZ sends a steady lock's ManufacturerData once only.
	// UUIDs, Transport and RSSI make bluetoothd drop everything else
	// before it costs a signal.
	filter := map[string]dbus.Variant{
		"UUIDs":         dbus.MakeVariant([]string{a.opts.ServiceUUID}),
		"Transport":     dbus.MakeVariant("le"),
		"DuplicateData": dbus.MakeVariant(true),
	}
	if a.opts.MinRSSI != 0 {
		filter["RSSI"] = dbus.MakeVariant(a.opts.MinRSSI)
	}
	if err := a.call(ctx, IfaceAdapter+".SetDiscoveryFilter", filter); err != nil {
		return fmt.Errorf("bluez: SetDiscoveryFilter: %w", err)
	}
	if err := a.call(ctx, IfaceAdapter+".StartDiscovery"); err != nil && !errors.Is(err, ErrInProgress) {
		return fmt.Errorf("bluez: StartDiscovery: %w", err)
	}
	return nil
}

// recover runs after bluetoothd came back (a new owner of org.bluez): its
// discovery sessions and filters died with it, so start them again and
// reload the tree. It never restarts the daemon; a failure is logged and
// retried at the next restart signal or by the caller.
func (a *Adapter) recover() {
	a.restarts.Add(1)
	a.log.Warn("bluetoothd restarted; starting discovery again")
	a.restart()
}

// restart reads the adapter's state, powers it on, starts discovery and
// reloads the tree: after a bluetoothd restart or the adapter's return.
// An adapter not (yet) exported is left for its InterfacesAdded.
func (a *Adapter) restart() {
	ctx, cancel := a.opCtx(4 * a.opts.CallTimeout)
	defer cancel()
	objs, err := a.managedObjects(ctx)
	if err != nil {
		a.log.Warn("reading the tree failed", "err", err)
		return
	}
	props, ok := objs[a.path][IfaceAdapter]
	a.present.Store(ok)
	if !ok {
		a.log.Warn("adapter not present; waiting for it")
		a.powered.Store(false)
		a.discovering.Store(false)
		a.dropExcept(nil)
		return
	}
	powered, _ := props["Powered"].Value().(bool)
	disc, _ := props["Discovering"].Value().(bool)
	a.powered.Store(powered)
	a.discovering.Store(disc)
	a.discStrikes = 0
	if err := a.start(ctx, powered); err != nil {
		a.log.Warn("restarting discovery failed; the health check retries", "err", err)
	}
	// Reload the tree as it is after StartDiscovery: its devices, and
	// Discovering as our own session made it. Nothing was dropped, so it
	// is not a resync; but the signals this reload drains include the
	// adapter's PropertiesChanged(Discovering), which the Discovering
	// read above predates.
	a.reload(false)
}

// opCtx is a context for the run goroutine's own calls: bounded by d and
// cancelled by Close.
func (a *Adapter) opCtx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(a.ctx, d)
}

// forgetAll drops every device: bluetoothd went away with its object tree.
func (a *Adapter) forgetAll() {
	a.log.Warn("bluetoothd left the bus; forgetting its devices")
	a.present.Store(false)
	a.powered.Store(false)
	a.discovering.Store(false)
	a.dropExcept(nil)
}

// Restarts counts the bluetoothd restarts the adapter recovered from.
func (a *Adapter) Restarts() uint64 { return a.restarts.Load() }

func sortedPaths(objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant) []dbus.ObjectPath {
	ps := make([]dbus.ObjectPath, 0, len(objs))
	for p := range objs {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// call calls method on the adapter with a deadline of CallTimeout (or
// ctx's, if earlier) and maps its error.
func (a *Adapter) call(ctx context.Context, method string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, a.opts.CallTimeout)
	defer cancel()
	return MapError(a.obj.CallWithContext(ctx, method, 0, args...).Err)
}

func (a *Adapter) managedObjects(ctx context.Context) (map[dbus.ObjectPath]map[string]map[string]dbus.Variant, error) {
	ctx, cancel := context.WithTimeout(ctx, a.opts.CallTimeout)
	defer cancel()
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	err := a.conn.Object(BusName, "/").CallWithContext(ctx, ifaceObjectManage+".GetManagedObjects", 0).Store(&objs)
	if err != nil {
		return nil, fmt.Errorf("bluez: GetManagedObjects: %w", MapError(err))
	}
	return objs, nil
}

// Path is the adapter's object path.
func (a *Adapter) Path() dbus.ObjectPath { return a.path }

// Dispatcher is the dispatcher the adapter subscribes through, for other
// clients on the same connection.
func (a *Adapter) Dispatcher() *Dispatcher { return a.disp }

// Events delivers appeared, updated and gone events. It is closed by
// Close. When it is full, events are dropped and counted (DroppedEvents);
// Locks is always current.
func (a *Adapter) Events() <-chan Event { return a.events }

// DroppedEvents counts events dropped because Events was full.
func (a *Adapter) DroppedEvents() uint64 { return a.dropped.Load() }

// Resyncs counts resynchronisations from GetManagedObjects after dropped
// signals.
func (a *Adapter) Resyncs() uint64 { return a.resyncs.Load() }

// Locks returns the locks currently present, sorted by address: devices
// listing the service UUID or carrying lock ManufacturerData, not away.
// Devices already in BlueZ's cache at Open count as seen at Open. A lock
// whose advertisement is missing or malformed is listed with Err set.
func (a *Adapter) Locks() []LockInfo {
	a.mu.RLock()
	out := make([]LockInfo, 0, len(a.devices))
	for _, d := range a.devices {
		if d.isLock && d.present {
			out = append(out, d.info)
		}
	}
	a.mu.RUnlock()
	slices.SortFunc(out, func(x, y LockInfo) int { return strings.Compare(x.Address, y.Address) })
	return out
}

// presentLocks counts the locks Locks would list.
func (a *Adapter) presentLocks() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	n := 0
	for _, d := range a.devices {
		if d.isLock && d.present {
			n++
		}
	}
	return n
}

func (a *Adapter) emit(k EventKind, info LockInfo) {
	select {
	case a.events <- Event{Kind: k, Lock: info}:
	default:
		a.dropped.Add(1)
	}
}

func (a *Adapter) run() {
	defer close(a.stopped)
	defer close(a.events)
	tick := time.NewTicker(a.opts.SweepEvery)
	defer tick.Stop()
	var omDropped, pcDropped uint64
	followUp := false
	for {
		select {
		case <-a.done:
			return
		case s, ok := <-a.omSub.C():
			if !ok {
				return
			}
			a.onObjectManager(s)
		case s, ok := <-a.pcSub.C():
			if !ok {
				return
			}
			a.onPropertiesChanged(s)
		case s, ok := <-a.nameSub.C():
			if !ok {
				return
			}
			// NameOwnerChanged(name, old_owner, new_owner): no new owner
			// means bluetoothd is gone, and every device with it; a new
			// owner means it is back.
			if len(s.Body) == 3 {
				if owner, _ := s.Body[2].(string); owner != "" {
					a.recover()
				} else {
					a.forgetAll()
				}
			}
		case why := <-a.wedged:
			a.powerCycle(why)
		case <-tick.C:
			a.sweep()
			a.health()
			if followUp {
				followUp = false
				a.resync()
			}
		}
		pd := a.pcSub.Dropped()
		if od := a.omSub.Dropped(); od != omDropped || pd != pcDropped {
			omDropped, pcDropped = od, pd
			a.resync()
			// Signals emitted before the snapshot but still in flight
			// through godbus and the dispatcher can arrive after it and
			// undo it (a stale InterfacesAdded); one more snapshot on the
			// next tick repairs that.
			followUp = true
		}
	}
}

// drain discards the signals queued so far: they are older than a
// snapshot about to be taken.
func (a *Adapter) drain() {
	for {
		select {
		case _, ok := <-a.omSub.C():
			if !ok {
				return
			}
		case _, ok := <-a.pcSub.C():
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// resync reloads the tree after signals were dropped.
func (a *Adapter) resync() {
	a.log.Warn("signals dropped; resynchronising from GetManagedObjects")
	a.reload(true)
}

// reload discards the signals queued so far and replaces what they would
// have told with a snapshot of the tree: the devices, and the adapter's
// Powered and Discovering (drain discards the adapter's own
// PropertiesChanged too; a Discovering=true lost that way left the
// health check believing discovery stopped, and our own session's
// InProgress then looked like a wedge, issue 13). dropped counts it as a
// resync (signals were lost), as opposed to a reload after bluetoothd
// restarted or the adapter returned.
func (a *Adapter) reload(dropped bool) {
	a.drain()
	objs, err := a.managedObjects(a.ctx)
	if err != nil {
		a.log.Warn("reloading the tree failed", "err", err)
		return
	}
	if dropped {
		a.resyncs.Add(1)
	}
	if props, ok := objs[a.path][IfaceAdapter]; ok {
		if v, ok := props["Powered"].Value().(bool); ok {
			a.powered.Store(v)
		}
		if v, ok := props["Discovering"].Value().(bool); ok {
			a.discovering.Store(v)
		}
	}
	seen := map[dbus.ObjectPath]bool{}
	a.load(objs, seen)
	a.dropExcept(seen)
}

// forgetChars drops the cached characteristics of the device at p or of
// the device p is below (a GATT object removed: services changed).
func (a *Adapter) forgetChars(p dbus.ObjectPath) {
	if !a.ours(p) {
		return
	}
	// /org/bluez/hciN/dev_XX_XX_XX_XX_XX_XX[/service…]
	rest := string(p)[len(a.path)+1:]
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	dev := a.path + "/" + dbus.ObjectPath(rest)
	a.mu.Lock()
	delete(a.chars, dev)
	a.mu.Unlock()
}

// dropExcept forgets every device not in keep, reporting the locks among
// them as gone.
func (a *Adapter) dropExcept(keep map[dbus.ObjectPath]bool) {
	a.mu.Lock()
	for p := range a.chars {
		if !keep[p] {
			delete(a.chars, p)
		}
	}
	var gone []LockInfo
	for p, d := range a.devices {
		if !keep[p] {
			if d.isLock && d.present {
				gone = append(gone, d.info)
			}
			delete(a.devices, p)
		}
	}
	a.mu.Unlock()
	for _, g := range gone {
		a.emit(Gone, g)
	}
}

func (a *Adapter) load(objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant, seen map[dbus.ObjectPath]bool) {
	for p, ifs := range objs {
		if props, ok := ifs[IfaceDevice]; ok && a.ours(p) {
			if seen != nil {
				seen[p] = true
			}
			// Not "seen": a cached device is not proof of a recent
			// advertisement, and resync must not reset LastSeen. A device
			// new to us is still listed (update marks it present).
			a.update(p, props, nil, false)
		}
	}
}

func (a *Adapter) ours(p dbus.ObjectPath) bool {
	return strings.HasPrefix(string(p), string(a.path)+"/")
}

func (a *Adapter) onObjectManager(s *dbus.Signal) {
	switch s.Name {
	case ifaceObjectManage + ".InterfacesAdded":
		var p dbus.ObjectPath
		var ifs map[string]map[string]dbus.Variant
		if err := dbus.Store(s.Body, &p, &ifs); err != nil {
			a.log.Debug("bad InterfacesAdded", "err", err)
			return
		}
		if props, ok := ifs[IfaceDevice]; ok && a.ours(p) {
			a.update(p, props, nil, true)
		}
		if _, ok := ifs[IfaceAdapter]; ok && p == a.path {
			a.log.Warn("adapter added again; restarting discovery")
			a.restart()
		}
	case ifaceObjectManage + ".InterfacesRemoved":
		var p dbus.ObjectPath
		var ifs []string
		if err := dbus.Store(s.Body, &p, &ifs); err != nil {
			return
		}
		if p == a.path && slices.Contains(ifs, IfaceAdapter) {
			a.removals.Add(1)
			a.present.Store(false)
			a.powered.Store(false)
			a.discovering.Store(false)
			a.log.Warn("adapter removed; forgetting its devices until it is back")
			a.dropExcept(nil)
			return
		}
		a.forgetChars(p)
		if !slices.Contains(ifs, IfaceDevice) {
			return
		}
		a.mu.Lock()
		d, ok := a.devices[p]
		delete(a.devices, p)
		a.mu.Unlock()
		if ok && d.isLock && d.present {
			a.emit(Gone, d.info)
		}
	}
}

func (a *Adapter) onPropertiesChanged(s *dbus.Signal) {
	if s.Path == a.path && len(s.Body) >= 2 {
		if iface, _ := s.Body[0].(string); iface == IfaceAdapter {
			changed, _ := s.Body[1].(map[string]dbus.Variant)
			if v, ok := changed["Powered"].Value().(bool); ok {
				a.powered.Store(v)
			}
			if v, ok := changed["Discovering"].Value().(bool); ok {
				a.discovering.Store(v)
			}
		}
		return
	}
	if !a.ours(s.Path) || len(s.Body) < 2 {
		return
	}
	iface, _ := s.Body[0].(string)
	changed, _ := s.Body[1].(map[string]dbus.Variant)
	if iface != IfaceDevice {
		return
	}
	if s.Path == a.path {
		return
	}
	var invalidated []string
	if len(s.Body) > 2 {
		invalidated, _ = s.Body[2].([]string)
	}
	// Any advertisement-driven property means the lock was just seen.
	_, rssi := changed["RSSI"]
	_, md := changed["ManufacturerData"]
	a.update(s.Path, changed, invalidated, rssi || md)
}

var (
	sigInt16 = dbus.ParseSignatureMust("n")
	sigBytes = dbus.ParseSignatureMust("ay")
	sigMD    = dbus.ParseSignatureMust("a{qv}")
)

// onAdvert is onPropertiesChanged for an advertisement the connection's
// reader decoded. A device not known yet is skipped: its InterfacesAdded,
// still on its way through godbus, carries the same data.
func (a *Adapter) onAdvert(ad advert) {
	// Runs in godbus's reading goroutine (takeAdvert), concurrently with
	// run: every change of d is made, and its event sent (never
	// blocking), under a.mu, so events keep the order of the changes.
	p := dbus.ObjectPath(ad.path)
	a.mu.Lock()
	d, known := a.devices[p]
	if !known {
		a.mu.Unlock()
		return
	}
	// The common case: a present lock advertising the payload it
	// advertised before, its RSSI maybe changed. Nothing to parse, no
	// map to build.
	if ad.hasMD && len(ad.md) == 1 && ad.md[0].company == a.opts.CompanyID && d.md != nil &&
		bytes.Equal(ad.md[0].data, d.md) && d.isLock && d.present && d.info.Err == nil {
		now := a.opts.Now()
		old := d.info
		if ad.hasRSSI && ad.rssi != d.info.RSSI {
			d.info.RSSI, d.rssiStale = ad.rssi, true
		}
		d.info.LastSeen = now
		if k, info := a.report(d, old, true, now); k != 0 {
			a.emit(k, info)
		}
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	props := make(map[string]dbus.Variant, 2)
	if ad.hasRSSI {
		props["RSSI"] = dbus.MakeVariantWithSignature(ad.rssi, sigInt16)
	}
	if ad.hasMD {
		md := make(map[uint16]dbus.Variant, len(ad.md))
		for _, e := range ad.md {
			md[e.company] = dbus.MakeVariantWithSignature(e.data, sigBytes)
		}
		props["ManufacturerData"] = dbus.MakeVariantWithSignature(md, sigMD)
	}
	a.update(p, props, nil, true)
}

// takeAdvert implements advertSink.
func (a *Adapter) takeAdvert(ad advert) { a.onAdvert(ad) }

// DecodedAdverts counts the advertisements the connection's own reader
// decoded (a connection made by DialBus), bypassing godbus's decoder.
func (a *Adapter) DecodedAdverts() uint64 {
	if a.tap == nil {
		return 0
	}
	return a.tap.taken.Load()
}

// update merges props into the device at p, reparses it and emits.
func (a *Adapter) update(p dbus.ObjectPath, props map[string]dbus.Variant, invalidated []string, seen bool) {
	now := a.opts.Now()
	a.mu.Lock()
	d, ok := a.devices[p]
	if !ok {
		d = &device{props: map[string]dbus.Variant{}}
		a.devices[p] = d
	}
	if d.rssiStale {
		d.props["RSSI"] = dbus.MakeVariantWithSignature(d.info.RSSI, sigInt16)
		d.rssiStale = false
	}
	for k, v := range props {
		d.props[k] = v
	}
	for _, k := range invalidated {
		delete(d.props, k)
	}
	old := d.info
	wasPresent := d.present && d.isLock
	d.info, d.isLock = a.parse(p, d.props)
	d.md = nil
	if m, ok := d.props["ManufacturerData"].Value().(map[uint16]dbus.Variant); ok && len(m) == 1 && d.info.Err == nil {
		d.md, _ = m[a.opts.CompanyID].Value().([]byte)
	}
	d.info.LastSeen = old.LastSeen
	if seen || !ok {
		d.info.LastSeen = now
		d.present = true
	}
	if k, info := a.report(d, old, wasPresent, now); k != 0 {
		a.emit(k, info) // under a.mu: see onAdvert
	}
	a.mu.Unlock()
}

// report is the event d's new info calls for, if any (0: none), given
// its info before (old) and whether it was a present lock; a.mu is held.
// An RSSI-only change is held back for Options.UpdateEvery after the
// last report, and goes out with the first update after that.
func (a *Adapter) report(d *device, old LockInfo, wasPresent bool, now time.Time) (EventKind, LockInfo) {
	switch {
	case !d.isLock || !d.present:
		if wasPresent {
			d.held = false
			return Gone, old
		}
		return 0, LockInfo{}
	case !wasPresent:
	case sameLock(old, d.info):
		if !d.held || now.Sub(d.reported) < a.opts.UpdateEvery {
			return 0, LockInfo{}
		}
	case a.opts.UpdateEvery > 0 && rssiOnly(old, d.info) && now.Sub(d.reported) < a.opts.UpdateEvery:
		d.held = true
		return 0, LockInfo{}
	}
	k := Updated
	if !wasPresent {
		k = Appeared
	}
	d.reported, d.held = now, false
	return k, d.info
}

// rssiOnly reports whether x and y differ in nothing but RSSI.
func rssiOnly(x, y LockInfo) bool {
	x.RSSI, x.LastSeen = y.RSSI, y.LastSeen
	return sameLock(x, y)
}

func sameLock(x, y LockInfo) bool {
	return x.Address == y.Address && x.LockID == y.LockID && x.Flags == y.Flags &&
		x.Battery == y.Battery && x.RSSI == y.RSSI && errText(x.Err) == errText(y.Err)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// health runs every SweepEvery: it powers the adapter on again if
// something powered it off, starts discovery again if it stopped, and
// power-cycles the adapter when discovery is stuck: stopped, yet
// StartDiscovery answers InProgress (bluetoothd believes it runs).
func (a *Adapter) health() {
	defer a.healthRuns.Add(1)
	if !a.present.Load() {
		return
	}
	ctx, cancel := a.opCtx(3 * a.opts.CallTimeout)
	defer cancel()
	if !a.powered.Load() {
		a.log.Warn("adapter powered off; powering it on again")
		if err := a.start(ctx, false); err != nil {
			a.log.Warn("powering on failed", "err", err)
		}
		return
	}
	if a.discovering.Load() {
		a.discStrikes = 0
		return
	}
	err := a.call(ctx, IfaceAdapter+".StartDiscovery")
	if errors.Is(err, ErrInProgress) && a.discoveringNow(ctx) {
		// Our flag was stale (a PropertiesChanged lost): the InProgress
		// is our own running session, as bluetoothd answers a client
		// that already has one (src/adapter.c start_discovery).
		a.discovering.Store(true)
		err = nil
	}
	switch {
	case err == nil:
		a.discStrikes = 0
	case errors.Is(err, ErrInProgress):
		a.discStrikes++
		a.log.Warn("discovery stopped but StartDiscovery says in progress", "strikes", a.discStrikes)
		if n := a.opts.WedgeDiscoveryStrikes; n > 0 && a.discStrikes >= n {
			a.discStrikes = 0
			a.powerCycle("discovery stuck")
		}
	default:
		a.log.Warn("restarting discovery failed", "err", err)
	}
}

// discoveringNow reads the adapter's Discovering from bluetoothd; false
// when it cannot be read.
func (a *Adapter) discoveringNow(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, a.opts.CallTimeout)
	defer cancel()
	var v dbus.Variant
	if err := a.obj.CallWithContext(ctx, ifaceProperties+".Get", 0, IfaceAdapter, "Discovering").Store(&v); err != nil {
		return false
	}
	b, _ := v.Value().(bool)
	return b
}

// powerCycle turns a wedged adapter off and on again and restarts
// discovery, at most once per MinPowerCycleInterval.
func (a *Adapter) powerCycle(why string) {
	now := a.opts.Now()
	if !a.lastCycle.IsZero() && now.Sub(a.lastCycle) < a.opts.MinPowerCycleInterval {
		a.log.Debug("adapter looks wedged; power cycle held back", "reason", why)
		return
	}
	a.lastCycle = now
	// Not ready from before the cycle is counted: a caller that sees the
	// cycle counted and Ready true finds the adapter powered again.
	a.powered.Store(false)
	a.powerCycles.Add(1)
	a.connFails.Store(0)
	a.log.Warn("adapter looks wedged; power-cycling it", "reason", why)
	ctx, cancel := a.opCtx(4 * a.opts.CallTimeout)
	defer cancel()
	if err := a.call(ctx, ifaceProperties+".Set", IfaceAdapter, "Powered", dbus.MakeVariant(false)); err != nil {
		a.log.Warn("powering the adapter off failed", "err", err)
	}
	a.powered.Store(false)
	a.discovering.Store(false)
	if err := a.start(ctx, false); err != nil {
		a.log.Warn("powering the adapter on again failed; the health check retries", "err", err)
	}
}

// Connect connects to a lock through this adapter (see the package-level
// Connect; opts.Dispatcher defaults to the adapter's). Connects that fail
// in a row with a retryable link error (aborted, failed, or a call's
// deadline; not InProgress, which only says another attempt is running)
// count towards Options.WedgeConnectFailures; a success resets the count.
func (a *Adapter) Connect(ctx context.Context, opts DeviceOptions) (*Device, error) {
	if opts.Dispatcher == nil {
		opts.Dispatcher = a.disp
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = a.opts.CallTimeout
	}
	if opts.Dispatcher == a.disp {
		opts.under = a.pcSub
		a.mu.RLock()
		if c, ok := a.chars[opts.Path]; ok {
			opts.cache = &c
		}
		a.mu.RUnlock()
	}
	d, err := Connect(ctx, a.conn, opts)
	if err == nil {
		a.connFails.Store(0)
		if opts.under != nil {
			a.mu.Lock()
			a.chars[opts.Path] = charPaths{inbox: d.inboxPath, outbox: d.outboxPath}
			a.mu.Unlock()
		}
		return d, nil
	}
	if linkFailure(err) && ctx.Err() == nil {
		a.connectErrs.Add(1)
		n := a.connFails.Add(1)
		if lim := a.opts.WedgeConnectFailures; lim > 0 && n >= int64(lim) {
			select {
			case a.wedged <- fmt.Sprintf("%d connects in a row failed", n):
			default:
			}
		}
	}
	return nil, err
}

// linkFailure reports whether err is the radio failing to connect, as
// opposed to a wrong argument, a missing device or the caller's deadline.
func linkFailure(err error) bool {
	return errors.Is(err, ErrConnectionAborted) || errors.Is(err, ErrConnectionFailed) ||
		errors.Is(err, context.DeadlineExceeded) ||
		(errors.Is(err, ErrFailed) && Retryable(err))
}

// Ready reports whether the adapter is present and powered.
func (a *Adapter) Ready() bool { return a.present.Load() && a.powered.Load() }

// PowerCycles counts the power cycles of a wedged adapter.
func (a *Adapter) PowerCycles() uint64 { return a.powerCycles.Load() }

// Removals counts the times the adapter was removed (and so lost every
// device and connection).
func (a *Adapter) Removals() uint64 { return a.removals.Load() }

// ConnectFailures counts connects through Adapter.Connect that failed with
// a link error.
func (a *Adapter) ConnectFailures() uint64 { return a.connectErrs.Load() }

// sweep reports locks unseen for AwayTimeout as gone.
func (a *Adapter) sweep() {
	now := a.opts.Now()
	var gone []LockInfo
	a.mu.Lock()
	for _, d := range a.devices {
		if d.isLock && d.present && now.Sub(d.info.LastSeen) >= a.opts.AwayTimeout {
			d.present = false
			gone = append(gone, d.info)
		}
	}
	a.mu.Unlock()
	for _, g := range gone {
		a.emit(Gone, g)
	}
}

// parse builds a LockInfo from Device1 properties. A device is a lock when
// it lists the service UUID or carries ManufacturerData (of any type) with
// our company ID or of the wrong type.
func (a *Adapter) parse(p dbus.ObjectPath, props map[string]dbus.Variant) (LockInfo, bool) {
	info := LockInfo{Path: p}
	info.Address, _ = props["Address"].Value().(string)
	if v, ok := props["RSSI"].Value().(int16); ok {
		info.RSSI = v
	}
	isLock := false
	if uuids, ok := props["UUIDs"].Value().([]string); ok {
		isLock = slices.ContainsFunc(uuids, func(u string) bool { return strings.EqualFold(u, a.opts.ServiceUUID) })
	}
	mdv, hasMD := props["ManufacturerData"]
	if !hasMD {
		info.Err = fmt.Errorf("%w: no ManufacturerData", ErrAdvertisement)
		return info, isLock
	}
	payload, found, err := manufacturerPayload(mdv, a.opts.CompanyID)
	switch {
	case err != nil:
		info.Err = err
		return info, true
	case !found:
		info.Err = fmt.Errorf("%w: no ManufacturerData[0x%04X]", ErrAdvertisement, a.opts.CompanyID)
		return info, isLock
	}
	if err := ParseAdvertisement(payload, &info); err != nil {
		info.Err = err
	}
	return info, true
}

// manufacturerPayload extracts ManufacturerData[company] (BlueZ type
// a{qv}, values ay) tolerating wrong types with an error.
func manufacturerPayload(v dbus.Variant, company uint16) ([]byte, bool, error) {
	switch m := v.Value().(type) {
	case map[uint16]dbus.Variant:
		e, ok := m[company]
		if !ok {
			return nil, false, nil
		}
		b, ok := e.Value().([]byte)
		if !ok {
			return nil, true, fmt.Errorf("%w: ManufacturerData[0x%04X] is %s, want ay", ErrAdvertisement, company, e.Signature())
		}
		return b, true, nil
	case map[uint16][]byte:
		b, ok := m[company]
		return b, ok, nil
	default:
		return nil, false, fmt.Errorf("%w: ManufacturerData is %s, want a{qv}", ErrAdvertisement, v.Signature())
	}
}

// ParseAdvertisement parses the 11-byte lock payload (docs/protocol.md
// §1.1) into info's LockID, Flags and Battery.
func ParseAdvertisement(b []byte, info *LockInfo) error {
	if len(b) != 11 {
		return fmt.Errorf("%w: payload is %d bytes, want 11", ErrAdvertisement, len(b))
	}
	if b[0] != 0x01 {
		return fmt.Errorf("%w: payload version %d, want 1", ErrAdvertisement, b[0])
	}
	copy(info.LockID[:], b[1:9])
	info.Flags = b[9]
	info.Battery = b[10]
	return nil
}

// Close stops discovery (bounded by CallTimeout), removes the adapter's
// match rules, waits for its goroutine and closes Events. It is
// idempotent; it returns StopDiscovery's error, if any.
func (a *Adapter) Close() error {
	a.once.Do(func() {
		if a.tap != nil {
			// First: no advertisement is handed over (and no event
			// sent from the reader) once this returns.
			a.tap.detach(a)
		}
		close(a.done)
		a.cancel()
		<-a.stopped
		err := a.call(context.Background(), IfaceAdapter+".StopDiscovery")
		if err != nil && !errors.Is(err, ErrNotReady) && !errors.Is(err, ErrFailed) {
			a.closeErr = fmt.Errorf("bluez: StopDiscovery: %w", err)
		}
		a.closeSubs()
	})
	return a.closeErr
}

func (a *Adapter) closeSubs() {
	if a.omSub != nil {
		_ = a.omSub.Close()
	}
	if a.pcSub != nil {
		_ = a.pcSub.Close()
	}
	if a.nameSub != nil {
		_ = a.nameSub.Close()
	}
	if a.ownDisp {
		_ = a.disp.Close()
	}
}
