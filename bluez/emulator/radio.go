package emulator

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
	"github.com/gatewayd/gatewayd/firmware/lock"
)

// LockOptions describe how a hosted lock appears on the radio.
type LockOptions struct {
	// Name is the advertised local name; default "Lock-" and the last
	// 4 hex digits of the address.
	Name string
	// PublicAddress makes AddressType "public"; default "random".
	PublicAddress bool
	// RSSI is the mean received signal strength; default -60 dBm. Each
	// radio tick draws RSSI ± Jitter (default 3 dB; negative: a steady
	// RSSI) from the emulator's seeded source, and a change is sent as
	// PropertiesChanged.
	RSSI   int16
	Jitter int16
	// TxPower is the advertised TX power (a TX Power Level AD structure);
	// 0, the default, advertises none, as the lock's advertisement
	// (docs/protocol.md §1.1) does, and Device1 then has no TxPower.
	TxPower int16
	// Battery is the battery percentage advertised; nil reports 100.
	Battery func() uint8
	// MTU is the largest ATT MTU the lock accepts in the Exchange MTU;
	// default DefaultLockMTU (247). 23..517.
	MTU int
	// AdvertisedID, if not zero, is the lock ID advertised instead of the
	// lock's own: the device then plays an impostor, a genuine lock (its
	// credential and key, as if extracted from another lock) posing as
	// the lock with this ID. For the gateway's attack tests.
	AdvertisedID [8]byte
}

// hosted is a lock on the virtual radio.
type hosted struct {
	l       *lock.Lock         // nil for a bootloader
	bl      *target.Bootloader // a whole lock's bootloader in DFU mode (AddDevice)
	dfu     *dfuHost           // the whole lock this comes from (AddDevice); nil for AddLock
	addr    string
	opts    LockOptions
	inRange bool
}

// device is an exported Device1.
type device struct {
	addr     string
	path     dbus.ObjectPath
	h        *hosted
	lastSeen time.Time
	conn     *connection
	gatt     *gattObjects // exported by the first connection, kept until the device goes
	seq      uint64       // creation order, as BlueZ's adapter->devices list
}

var addrRE = regexp.MustCompile(`^[0-9A-F]{2}(:[0-9A-F]{2}){5}$`)

// AddLock puts l on the radio at BLE address addr ("AA:BB:CC:DD:EE:FF").
// It appears as a device at the next radio tick while discovery runs.
func (e *Emulator) AddLock(l *lock.Lock, addr string, opts LockOptions) error {
	if !addrRE.MatchString(addr) {
		return fmt.Errorf("%w: %q", ErrBadAddress, addr)
	}
	if opts.Name == "" {
		opts.Name = "Lock-" + addr[12:14] + addr[15:17]
	}
	if opts.RSSI == 0 {
		opts.RSSI = -60
	}
	if opts.MTU == 0 {
		opts.MTU = DefaultLockMTU
	}
	if opts.MTU < 23 || opts.MTU > 517 {
		return fmt.Errorf("%w: lock MTU %d: want 23..517", ErrBadOptions, opts.MTU)
	}
	switch {
	case opts.Jitter == 0:
		opts.Jitter = 3
	case opts.Jitter < 0:
		opts.Jitter = 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if h, ok := e.locks[addr]; ok && h.inRange {
		return fmt.Errorf("%w: %s", ErrDuplicateLock, addr)
	}
	e.locks[addr] = &hosted{l: l, addr: addr, opts: opts, inRange: true}
	if d := e.devices[addr]; d != nil {
		d.h = e.locks[addr]
	}
	return nil
}

// hostedLocked is the lock hosted at addr; e.mu is held.
func (e *Emulator) hostedLocked(addr string) (*hosted, error) {
	if e.closed {
		return nil, ErrClosed
	}
	h, ok := e.locks[addr]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchLock, addr)
	}
	return h, nil
}

// RemoveLock takes the lock at addr out of range for good (LeaveRange,
// then the lock is no longer hosted): its connection drops at once, and
// its device disappears (InterfacesRemoved) when AwayTimeout has passed
// since its last advertisement, unless BlueZ keeps it (see LeaveRange).
func (e *Emulator) RemoveLock(addr string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, err := e.hostedLocked(addr)
	if err != nil {
		return err
	}
	e.leaveRangeLocked(h)
	delete(e.locks, addr)
	return nil
}

// payload is the lock's advertised manufacturer data (docs/protocol.md
// §1.1): version, lock ID, flags, battery.
func (h *hosted) payload() []byte {
	id := h.l.ID()
	if h.opts.AdvertisedID != ([8]byte{}) {
		id = h.opts.AdvertisedID
	}
	b := uint8(100)
	if h.opts.Battery != nil {
		b = h.opts.Battery()
	}
	var flags byte
	if h.l.Bolt() == command.StateLocked {
		flags |= 1
	}
	if b < 20 {
		flags |= 8
	}
	p := make([]byte, 0, 11)
	p = append(p, 1)
	p = append(p, id[:]...)
	return append(p, flags, b)
}

// radio is the emulator's one radio goroutine.
func (e *Emulator) radio() {
	t := time.NewTicker(e.opts.RadioInterval)
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case now := <-t.C:
			e.tick(now)
		}
	}
}

// tick delivers one round of advertisements and expires devices gone
// away.
func (e *Emulator) tick(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.ticks++
	e.syncAllDFULocked()
	scanning := !e.gone && !e.wedged && len(e.discovery) > 0 && e.boolProp(e.adapter, ifaceAdapter, "Powered")
	if scanning {
		// In address order, so that a seed gives the same radio.
		for _, addr := range slices.Sorted(maps.Keys(e.locks)) {
			h := e.locks[addr]
			if !h.inRange {
				continue
			}
			rssi := h.opts.RSSI
			if h.opts.Jitter > 0 {
				rssi += int16(e.rnd.IntN(int(2*h.opts.Jitter)+1)) - h.opts.Jitter
			}
			d := e.devices[addr]
			if d == nil || d.conn == nil {
				// A connected peripheral stops advertising.
				// Every advertisement, of a known device or not, passes
				// the merged filters first (org.bluez.Adapter.rst
				// SetDiscoveryFilter: reported only if the RSSI is above
				// the threshold).
				if !e.anyFilterMatches(h.uuids(), rssi) {
					continue
				}
				e.advertiseLocked(h, d, rssi, now)
			}
		}
	}
	// BlueZ removes temporary devices TemporaryTimeout after they were
	// last seen (src/device.c set_temporary_timer, device_disappeared);
	// bonded devices and those a client called Connect on are not
	// temporary.
	for addr, d := range e.devices {
		if d.conn == nil && !e.bonds[addr] && e.stored[addr] == nil && now.Sub(d.lastSeen) > e.opts.AwayTimeout {
			e.removeDeviceLocked(d)
		}
	}
}

// duplicateDataLocked reports whether a discovery client asked for
// DuplicateData: BlueZ merges the clients' filters (src/adapter.c
// merge_discovery_filters), duplicates being reported if any client wants
// them.
func (e *Emulator) duplicateDataLocked() bool {
	for _, f := range e.discovery {
		if f != nil && f.duplicateData {
			return true
		}
	}
	return false
}

// Advertise runs one radio round now, as each RadioInterval tick does:
// every lock in range advertises once (subject to the discovery filters).
// Tests and benchmarks give a long RadioInterval and drive the radio with
// it.
func (e *Emulator) Advertise() { e.tick(time.Now()) }

func (e *Emulator) anyFilterMatches(uuids []string, rssi int16) bool {
	for _, f := range e.discovery {
		if f.matches(uuids, rssi) {
			return true
		}
	}
	return false
}

// advertiseLocked records an advertisement of h: it exports the device or
// updates its RSSI and manufacturer data.
func (e *Emulator) advertiseLocked(h *hosted, d *device, rssi int16, now time.Time) {
	var md map[uint16]dbus.Variant
	if h.l != nil {
		md = map[uint16]dbus.Variant{CompanyID: v(h.payload())}
	}
	if d != nil && h.l == nil {
		// A bootloader advertises its name and the DFU service only.
		d.lastSeen = now
		d.h = h
		e.setProps(d.path, ifaceDevice, map[string]dbus.Variant{"RSSI": v(rssi)})
		return
	}
	if d != nil {
		d.lastSeen = now
		d.h = h
		changes := map[string]dbus.Variant{"RSSI": v(rssi), "ManufacturerData": v(md)}
		if e.duplicateDataLocked() {
			// org.bluez.Adapter.rst, DuplicateData: "PropertiesChanged
			// signals will be generated for either ManufacturerData and
			// ServiceData every time they are discovered"; RSSI still
			// only when it changed.
			e.setPropsForce(d.path, ifaceDevice, changes, "ManufacturerData")
		} else {
			e.setProps(d.path, ifaceDevice, changes)
		}
		return
	}
	e.newDeviceLocked(h, now, e.deviceProps(h, rssi, md))
}

// newDeviceLocked exports a device object for h.
func (e *Emulator) newDeviceLocked(h *hosted, now time.Time, props map[string]dbus.Variant) {
	e.seq++
	d := &device{addr: h.addr, path: e.DevicePath(h.addr), h: h, lastSeen: now, seq: e.seq}
	e.devices[h.addr] = d
	e.addObject(d.path, ifaces{ifaceDevice: props})
}

func (e *Emulator) deviceProps(h *hosted, rssi int16, md map[uint16]dbus.Variant) map[string]dbus.Variant {
	at := "random"
	if h.opts.PublicAddress {
		at = "public"
	}
	bonded := e.bonds[h.addr]
	// No AdvertisingFlags: real bluetoothd 5.66 did not expose it for the
	// lock in the real-BlueZ tier (bluez/internal/realbluez
	// TestDifferential).
	ps := map[string]dbus.Variant{
		"Address": v(h.addr), "AddressType": v(at), "Name": v(h.opts.Name), "Alias": v(h.opts.Name),
		"Paired": v(bonded), "Bonded": v(bonded), "Trusted": v(false), "Blocked": v(false),
		"LegacyPairing": v(false), "Connected": v(false), "ServicesResolved": v(false),
		"RSSI": v(rssi), "ManufacturerData": v(md),
		"UUIDs": v(h.uuids()), "Adapter": v(e.adapter),
	}
	if md == nil {
		delete(ps, "ManufacturerData")
	}
	if h.opts.TxPower != 0 {
		// src/device.c: TxPower exists only once a TX Power Level AD
		// structure was seen.
		ps["TxPower"] = v(h.opts.TxPower)
	}
	return ps
}

// removeDeviceLocked removes d as src/device.c device_remove →
// btd_device_unref does: the Device1 interface is unregistered, and its
// destroy callback device_free removes the GATT objects first
// (btd_gatt_client_destroy; gdbus/object.c remove_interface calls the
// destroy callback before it queues the device's InterfacesRemoved). A
// connection still open (RemoveAdapter) ends without property changes.
func (e *Emulator) removeDeviceLocked(d *device) {
	if c := d.conn; c != nil {
		d.conn = nil
		c.stop()
	}
	e.unexportGATTLocked(d)
	delete(e.devices, d.addr)
	e.removeObject(d.path)
}
