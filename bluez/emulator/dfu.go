package emulator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez/internal/locklink"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
	lockdevice "github.com/gatewayd/gatewayd/firmware/lock/device"
)

// Nordic Secure DFU service of a lock's bootloader (docs/dfu.md §4), as
// BlueZ names the 16-bit service UUID 0xFE59 on D-Bus.
const (
	DFUServiceUUID      = "0000fe59-0000-1000-8000-00805f9b34fb"
	DFUControlPointUUID = "8ec90001-f315-4f60-9fb8-838830daea50"
	DFUPacketUUID       = "8ec90002-f315-4f60-9fb8-838830daea50"
)

// GATT layout of the bootloader's DFU service: handles as the SDK's
// bootloader registers them after the GAP and GATT services (the service,
// the Control Point and its CCC, the Packet).
const (
	dfuSvcHandle    uint16 = 0x000a
	dfuCPHandle     uint16 = 0x000b // value 0x000c
	dfuCPCCCHandle  uint16 = 0x000d
	dfuPacketHandle uint16 = 0x000e // value 0x000f
)

// dfuHost is a whole reference lock (firmware/lock/device) on the radio:
// its application at its address while it runs, its bootloader at the
// address plus one while it is in DFU mode (AddDevice).
type dfuHost struct {
	dev  *lockdevice.Device
	addr string // the application's address
	opts LockOptions
	cur  *hosted // what is on the radio now, in e.locks
	mode lockdevice.Mode
}

// AddDevice puts a whole reference lock on the radio at BLE address addr
// (the application's, as dev was built with): the application is hosted
// as AddLock hosts a lock; after an authorised enter-dfu the lock resets
// into its bootloader, which ends the connection, the lock leaves the
// radio at addr, and the bootloader advertises at addr+1
// (lockdevice.BootloaderAddress) as "DfuTarg" with the Secure DFU service
// 0xFE59 (Control Point: write, notify; Packet: write without response),
// at the connection's MTU. Once the bootloader activates an image (or the
// device resets: device.PowerCut), the application is back at addr,
// running what the bootloader booted. opts apply to both (the
// bootloader's name is always lockdevice.BootloaderName).
func (e *Emulator) AddDevice(dev *lockdevice.Device, addr string, opts LockOptions) error {
	if !addrRE.MatchString(addr) {
		return fmt.Errorf("%w: %q", ErrBadAddress, addr)
	}
	if dev.Mode() == lockdevice.ModeApplication && dev.Advertising().Address != addr {
		return fmt.Errorf("%w: %s is not the device's address %s", ErrBadAddress, addr, dev.Advertising().Address)
	}
	if opts.MTU == 0 {
		opts.MTU = DefaultLockMTU
	}
	if opts.MTU < 23 || opts.MTU > 517 {
		return fmt.Errorf("%w: lock MTU %d: want 23..517", ErrBadOptions, opts.MTU)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	bl := lockdevice.BootloaderAddress(addr)
	for _, a := range []string{addr, bl} {
		if h, ok := e.locks[a]; ok && h.inRange {
			return fmt.Errorf("%w: %s", ErrDuplicateLock, a)
		}
	}
	dh := &dfuHost{dev: dev, addr: addr, opts: opts}
	e.dfuDevs[addr] = dh
	e.syncDFULocked(dh)
	return nil
}

// syncDFULocked puts on the radio what dh's device runs now, if that
// changed: the lock at its address, or the bootloader at address+1.
func (e *Emulator) syncDFULocked(dh *dfuHost) {
	mode := dh.dev.Mode()
	if dh.cur != nil && mode == dh.mode {
		return
	}
	if old := dh.cur; old != nil {
		e.leaveRangeLocked(old)
		if e.locks[old.addr] == old {
			delete(e.locks, old.addr)
		}
		dh.cur = nil
	}
	h := &hosted{addr: dh.addr, opts: dh.opts, inRange: true, dfu: dh}
	switch mode {
	case lockdevice.ModeBootloader:
		b, err := dh.dev.Bootloader()
		if err != nil {
			e.log.Debug("device bootloader", "device", dh.addr, "err", err)
			return
		}
		h.bl, h.addr = b, lockdevice.BootloaderAddress(dh.addr)
		h.opts.Name = lockdevice.BootloaderName
	default:
		l, err := dh.dev.Lock()
		if err != nil {
			e.log.Debug("device application", "device", dh.addr, "err", err)
			return
		}
		h.l = l
		if h.opts.Name == "" {
			h.opts.Name = "Lock-" + dh.addr[12:14] + dh.addr[15:17]
		}
	}
	if h.opts.RSSI == 0 {
		h.opts.RSSI = -60
	}
	switch {
	case h.opts.Jitter == 0:
		h.opts.Jitter = 3
	case h.opts.Jitter < 0:
		h.opts.Jitter = 0
	}
	e.locks[h.addr] = h
	if d := e.devices[h.addr]; d != nil {
		d.h = h
	}
	dh.cur, dh.mode = h, mode
	e.log.Debug("device mode", "device", dh.addr, "mode", mode, "at", h.addr)
}

// syncAllDFULocked syncs every hosted device (each radio tick: a power
// cut or a bootloader's reset shows at the next one at the latest).
func (e *Emulator) syncAllDFULocked() {
	for _, a := range slices.Sorted(maps.Keys(e.dfuDevs)) {
		e.syncDFULocked(e.dfuDevs[a])
	}
}

// uuids are the service UUIDs h advertises.
func (h *hosted) uuids() []string {
	if h.bl != nil {
		return []string{DFUServiceUUID}
	}
	return []string{ServiceUUID}
}

// connectDFULocked makes a connection to a bootloader: the DFU service
// (exported at ServicesResolved as the lock service is), Control Point
// requests answered by notifications, Packet writes.
func (e *Emulator) connectDFULocked(d *device, bl *target.Bootloader) {
	ctx, cancel := context.WithCancel(e.ctx)
	c := &connection{e: e, d: d, mtu: min(e.opts.MTU, d.h.opts.MTU), cancel: cancel, hook: e.exchangeHook}
	// The link's Done is the connection's end; nothing is served on it.
	lk, err := locklink.New(locklink.Options{MTU: c.mtu, Notify: func(context.Context, []byte) error { return nil }})
	if err != nil {
		panic(err) // AddDevice checked the MTUs
	}
	c.lk, c.done = lk, lk.Done()
	c.tc = bl.Connect(c.mtu)
	d.conn = c
	e.setProps(d.path, ifaceDevice, map[string]dbus.Variant{"Connected": v(true)})
	e.scheduleResolveLocked(ctx, c)
	e.log.Debug("connected to bootloader", "device", d.addr, "mtu", c.mtu)
}

// exportDFUGATTLocked exports the bootloader's DFU service. In
// gattObjects, outbox is the Control Point (notify) with its CCC, inbox
// the Packet; there is no Info.
func (e *Emulator) exportDFUGATTLocked(d *device, mtu uint16) *gattObjects {
	svc := d.path + dbus.ObjectPath(fmt.Sprintf("/service%04x", dfuSvcHandle))
	g := &gattObjects{svc: svc, dfu: true,
		outbox: svc + dbus.ObjectPath(fmt.Sprintf("/char%04x", dfuCPHandle)),
		ccc:    svc + dbus.ObjectPath(fmt.Sprintf("/char%04x/desc%04x", dfuCPHandle, dfuCPCCCHandle)),
		inbox:  svc + dbus.ObjectPath(fmt.Sprintf("/char%04x", dfuPacketHandle)),
		notify: map[string]bool{}}
	e.addObject(svc, ifaces{ifaceService: {
		"UUID": v(DFUServiceUUID), "Primary": v(true), "Device": v(d.path),
		"Includes": v([]dbus.ObjectPath{})}})
	e.addObject(g.outbox, ifaces{ifaceChar: {"UUID": v(DFUControlPointUUID), "Service": v(svc),
		"Value": v([]byte{}), "Flags": v([]string{"write", "notify"}), "MTU": v(mtu),
		"Notifying": v(false), "NotifyAcquired": v(false)}})
	e.addObject(g.ccc, ifaces{ifaceDesc: {"UUID": v(CCCUUID), "Characteristic": v(g.outbox), "Value": v([]byte{})}})
	e.addObject(g.inbox, ifaces{ifaceChar: {"UUID": v(DFUPacketUUID), "Service": v(svc),
		"Value": v([]byte{}), "Flags": v([]string{"write-without-response"}), "MTU": v(mtu),
		"WriteAcquired": v(false)}})
	return g
}

// dfuWrite is WriteValue on the bootloader's characteristics: a Control
// Point request (answered by its notification, which needs the CCC on) or
// a Packet write (a receipt notification every PRN writes). Faults'
// DropAfterWrites counts Packet writes here. An activation resets the
// bootloader: the link ends and the application comes back at its
// address.
func (e *Emulator) dfuWrite(c *connection, p dbus.ObjectPath, value []byte) *dbus.Error {
	g := c.d.gatt
	if p != g.outbox && p != g.inbox {
		return bluezErr("NotPermitted", "Write not permitted")
	}
	if len(value) > c.mtu-3 {
		return bluezErr("InvalidValueLength", "Invalid Length")
	}
	if g.registered() {
		c.tc.EnableNotifications()
	}
	var note []byte
	var err error
	if p == g.outbox {
		note, err = c.tc.WriteControlPoint(value)
	} else {
		note, err = c.tc.WritePacket(value)
	}
	switch {
	case errors.Is(err, target.ErrDisconnected):
		return notConnected()
	case err != nil:
		// The bootloader refuses a Control Point write before its CCC is
		// on with an ATT error (docs/dfu.md §4): CCCD improperly
		// configured.
		e.log.Debug("dfu write refused", "device", c.d.addr, "err", err)
		return bluezErr("Failed", "Operation failed with ATT error: 0xfd")
	}
	if note != nil && g.registered() {
		e.objs[g.outbox][ifaceChar]["Value"] = v(append([]byte(nil), note...))
		e.emit(g.outbox, ifaceProps+".PropertiesChanged", ifaceChar,
			map[string]dbus.Variant{"Value": v(append([]byte(nil), note...))}, []string{})
	}
	switch {
	case c.tc.Closed():
		// Activated: the bootloader resets, the link ends, the lock
		// boots the image.
		e.disconnectLocked(c.d)
		if dh := c.d.h.dfu; dh != nil {
			e.syncDFULocked(dh)
		}
	case p == g.inbox && e.dropAfterWriteLocked(c.d.addr):
		e.log.Debug("dfu connection dropped mid-transfer", "device", c.d.addr)
		e.disconnectLocked(c.d)
	}
	return nil
}
