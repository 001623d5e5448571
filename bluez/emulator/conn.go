package emulator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
)

// GATT layout of the lock service, with BlueZ's path naming (the
// declaration handle, in hex, four digits).
const (
	svcHandle    uint16 = 0x000a
	inboxHandle  uint16 = 0x000b
	outboxHandle uint16 = 0x000d
	infoHandle   uint16 = 0x0010
)

// infoValue is Info's value: version 1, maximum message 2048, flags 0.
var infoValue = []byte{0x01, 0x08, 0x00, 0x00}

// errLinkDown ends the lock's reads when the connection drops.
var errLinkDown = errors.New("emulator: link down")

// connection is one LE connection to a hosted lock.
type connection struct {
	e        *Emulator
	d        *device
	mtu      int
	svc      dbus.ObjectPath
	inbox    dbus.ObjectPath
	outbox   dbus.ObjectPath
	info     dbus.ObjectPath
	in       chan []byte
	notify   map[string]bool // clients with a notify session on Outbox
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

func (c *connection) stop() {
	c.stopOnce.Do(func() {
		c.cancel()
		close(c.done)
	})
}

// link is the lock's side of the connection: it implements channel.Link.
type link struct{ c *connection }

func (l link) MTU() int { return l.c.mtu }

func (l link) ReadPacket(ctx context.Context) ([]byte, error) {
	select {
	case p := <-l.c.in:
		return p, nil
	case <-l.c.done:
		return nil, errLinkDown
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// WritePacket sends a notification on Outbox: a PropertiesChanged of its
// Value, as BlueZ reports a notification. Without notifications enabled
// the packet is dropped, as the ATT layer would.
func (l link) WritePacket(ctx context.Context, p []byte) error {
	if len(p) > l.c.mtu-3 {
		return fmt.Errorf("emulator: notification of %d bytes, ATT_MTU %d", len(p), l.c.mtu)
	}
	e := l.c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if l.c.d.conn != l.c {
		return errLinkDown
	}
	if e.boolProp(l.c.outbox, ifaceChar, "Notifying") {
		// Always emitted, even for a value equal to the last one.
		e.objs[l.c.outbox][ifaceChar]["Value"] = v(append([]byte(nil), p...))
		e.emit(l.c.outbox, ifaceProps+".PropertiesChanged", ifaceChar,
			map[string]dbus.Variant{"Value": v(append([]byte(nil), p...))}, []string{})
	}
	return nil
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

func connFailed() *dbus.Error { return bluezErr("Failed", "le-connection-abort-by-local") }

// Connect opens an LE connection, resolves the lock service and starts
// the lock's Serve on it.
func (h deviceHandler) Connect(m dbus.Message) *dbus.Error {
	e := h.e
	e.mu.Lock()
	d, derr := e.deviceAt(m)
	switch {
	case derr != nil:
	case !e.boolProp(e.adapter, ifaceAdapter, "Powered"):
		derr = bluezErr("NotReady", "Resource Not Ready")
	case d.conn != nil:
		derr = bluezErr("AlreadyConnected", "Already Connected")
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
	hook := e.connectHook
	e.mu.Unlock()
	if hook != nil {
		hook()
	}

	if e.opts.ConnectLatency > 0 {
		t := time.NewTimer(e.opts.ConnectLatency)
		select {
		case <-t.C:
		case <-e.ctx.Done():
			t.Stop()
		}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	e.connecting = nil
	h2, inRange := e.locks[d.addr]
	if e.closed || !inRange || e.devices[d.addr] != d || !e.boolProp(e.adapter, ifaceAdapter, "Powered") {
		return connFailed()
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

// connectLocked makes the connection: Connected, the GATT objects,
// ServicesResolved, and the lock's Serve.
func (e *Emulator) connectLocked(d *device, l *lock.Lock) {
	ctx, cancel := context.WithCancel(e.ctx)
	svc := d.path + dbus.ObjectPath(fmt.Sprintf("/service%04x", svcHandle))
	c := &connection{e: e, d: d, mtu: e.opts.MTU, svc: svc,
		inbox:  svc + dbus.ObjectPath(fmt.Sprintf("/char%04x", inboxHandle)),
		outbox: svc + dbus.ObjectPath(fmt.Sprintf("/char%04x", outboxHandle)),
		info:   svc + dbus.ObjectPath(fmt.Sprintf("/char%04x", infoHandle)),
		in:     make(chan []byte, 1024), notify: map[string]bool{}, cancel: cancel, done: make(chan struct{})}
	d.conn = c
	e.setProps(d.path, ifaceDevice, map[string]dbus.Variant{"Connected": v(true)})
	mtu := uint16(c.mtu)
	e.addObject(svc, ifaces{ifaceService: {
		"UUID": v(ServiceUUID), "Primary": v(true), "Device": v(d.path),
		"Includes": v([]dbus.ObjectPath{}), "Handle": v(svcHandle)}})
	chr := func(p dbus.ObjectPath, uuid string, handle uint16, flags []string, notify bool) {
		ps := map[string]dbus.Variant{"UUID": v(uuid), "Service": v(svc), "Value": v([]byte{}),
			"Flags": v(flags), "MTU": v(mtu), "Handle": v(handle)}
		if notify {
			ps["Notifying"] = v(false)
		}
		e.addObject(p, ifaces{ifaceChar: ps})
	}
	chr(c.inbox, InboxUUID, inboxHandle, []string{"write-without-response", "write"}, false)
	chr(c.outbox, OutboxUUID, outboxHandle, []string{"notify"}, true)
	chr(c.info, InfoUUID, infoHandle, []string{"read"}, false)
	e.setProps(d.path, ifaceDevice, map[string]dbus.Variant{"ServicesResolved": v(true)})
	addr := e.opts.AdapterAddress
	e.wg.Go(func() {
		t := channel.NewFragmentTransport(link{c}, fragment.Options{})
		err := l.Serve(ctx, t, lock.Peer{Address: addr})
		e.log.Debug("lock connection ended", "device", d.addr, "err", err)
	})
	e.log.Debug("connected", "device", d.addr)
}

// disconnectLocked ends d's connection: ServicesResolved false, the GATT
// objects removed, Connected false, and the lock's Serve cancelled.
func (e *Emulator) disconnectLocked(d *device) {
	c := d.conn
	if c == nil {
		return
	}
	d.conn = nil
	c.stop()
	e.setProps(d.path, ifaceDevice, map[string]dbus.Variant{"ServicesResolved": v(false)})
	for _, p := range []dbus.ObjectPath{c.info, c.outbox, c.inbox, c.svc} {
		e.removeObject(p)
	}
	e.setProps(d.path, ifaceDevice, map[string]dbus.Variant{"Connected": v(false)})
	d.lastSeen = time.Now()
	e.log.Debug("disconnected", "device", d.addr)
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

// charAt finds the connection and characteristic of a call.
func (e *Emulator) charAt(m dbus.Message) (*connection, dbus.ObjectPath, *dbus.Error) {
	p, derr := e.lookup(m, ifaceChar)
	if derr != nil {
		return nil, p, derr
	}
	if d := e.deviceOf(p); d != nil {
		if c := d.conn; c != nil && (p == c.inbox || p == c.outbox || p == c.info) {
			return c, p, nil
		}
	}
	return nil, p, bluezErr("Failed", "Not connected")
}

func (h charHandler) ReadValue(m dbus.Message, opts map[string]dbus.Variant) ([]byte, *dbus.Error) {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	c, p, derr := e.charAt(m)
	if derr != nil {
		return nil, derr
	}
	if p != c.info {
		return nil, bluezErr("NotPermitted", "Read not permitted")
	}
	off, _ := opts["offset"].Value().(uint16)
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
	if derr == nil && p != c.inbox {
		derr = bluezErr("NotPermitted", "Write not permitted")
	}
	if derr == nil && len(value) > c.mtu-3 {
		derr = bluezErr("InvalidValueLength", "Invalid Length")
	}
	e.mu.Unlock()
	if derr != nil {
		return derr
	}
	pkt := append([]byte(nil), value...)
	t := time.NewTimer(e.opts.CallTimeout)
	defer t.Stop()
	select {
	case c.in <- pkt:
		return nil
	case <-c.done:
		return bluezErr("Failed", "Not connected")
	case <-t.C:
		return bluezErr("Failed", "Operation failed with ATT error: 0x0e")
	}
}

func (h charHandler) StartNotify(m dbus.Message) *dbus.Error {
	return h.notify(m, true)
}

func (h charHandler) StopNotify(m dbus.Message) *dbus.Error {
	return h.notify(m, false)
}

func (h charHandler) notify(m dbus.Message, on bool) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	c, p, derr := e.charAt(m)
	if derr != nil {
		return derr
	}
	if p != c.outbox {
		return bluezErr("NotSupported", "Operation is not supported")
	}
	// One notify session per client, as BlueZ keeps them; a second
	// StartNotify from the same client succeeds.
	s := msgSender(m)
	if !on {
		if !c.notify[s] {
			return bluezErr("Failed", "No notify session started")
		}
		delete(c.notify, s)
	} else {
		c.notify[s] = true
	}
	e.setProps(p, ifaceChar, map[string]dbus.Variant{"Notifying": v(len(c.notify) > 0)})
	return nil
}

// dropNotifyLocked ends the notify sessions of a client that left the bus.
func (e *Emulator) dropNotifyLocked(client string) {
	for _, d := range e.devices {
		if c := d.conn; c != nil && c.notify[client] {
			delete(c.notify, client)
			e.setProps(c.outbox, ifaceChar, map[string]dbus.Variant{"Notifying": v(len(c.notify) > 0)})
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
