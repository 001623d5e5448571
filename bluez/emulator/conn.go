package emulator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez/internal/locklink"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
	"github.com/gatewayd/gatewayd/firmware/lock"
)

// GATT layout of the lock service. BlueZ 5.66 names the objects after
// handles (src/gatt-client.c): service_create "service%04x" with the
// service's start handle, characteristic_create "char%04x" with the
// characteristic's declaration handle (not its value handle, which is
// one more), descriptor_create "desc%04x" with the descriptor's handle.
const (
	svcHandle    uint16 = 0x000a
	inboxHandle  uint16 = 0x000b // value 0x000c
	outboxHandle uint16 = 0x000d // value 0x000e
	cccHandle    uint16 = 0x000f // Outbox's Client Characteristic Configuration
	infoHandle   uint16 = 0x0010 // value 0x0011
)

// infoValue is Info's value: version 1, maximum message 2048, flags 0.
var infoValue = []byte{0x01, 0x08, 0x00, 0x00}

// errLinkDown ends the lock's reads when the connection drops.
var errLinkDown = errors.New("emulator: link down")

// gattObjects are the lock service's D-Bus objects of one device: BlueZ
// 5.66's remote GATT database as src/gatt-client.c exports it. With the
// default main.conf ([GATT] Cache = always) they outlive the connection
// that exported them:
//
//   - src/device.c attio_cleanup → gatt_client_cleanup → gatt_cache_cleanup
//     clears the database (gatt_db_clear) only when gatt_cache_is_enabled
//     is false, i.e. never with Cache = always (and with Cache = yes only
//     for unpaired devices);
//   - src/device.c att_disconnected_cb → src/gatt-client.c
//     btd_gatt_client_disconnected only drops the bt_gatt_client
//     (client->gatt = NULL) and the notify registrations (clear_notify_id):
//     no service is unregistered;
//   - a later connection's src/gatt-client.c btd_gatt_client_ready →
//     create_services → export_service skips services already claimed
//     (gatt_db_service_get_claimed): no InterfacesAdded;
//   - the objects go only with the device: src/device.c device_free →
//     src/gatt-client.c btd_gatt_client_destroy → unregister_service.
type gattObjects struct {
	svc    dbus.ObjectPath
	inbox  dbus.ObjectPath
	outbox dbus.ObjectPath
	info   dbus.ObjectPath
	ccc    dbus.ObjectPath // Outbox's CCC descriptor
	// notify are the notify sessions on Outbox by client unique name
	// (src/gatt-client.c chrc->notify_clients); a session is true while
	// it is registered on the current connection (notify_id != 0). They
	// survive a disconnect unregistered (clear_notify_id) and are
	// registered again by the next connection (btd_gatt_client_connected
	// → register_notify).
	notify map[string]bool
	// dfu: a bootloader's DFU service (exportDFUGATTLocked): outbox is
	// the Control Point, inbox the Packet, no info.
	dfu bool
}

// chars are the characteristics, in export order.
func (g *gattObjects) chars() []dbus.ObjectPath {
	if g.dfu {
		return []dbus.ObjectPath{g.outbox, g.inbox}
	}
	return []dbus.ObjectPath{g.inbox, g.outbox, g.info}
}

// registered reports whether a notify session is registered on the
// current connection, i.e. whether the lock's CCC has notifications on.
func (g *gattObjects) registered() bool {
	for _, r := range g.notify {
		if r {
			return true
		}
	}
	return false
}

// connection is one LE connection to a hosted lock: the lock's protocol
// link. The GATT objects it is reached through belong to the device. The
// lock's side of it is a locklink.Link, the same adapter bluez/peripheral
// puts between the lock and a real bluetoothd: Inbox writes are
// Delivered to it, and its notifications come out through notify.
type connection struct {
	e        *Emulator
	d        *device
	mtu      int               // the Exchange MTU's outcome: min(Options.MTU, LockOptions.MTU)
	resolved bool              // ServicesResolved: GATT usable (see Options.ResolveDelay)
	hook     func(kind string) // tests: called as an exchange is delayed
	lk       *locklink.Link
	tc       *target.Conn // a bootloader's side of the link (connectDFULocked); nil for a lock
	cancel   context.CancelFunc
	done     <-chan struct{} // lk.Done()
	stopOnce sync.Once
}

func (c *connection) stop() {
	c.stopOnce.Do(func() {
		c.cancel()
		c.lk.Close()
		if c.tc != nil {
			c.tc.Disconnect()
		}
	})
}

// notify sends a notification on Outbox: a PropertiesChanged of its
// Value, as BlueZ reports a notification. Without notifications enabled
// on this connection (no registered notify session, so the CCC is off)
// the packet is dropped, as the ATT layer would.
func (c *connection) notify(ctx context.Context, p []byte) error {
	e := c.e
	if err := c.exchangeDelay(ctx, "notify"); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	d := c.d
	if d.conn != c {
		return errLinkDown
	}
	if g := d.gatt; g != nil && g.registered() {
		// Always emitted, even for a value equal to the last one
		// (src/gatt-client.c notify_cb).
		e.objs[g.outbox][ifaceChar]["Value"] = v(append([]byte(nil), p...))
		e.emit(g.outbox, ifaceProps+".PropertiesChanged", ifaceChar,
			map[string]dbus.Variant{"Value": v(append([]byte(nil), p...))}, []string{})
	}
	return nil
}

// exchangeDelay waits Options.ExchangeLatency, or until the connection
// ends or ctx is done.
func (c *connection) exchangeDelay(ctx context.Context, kind string) error {
	lat := c.e.opts.ExchangeLatency
	if lat <= 0 {
		return nil
	}
	if c.hook != nil {
		c.hook(kind)
	}
	t := time.NewTimer(lat)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-c.done:
		return errLinkDown
	case <-ctx.Done():
		return ctx.Err()
	}
}

type deviceHandler struct{ e *Emulator }

func (e *Emulator) deviceAt(m dbus.Message) (*device, *dbus.Error) {
	p, derr := e.lookup(m, ifaceDevice)
	if derr != nil {
		return nil, derr
	}
	if d := e.deviceOf(p); d != nil && d.path == p {
		return d, nil
	}
	return nil, bluezErr("DoesNotExist", "Does Not Exist")
}

// connFailed is how BlueZ 5.66 answers a failed LE connection: src/device.c
// att_connect_cb replies btd_error_failed(btd_error_le_conn_from_errno(err))
// and src/error.c maps ECONNABORTED to ERR_LE_CONN_ABORT_BY_LOCAL.
func connFailed() *dbus.Error { return bluezErr("Failed", "le-connection-abort-by-local") }

// Connect opens an LE connection, resolves the lock service and starts
// the lock's Serve on it.
func (h deviceHandler) Connect(m dbus.Message) *dbus.Error {
	e := h.e
	e.mu.Lock()
	d, derr := e.deviceAt(m)
	if derr == nil && d.conn != nil {
		// BlueZ 5.66 src/device.c dev_connect: an LE device already
		// connected gets a plain method return.
		e.mu.Unlock()
		return nil
	}
	switch {
	case derr != nil:
	case !e.boolProp(e.adapter, ifaceAdapter, "Powered"):
		derr = bluezErr("NotReady", "Resource Not Ready")
	case e.connecting != nil:
		derr = bluezErr("InProgress", "In Progress")
	case e.opts.MaxConnections > 0 && e.connections() >= e.opts.MaxConnections:
		derr = connFailed()
	}
	if derr != nil {
		e.mu.Unlock()
		return derr
	}
	e.connecting = d
	// dev_connect makes the device permanent before connecting
	// (btd_device_set_temporary(dev, false)): it stays after leaving
	// range, and BlueZ stores it.
	e.stored[d.addr] = d.h
	hook := e.connectHook
	// A failed pairing a moment ago holds the attempt while discovery
	// resumes (Options.PairFailureStall).
	wait := e.opts.ConnectLatency + max(time.Until(e.stallUntil), 0)
	e.mu.Unlock()
	if hook != nil {
		hook()
	}

	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-e.ctx.Done():
			t.Stop()
		}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	e.connecting = nil
	h2, ok := e.locks[d.addr]
	if e.closed || e.gone || e.wedged || !ok || !h2.inRange || e.devices[d.addr] != d ||
		!e.boolProp(e.adapter, ifaceAdapter, "Powered") {
		return connFailed()
	}
	if f := e.faults[d.addr]; f != nil && f.ConnectAbort > 0 {
		f.ConnectAbort--
		return connFailed()
	}
	if e.opts.AbortRate > 0 && e.rnd.Float64() < e.opts.AbortRate {
		return connFailed()
	}
	if h2.bl != nil {
		e.connectDFULocked(d, h2.bl)
		return nil
	}
	e.connectLocked(d, h2.l)
	return nil
}

func (e *Emulator) connections() int {
	n := 0
	for _, d := range e.devices {
		if d.conn != nil {
			n++
		}
	}
	return n
}

// connectLocked makes the connection: Connected and the lock's Serve;
// then, after Options.ResolveDelay (Connect has returned by then, as
// BlueZ 5.66 replies once the link is up), the GATT objects on the
// device's first connection (later ones reuse them), the notify sessions
// registered again, and ServicesResolved.
func (e *Emulator) connectLocked(d *device, l *lock.Lock) {
	ctx, cancel := context.WithCancel(e.ctx)
	lockMTU := DefaultLockMTU
	if d.h != nil {
		lockMTU = d.h.opts.MTU
	}
	c := &connection{e: e, d: d, mtu: min(e.opts.MTU, lockMTU), cancel: cancel, hook: e.exchangeHook}
	lk, err := locklink.New(locklink.Options{MTU: c.mtu, Notify: c.notify})
	if err != nil {
		panic(err) // Start and AddLock checked the MTUs
	}
	c.lk, c.done = lk, lk.Done()
	d.conn = c
	e.setProps(d.path, ifaceDevice, map[string]dbus.Variant{"Connected": v(true)})
	e.scheduleResolveLocked(ctx, c)
	// The gateway's bluetoothd connects to a device it is bonded with at
	// security level medium (5.66 src/device.c device_connect_le: sec_level
	// BT_IO_SEC_MEDIUM when paired), so the kernel encrypts the link with
	// the bond's key before the first ATT exchange; that succeeds only if
	// the lock holds the bond too (otherwise the lock has no key and the
	// link stays unencrypted). A bond made during this connection counts
	// from the next one.
	peer := lock.Peer{Address: e.opts.AdapterAddress,
		Encrypted: e.bonds[d.addr] && l.Bonded(e.opts.AdapterAddress)}
	e.wg.Go(func() {
		err := locklink.Serve(ctx, l, c.lk, peer)
		e.log.Debug("lock connection ended", "device", d.addr, "err", err)
		if errors.Is(err, lock.ErrReset) {
			// An authorised enter-dfu reset a whole lock (AddDevice)
			// into its bootloader: it leaves addr, the bootloader
			// advertises at addr+1.
			e.mu.Lock()
			if h := d.h; h != nil && h.dfu != nil && !e.closed {
				e.syncDFULocked(h.dfu)
			}
			e.mu.Unlock()
		}
	})
	e.log.Debug("connected", "device", d.addr)
}

// scheduleResolveLocked resolves c's services after Options.ResolveDelay
// (plus Faults.SlowResolve), unless the connection ends first.
func (e *Emulator) scheduleResolveLocked(ctx context.Context, c *connection) {
	d := c.d
	delay := e.opts.ResolveDelay
	if f := e.faults[d.addr]; f != nil && f.SlowResolve > 0 {
		delay = max(delay, 0) + f.SlowResolve
		f.SlowResolve = 0
	}
	if delay < 0 {
		e.resolveLocked(c)
		return
	}
	e.wg.Go(func() {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if d.conn == c && !e.closed {
			e.resolveLocked(c)
		}
	})
}

// resolveLocked ends the resolution of c's services: src/device.c
// gatt_client_ready_cb → btd_gatt_client_ready (export, or the cached
// objects brought to the connection), then device_svc_resolved →
// ServicesResolved.
func (e *Emulator) resolveLocked(c *connection) {
	d := c.d
	c.resolved = true
	if d.gatt == nil && c.tc != nil {
		d.gatt = e.exportDFUGATTLocked(d, uint16(c.mtu))
	} else if d.gatt == nil {
		d.gatt = e.exportGATTLocked(d, uint16(c.mtu))
	} else {
		e.gattConnectedLocked(d.gatt, uint16(c.mtu))
	}
	e.setProps(d.path, ifaceDevice, map[string]dbus.Variant{"ServicesResolved": v(true)})
}

// exportGATTLocked exports d's lock service, as a first connection's
// src/gatt-client.c btd_gatt_client_ready → create_services does.
func (e *Emulator) exportGATTLocked(d *device, mtu uint16) *gattObjects {
	svc := d.path + dbus.ObjectPath(fmt.Sprintf("/service%04x", svcHandle))
	g := &gattObjects{svc: svc,
		inbox:  svc + dbus.ObjectPath(fmt.Sprintf("/char%04x", inboxHandle)),
		outbox: svc + dbus.ObjectPath(fmt.Sprintf("/char%04x", outboxHandle)),
		info:   svc + dbus.ObjectPath(fmt.Sprintf("/char%04x", infoHandle)),
		ccc:    svc + dbus.ObjectPath(fmt.Sprintf("/char%04x/desc%04x", outboxHandle, cccHandle)),
		notify: map[string]bool{}}
	// Objects in the order src/gatt-client.c export_service registers
	// them: the service, then each characteristic followed by its
	// descriptors. Property sets are 5.66's service_properties,
	// characteristic_properties and descriptor_properties: no Handle
	// (added in 5.69); Value always (the cache's, empty until read);
	// Notifying only with notify or indicate; WriteAcquired only with
	// write-without-response; NotifyAcquired only with notify; MTU while
	// connected (characteristic_mtu_exists).
	e.addObject(svc, ifaces{ifaceService: {
		"UUID": v(ServiceUUID), "Primary": v(true), "Device": v(d.path),
		"Includes": v([]dbus.ObjectPath{})}})
	chr := func(p dbus.ObjectPath, uuid string, flags []string) {
		ps := map[string]dbus.Variant{"UUID": v(uuid), "Service": v(svc), "Value": v([]byte{}),
			"Flags": v(flags), "MTU": v(mtu)}
		if slices.Contains(flags, "notify") || slices.Contains(flags, "indicate") {
			ps["Notifying"] = v(false)
		}
		if slices.Contains(flags, "write-without-response") {
			ps["WriteAcquired"] = v(false)
		}
		if slices.Contains(flags, "notify") {
			ps["NotifyAcquired"] = v(false)
		}
		e.addObject(p, ifaces{ifaceChar: ps})
	}
	chr(g.inbox, InboxUUID, []string{"write-without-response", "write"})
	chr(g.outbox, OutboxUUID, []string{"notify"})
	e.addObject(g.ccc, ifaces{ifaceDesc: {"UUID": v(CCCUUID), "Characteristic": v(g.outbox), "Value": v([]byte{})}})
	chr(g.info, InfoUUID, []string{"read"})
	return g
}

// gattConnectedLocked brings persisted GATT objects to a new connection,
// as src/gatt-client.c btd_gatt_client_connected does: MTU exists again
// (characteristic_mtu_exists: client->gatt is set; gdbus evaluates an
// exists callback on each read and sends no signal for it), and every
// notify session is registered again (register_notify →
// register_notify_cb, which emits Notifying true only if it was false).
func (e *Emulator) gattConnectedLocked(g *gattObjects, mtu uint16) {
	for _, p := range g.chars() {
		e.objs[p][ifaceChar]["MTU"] = v(mtu)
	}
	for s := range g.notify {
		g.notify[s] = true
	}
	if len(g.notify) > 0 {
		e.setProps(g.outbox, ifaceChar, map[string]dbus.Variant{"Notifying": v(true)})
	}
}

// gattDisconnectedLocked is src/gatt-client.c btd_gatt_client_disconnected:
// the objects stay; notify sessions stay but are no longer registered
// (clear_notify_id) and Notifying is left as it was (nothing calls
// update_notifying: no signal); MTU no longer exists
// (characteristic_mtu_exists returns client->gatt != NULL), removed with
// no signal as gdbus does for an exists callback. Values stay: they are
// the cache's (gatt_cache_cleanup keeps the database with Cache = always).
func (e *Emulator) gattDisconnectedLocked(g *gattObjects) {
	for s := range g.notify {
		g.notify[s] = false
	}
	for _, p := range g.chars() {
		delete(e.objs[p][ifaceChar], "MTU")
	}
}

// disconnectLocked ends d's connection, as src/device.c
// device_remove_connection reports it: ServicesResolved false
// (device_set_svc_refreshed), then Connected false; the GATT objects stay
// (see gattObjects) and the lock's Serve is cancelled.
func (e *Emulator) disconnectLocked(d *device) {
	c := d.conn
	if c == nil {
		return
	}
	e.setProps(d.path, ifaceDevice, map[string]dbus.Variant{"ServicesResolved": v(false)})
	d.conn = nil
	c.stop()
	if d.gatt != nil {
		e.gattDisconnectedLocked(d.gatt)
	}
	e.setProps(d.path, ifaceDevice, map[string]dbus.Variant{"Connected": v(false)})
	d.lastSeen = time.Now()
	e.log.Debug("disconnected", "device", d.addr)
}

// unexportGATTLocked removes d's GATT objects in the order
// src/gatt-client.c unregister_service does (from btd_gatt_client_destroy
// in src/device.c device_free): each characteristic after its
// descriptors, the service last. Their notify sessions end with them.
func (e *Emulator) unexportGATTLocked(d *device) {
	g := d.gatt
	if g == nil {
		return
	}
	d.gatt = nil
	order := []dbus.ObjectPath{g.inbox, g.ccc, g.outbox, g.info, g.svc}
	if g.dfu {
		order = []dbus.ObjectPath{g.ccc, g.outbox, g.inbox, g.svc}
	}
	for _, p := range order {
		e.removeObject(p)
	}
}

func (h deviceHandler) Disconnect(m dbus.Message) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	d, derr := e.deviceAt(m)
	if derr != nil {
		return derr
	}
	if d.conn == nil {
		return bluezErr("NotConnected", "Not Connected")
	}
	e.disconnectLocked(d)
	return nil
}

// ---- org.bluez.GattCharacteristic1 ----

type charHandler struct{ e *Emulator }

// gattAt finds the device and GATT objects of a call on iface.
func (e *Emulator) gattAt(m dbus.Message, iface string) (*device, dbus.ObjectPath, *dbus.Error) {
	p, derr := e.lookup(m, iface)
	if derr != nil {
		return nil, p, derr
	}
	d := e.deviceOf(p)
	if d == nil || d.gatt == nil {
		return nil, p, dbusErr("UnknownObject", fmt.Sprintf("Method %q on interface %q doesn't exist", m.Headers[dbus.FieldMember].Value(), iface))
	}
	return d, p, nil
}

// notConnected is 5.66's answer to a GATT call on a disconnected device:
// src/gatt-client.c characteristic_read_value, characteristic_write_value,
// characteristic_acquire_write, characteristic_acquire_notify,
// descriptor_read_value and descriptor_write_value all check
// "if (!gatt) return btd_error_failed(msg, "Not connected")" first.
func notConnected() *dbus.Error { return bluezErr("Failed", "Not connected") }

// charAt finds the connection and characteristic of a call that needs the
// device connected.
func (e *Emulator) charAt(m dbus.Message) (*connection, dbus.ObjectPath, *dbus.Error) {
	d, p, derr := e.gattAt(m, ifaceChar)
	if derr != nil {
		return nil, p, derr
	}
	if d.conn == nil || !d.conn.resolved {
		return nil, p, notConnected()
	}
	return d.conn, p, nil
}

func (h charHandler) ReadValue(m dbus.Message, opts map[string]dbus.Variant) ([]byte, *dbus.Error) {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	c, p, derr := e.charAt(m)
	if derr != nil {
		return nil, derr
	}
	if p != c.d.gatt.info {
		return nil, bluezErr("NotPermitted", "Read not permitted")
	}
	off, derr := offsetOpt(opts)
	if derr != nil {
		return nil, derr
	}
	if int(off) > len(infoValue) {
		return nil, bluezErr("InvalidOffset", "Invalid offset")
	}
	e.setProps(p, ifaceChar, map[string]dbus.Variant{"Value": v(infoValue)})
	return append([]byte(nil), infoValue[off:]...), nil
}

func (h charHandler) WriteValue(m dbus.Message, value []byte, opts map[string]dbus.Variant) *dbus.Error {
	e := h.e
	e.mu.Lock()
	c, p, derr := e.charAt(m)
	if derr == nil && c.tc != nil {
		defer e.mu.Unlock()
		return e.dfuWrite(c, p, value)
	}
	if derr == nil && p != c.d.gatt.inbox {
		derr = bluezErr("NotPermitted", "Write not permitted")
	}
	if derr == nil && len(value) > c.mtu-3 {
		derr = bluezErr("InvalidValueLength", "Invalid Length")
	}
	e.mu.Unlock()
	if derr != nil {
		return derr
	}
	if c.exchangeDelay(e.ctx, "write") != nil {
		return notConnected()
	}
	dctx, cancel := context.WithTimeout(e.ctx, e.opts.CallTimeout)
	err := c.lk.Deliver(dctx, value)
	cancel()
	switch {
	case errors.Is(err, locklink.ErrLinkDown) || e.ctx.Err() != nil:
		return notConnected()
	case err != nil:
		return bluezErr("Failed", "Operation failed with ATT error: 0x0e")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if c.d.conn == c && e.dropAfterWriteLocked(c.d.addr) {
		// The link goes silent after this write: a supervision timeout.
		e.log.Debug("connection dropped mid-exchange", "device", c.d.addr)
		e.disconnectLocked(c.d)
	}
	return nil
}

// offsetOpt parses the "offset" option as src/gatt-client.c parse_options
// does: the key compared without case, a uint16 or InvalidArguments.
func offsetOpt(opts map[string]dbus.Variant) (uint16, *dbus.Error) {
	var off uint16
	for k, x := range opts {
		if strings.EqualFold(k, "offset") {
			o, ok := x.Value().(uint16)
			if !ok {
				return 0, invalidArgs()
			}
			off = o
		}
	}
	return off, nil
}

// AcquireWrite and AcquireNotify exist in 5.66 (characteristic_methods)
// but hand out a socket; the emulator does not pass file descriptors.
func (h charHandler) AcquireWrite(m dbus.Message, opts map[string]dbus.Variant) (dbus.UnixFD, uint16, *dbus.Error) {
	return h.acquire(m)
}

func (h charHandler) AcquireNotify(m dbus.Message, opts map[string]dbus.Variant) (dbus.UnixFD, uint16, *dbus.Error) {
	return h.acquire(m)
}

func (h charHandler) acquire(m dbus.Message) (dbus.UnixFD, uint16, *dbus.Error) {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, _, derr := e.charAt(m); derr != nil {
		return 0, 0, derr
	}
	return 0, 0, bluezErr("NotSupported", "Operation is not supported")
}

// ---- org.bluez.GattDescriptor1 ----

type descHandler struct{ e *Emulator }

// descAt finds the connection of a call on a descriptor.
func (e *Emulator) descAt(m dbus.Message) (*connection, *dbus.Error) {
	d, _, derr := e.gattAt(m, ifaceDesc)
	if derr != nil {
		return nil, derr
	}
	if d.conn == nil || !d.conn.resolved {
		return nil, notConnected()
	}
	return d.conn, nil
}

// ReadValue reads the CCC from the lock: 0x0001 (notifications, little
// endian) while a notify session is registered on this connection, else
// 0x0000. As
// src/gatt-client.c desc_read_cb, the read value is stored in the cache
// and Value changes.
func (h descHandler) ReadValue(m dbus.Message, opts map[string]dbus.Variant) ([]byte, *dbus.Error) {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	c, derr := e.descAt(m)
	if derr != nil {
		return nil, derr
	}
	off, derr := offsetOpt(opts)
	if derr != nil {
		return nil, derr
	}
	val := []byte{0, 0}
	if c.d.gatt.registered() {
		val[0] = 1
	}
	if int(off) > len(val) {
		return nil, bluezErr("InvalidOffset", "Invalid offset")
	}
	e.setProps(c.d.gatt.ccc, ifaceDesc, map[string]dbus.Variant{"Value": v(val)})
	return append([]byte(nil), val[off:]...), nil
}

// WriteValue refuses writes to the CCC as src/gatt-client.c
// descriptor_write_value does ("Don't allow writing to Client
// Characteristic Configuration descriptors"): NotPermitted, after the
// connection ("Not connected") and argument checks.
func (h descHandler) WriteValue(m dbus.Message, value []byte, opts map[string]dbus.Variant) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, derr := e.descAt(m); derr != nil {
		return derr
	}
	if _, derr := offsetOpt(opts); derr != nil {
		return derr
	}
	return bluezErr("NotPermitted", "Write not permitted")
}

func (h charHandler) StartNotify(m dbus.Message) *dbus.Error {
	return h.notify(m, true)
}

func (h charHandler) StopNotify(m dbus.Message) *dbus.Error {
	return h.notify(m, false)
}

// notify is src/gatt-client.c characteristic_start_notify and
// characteristic_stop_notify. Neither needs a connection: StartNotify on a
// disconnected device opens a session that the next connection registers
// ("If the device is currently not connected, return success"), and
// StopNotify ends one. StartNotify's checks in order: device_is_disconnecting
// (NotConnected; never here: the emulator's disconnects are instant),
// notify_io (AcquireNotify is not supported here), notify or indicate
// (NotSupported), the caller's session (success if registered, else
// InProgress "In Progress"). StopNotify checks no flags: without a session,
// Failed "No notify session started".
func (h charHandler) notify(m dbus.Message, on bool) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	d, p, derr := e.gattAt(m, ifaceChar)
	if derr != nil {
		return derr
	}
	g := d.gatt
	s := msgSender(m)
	if !on {
		if _, ok := g.notify[s]; !ok {
			return bluezErr("Failed", "No notify session started")
		}
		delete(g.notify, s)
		e.updateNotifyingLocked(g)
		return nil
	}
	if p != g.outbox {
		return bluezErr("NotSupported", "Operation is not supported")
	}
	if c := d.conn; c != nil && c.resolved && e.lostStartNotifyLocked(d.addr) {
		// Queued on an EATT channel being closed: no answer while the
		// link lasts (Faults.LostStartNotify).
		e.mu.Unlock()
		select {
		case <-c.done:
		case <-e.ctx.Done():
		}
		e.mu.Lock()
		return notConnected()
	}
	// One notify session per client.
	if reg, ok := g.notify[s]; ok {
		if !reg {
			return bluezErr("InProgress", "In Progress")
		}
		return nil
	}
	up := d.conn != nil && d.conn.resolved
	g.notify[s] = up
	if up {
		// register_notify_cb: Notifying true if it was false.
		e.setProps(p, ifaceChar, map[string]dbus.Variant{"Notifying": v(true)})
	}
	return nil
}

// updateNotifyingLocked is src/gatt-client.c update_notifying: Notifying
// goes false, if it was true, once no session is registered.
func (e *Emulator) updateNotifyingLocked(g *gattObjects) {
	if !g.registered() && e.boolProp(g.outbox, ifaceChar, "Notifying") {
		e.setProps(g.outbox, ifaceChar, map[string]dbus.Variant{"Notifying": v(false)})
	}
}

// dropNotifyLocked ends the notify sessions of a client that left the bus
// (src/gatt-client.c notify_client_disconnect), connected or not.
func (e *Emulator) dropNotifyLocked(client string) {
	for _, d := range e.devices {
		if g := d.gatt; g != nil {
			if _, ok := g.notify[client]; ok {
				delete(g.notify, client)
				e.updateNotifyingLocked(g)
			}
		}
	}
}

// deviceOf returns the device whose object is p or an ancestor of p.
func (e *Emulator) deviceOf(p dbus.ObjectPath) *device {
	rest, ok := strings.CutPrefix(string(p), string(e.adapter)+"/dev_")
	if !ok || len(rest) < 17 {
		return nil
	}
	return e.devices[strings.ReplaceAll(rest[:17], "_", ":")]
}
