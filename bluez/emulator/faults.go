package emulator

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/godbus/dbus/v5"
)

// Faults are failures injected for one device (InjectFaults). Each count
// is consumed by the calls it makes fail.
type Faults struct {
	// ConnectAbort makes the next N Device1.Connect calls fail with
	// org.bluez.Error.Failed "le-connection-abort-by-local", as BlueZ
	// 5.66 reports an aborted LE connection (src/device.c att_connect_cb,
	// src/error.c btd_error_le_conn_from_errno(-ECONNABORTED)).
	ConnectAbort int
	// DropAfterWrites drops the connection after the Nth GATT write to
	// Inbox from now (the write itself succeeds and reaches the lock):
	// the link goes silent mid-exchange and ends as a supervision timeout
	// does, ServicesResolved false, Connected false, the lock's Serve
	// cancelled; the GATT objects stay, as BlueZ 5.66 keeps them (calls
	// on them fail with org.bluez.Error.Failed "Not connected" until the
	// next connection). 0 is none.
	DropAfterWrites int
	// PairFail makes the next N Device1.Pair calls fail as an SMP
	// "Pairing Failed" does: the kernel reports MGMT_STATUS_AUTH_FAILED,
	// which BlueZ 5.66 (src/device.c new_authentication_return, default
	// case) answers with org.bluez.Error.AuthenticationFailed
	// "Authentication Failed". The agent is not asked; as after any failed
	// pairing, the link drops and the device is temporary again (see
	// Options.PairFailureStall).
	PairFail int
	// LostStartNotify makes the next N StartNotify calls on a connected
	// device go unanswered until the link drops (then org.bluez.Error.Failed
	// "Not connected"): the one way EATT shows through D-Bus. Between two
	// BlueZ ends both open EATT channels at once and one closes the
	// other's; bluetoothd 5.66 may already have queued the CCC write of
	// StartNotify on a closing channel, and the call then times out
	// (docs/real-bluez.md; about one run in ten on the tier's EATT mode).
	// With plain ATT (an nRF52832 lock, or [GATT] Channels = 1) it does
	// not happen: leave it 0.
	LostStartNotify int
	// SlowResolve delays the next connection's ServicesResolved by this
	// much more than Options.ResolveDelay: on the tier's EATT mode a
	// bonded reconnection's GATT cache restore once took 30 s (ATT's
	// transaction timeout: a request lost on an EATT channel), with the
	// link up and Connect answered all along. Used once; 0 is none.
	SlowResolve time.Duration
}

// InjectFaults sets the faults of the device at addr, replacing those set
// before; the zero Faults clears them. The device need not exist yet.
func (e *Emulator) InjectFaults(addr string, f Faults) error {
	if !addrRE.MatchString(addr) {
		return fmt.Errorf("%w: %q", ErrBadAddress, addr)
	}
	if f.ConnectAbort < 0 || f.DropAfterWrites < 0 || f.PairFail < 0 || f.LostStartNotify < 0 || f.SlowResolve < 0 {
		return fmt.Errorf("%w: %+v", ErrBadFaults, f)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if f == (Faults{}) {
		delete(e.faults, addr)
		return nil
	}
	e.faults[addr] = &f
	return nil
}

// dropAfterWriteLocked counts a write to Inbox of the device at addr and
// reports whether the connection drops after it: the Nth of
// DropAfterWrites, or a draw under Options.DropRate.
func (e *Emulator) dropAfterWriteLocked(addr string) bool {
	if f := e.faults[addr]; f != nil && f.DropAfterWrites > 0 {
		f.DropAfterWrites--
		if f.DropAfterWrites == 0 {
			return true
		}
	}
	return e.opts.DropRate > 0 && e.rnd.Float64() < e.opts.DropRate
}

// lostStartNotifyLocked consumes one injected lost StartNotify of addr.
func (e *Emulator) lostStartNotifyLocked(addr string) bool {
	if f := e.faults[addr]; f != nil && f.LostStartNotify > 0 {
		f.LostStartNotify--
		return true
	}
	return false
}

// pairFailLocked consumes one injected pairing failure of addr.
func (e *Emulator) pairFailLocked(addr string) bool {
	if f := e.faults[addr]; f != nil && f.PairFail > 0 {
		f.PairFail--
		return true
	}
	return false
}

// LeaveRange takes the lock at addr out of radio range, keeping it hosted:
// it stops advertising, an open connection drops as in
// Faults.DropAfterWrites, and its device object goes away AwayTimeout
// after its last advertisement unless BlueZ keeps it (bonded, or a client
// called Connect on it: src/device.c dev_connect makes it permanent).
// Connect attempts fail with le-connection-abort-by-local until
// EnterRange.
func (e *Emulator) LeaveRange(addr string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, err := e.hostedLocked(addr)
	if err != nil {
		return err
	}
	e.leaveRangeLocked(h)
	return nil
}

func (e *Emulator) leaveRangeLocked(h *hosted) {
	h.inRange = false
	if d := e.devices[h.addr]; d != nil && d.conn != nil {
		e.disconnectLocked(d)
	}
}

// EnterRange brings the lock at addr back in range: it advertises again
// from the next radio tick.
func (e *Emulator) EnterRange(addr string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, err := e.hostedLocked(addr)
	if err != nil {
		return err
	}
	h.inRange = true
	return nil
}

// RemoveAdapter unplugs the adapter, as the kernel's Index Removed makes
// BlueZ 5.66 do (src/adapter.c index_removed → adapter_unregister →
// adapter_remove): pairing attempts end (ConnectionAttemptFailed, as
// device_remove's device_cancel_bonding), every device leaves in creation
// order, each after its GATT objects (device_remove, then
// btd_gatt_client_destroy in device_free), with no property changes;
// discovery sessions and filters end (discovery_cleanup); the adapter
// object leaves last (btd_adapter_unref). Connections drop and the locks'
// Serve is cancelled. Calls to the adapter's path then fail with
// org.freedesktop.DBus.Error.UnknownObject. Bonds and the devices BlueZ
// stores are kept for AddAdapter.
func (e *Emulator) RemoveAdapter() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.adapterPresentLocked(); err != nil {
		return err
	}
	e.gone = true
	for _, c := range e.pairing {
		c()
	}
	devs := slices.SortedFunc(maps.Values(e.devices), func(a, b *device) int { return cmp.Compare(a.seq, b.seq) })
	for _, d := range devs {
		e.removeDeviceLocked(d)
	}
	clear(e.discovery)
	clear(e.pending)
	clear(e.adverts)
	e.removeObject(e.adapter)
	e.log.Debug("adapter removed", "adapter", e.adapter)
	return nil
}

// AddAdapter plugs the adapter back in at the same path, as BlueZ 5.66
// registers a new index (src/adapter.c adapter_register): the Adapter1
// object first, Powered per Options.Unpowered, not discovering, not
// wedged; then the devices it loads from storage (load_devices): every
// bonded device, and every device a client called Connect on, without
// RSSI, TxPower or advertising data until they are seen again. Other
// devices appear with discovery.
func (e *Emulator) AddAdapter() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if !e.gone {
		return ErrAdapterPresent
	}
	e.gone = false
	e.wedged = false
	e.addObject(e.adapter, ifaces{ifaceAdapter: e.adapterProps(), ifaceAdvMgr: e.advMgrProps()})
	e.loadStoredLocked()
	e.log.Debug("adapter added", "adapter", e.adapter)
	return nil
}

// loadStoredLocked exports the devices BlueZ loads from storage as it
// registers an adapter (src/adapter.c load_devices): bonded ones and
// those a client connected to (stored), without RSSI, TxPower or
// advertising data until they are seen again; e.mu is held.
func (e *Emulator) loadStoredLocked() {
	addrs := map[string]bool{}
	for a := range e.bonds {
		addrs[a] = true
	}
	for a := range e.stored {
		addrs[a] = true
	}
	now := time.Now()
	for _, a := range slices.Sorted(maps.Keys(addrs)) {
		h := e.stored[a]
		if h == nil {
			h = e.locks[a]
		}
		if h == nil {
			continue // a bond restored by Restart for a lock no longer hosted
		}
		if e.devices[a] == nil {
			e.newDeviceLocked(h, now, e.storedProps(h))
		}
	}
}

// adapterPresentLocked fails when the emulator is closed or its adapter
// unplugged; e.mu is held.
func (e *Emulator) adapterPresentLocked() error {
	if e.closed {
		return ErrClosed
	}
	if e.gone {
		return ErrNoAdapter
	}
	return nil
}

// Wedge wedges the adapter, as a controller that stops answering: from
// now on StartDiscovery fails with org.bluez.Error.InProgress and every
// Device1.Connect with le-connection-abort-by-local, until the adapter is
// power-cycled (Powered set false, then true, through Properties.Set) or
// unplugged and plugged in again.
func (e *Emulator) Wedge() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.adapterPresentLocked(); err != nil {
		return err
	}
	e.wedged = true
	// The controller stopped scanning: Discovering goes false and no
	// advertisement arrives, while bluetoothd still holds the clients'
	// discovery sessions (so StartDiscovery answers InProgress).
	if e.boolProp(e.adapter, ifaceAdapter, "Discovering") {
		e.setProps(e.adapter, ifaceAdapter, map[string]dbus.Variant{"Discovering": v(false)})
	}
	return nil
}

// PowerCycles counts the adapter's completed off→on transitions of
// Powered through Properties.Set.
func (e *Emulator) PowerCycles() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cycles
}

// storedProps are the Device1 properties of a device loaded from storage.
func (e *Emulator) storedProps(h *hosted) map[string]dbus.Variant {
	ps := e.deviceProps(h, 0, nil)
	for _, k := range []string{"RSSI", "TxPower", "ManufacturerData", "AdvertisingFlags"} {
		delete(ps, k)
	}
	return ps
}
