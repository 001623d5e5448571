package fakebluez

import (
	"sync"

	"github.com/godbus/dbus/v5"
)

const (
	ifaceService = "org.bluez.GattService1"
	ifaceChar    = "org.bluez.GattCharacteristic1"
)

// Write is one WriteValue call the fake received.
type Write struct {
	Char  dbus.ObjectPath
	Value []byte
	Type  string // the "type" option: "command", "request" or ""
}

// GATT is a device with the lock's GATT service: Device1.Connect and
// Disconnect work, the service and its characteristics appear in the tree,
// WriteValue calls arrive on Writes and Notify emits Value changes.
type GATT struct {
	b       *Bluez
	Device  dbus.ObjectPath
	Service dbus.ObjectPath
	Inbox   dbus.ObjectPath
	Outbox  dbus.ObjectPath
	Writes  chan Write

	mtu   uint16
	uuids [3]string

	mu           sync.Mutex
	notifying    bool
	connectError *dbus.Error
	noResolve    bool
	lateDown     <-chan struct{}
}

// SetLateDisconnect makes Disconnect answer at once and turn Connected
// false only once release is closed, as bluetoothd answers before the
// link is torn down (nil restores the immediate change).
func (g *GATT) SetLateDisconnect(release <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lateDown = release
}

// SetConnectError makes Connect fail with a D-Bus error name and message
// ("" restores success).
func (g *GATT) SetConnectError(name, msg string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.connectError = nil
	if name != "" {
		g.connectError = dbus.NewError(name, []any{msg})
	}
}

// SetNoResolve makes Connect succeed without services ever resolving.
func (g *GATT) SetNoResolve(v bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.noResolve = v
}

// AddLockGATT gives the device at dev (added with AddDevice) the lock
// service serviceUUID with Inbox (inboxUUID, write) and Outbox
// (outboxUUID, notify) characteristics of ATT MTU mtu.
func (b *Bluez) AddLockGATT(dev dbus.ObjectPath, serviceUUID, inboxUUID, outboxUUID string, mtu uint16) (*GATT, error) {
	g := &GATT{
		b: b, Device: dev,
		Service: dev + "/service0010",
		Inbox:   dev + "/service0010/char0011",
		Outbox:  dev + "/service0010/char0013",
		Writes:  make(chan Write, 1024),
		mtu:     mtu,
		uuids:   [3]string{serviceUUID, inboxUUID, outboxUUID},
	}
	b.mu.Lock()
	b.objects[dev][ifaceDevice]["Connected"] = dbus.MakeVariant(false)
	b.objects[dev][ifaceDevice]["ServicesResolved"] = dbus.MakeVariant(false)
	b.mu.Unlock()
	for _, e := range []struct {
		v     any
		path  dbus.ObjectPath
		iface string
	}{
		{gattDevice{g}, dev, ifaceDevice},
		{props{b, dev}, dev, ifaceProps},
		{gattChar{g, g.Inbox}, g.Inbox, ifaceChar},
		{props{b, g.Inbox}, g.Inbox, ifaceProps},
		{gattChar{g, g.Outbox}, g.Outbox, ifaceChar},
		{props{b, g.Outbox}, g.Outbox, ifaceProps},
	} {
		if err := b.conn.Export(e.v, e.path, e.iface); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// addTree publishes the service and characteristics (as bluetoothd does
// once services are resolved).
func (g *GATT) addTree() {
	b := g.b
	objs := map[dbus.ObjectPath]map[string]map[string]dbus.Variant{
		g.Service: {ifaceService: {
			"UUID": dbus.MakeVariant(g.uuids[0]), "Device": dbus.MakeVariant(g.Device), "Primary": dbus.MakeVariant(true),
		}},
		g.Inbox: {ifaceChar: {
			"UUID": dbus.MakeVariant(g.uuids[1]), "Service": dbus.MakeVariant(g.Service),
			"Flags": dbus.MakeVariant([]string{"write", "write-without-response"}), "MTU": dbus.MakeVariant(g.mtu),
		}},
		g.Outbox: {ifaceChar: {
			"UUID": dbus.MakeVariant(g.uuids[2]), "Service": dbus.MakeVariant(g.Service),
			"Flags": dbus.MakeVariant([]string{"notify"}), "MTU": dbus.MakeVariant(g.mtu),
			"Notifying": dbus.MakeVariant(false), "Value": dbus.MakeVariant([]byte{}),
		}},
	}
	b.mu.Lock()
	for p, ifs := range objs {
		b.objects[p] = ifs
	}
	b.mu.Unlock()
	for _, p := range []dbus.ObjectPath{g.Service, g.Inbox, g.Outbox} {
		_ = b.conn.Emit("/", ifaceOM+".InterfacesAdded", p, objs[p])
	}
}

type gattDevice struct{ g *GATT }

func (d gattDevice) Connect() *dbus.Error {
	d.g.mu.Lock()
	cerr, noResolve := d.g.connectError, d.g.noResolve
	d.g.mu.Unlock()
	if cerr != nil {
		return cerr
	}
	b := d.g.b
	b.setProp(d.g.Device, ifaceDevice, "Connected", dbus.MakeVariant(true))
	if noResolve {
		return nil
	}
	// Services resolve after Connect returns, as on real hardware.
	go func() {
		d.g.addTree()
		b.setProp(d.g.Device, ifaceDevice, "ServicesResolved", dbus.MakeVariant(true))
	}()
	return nil
}

func (d gattDevice) Disconnect() *dbus.Error {
	b := d.g.b
	d.g.mu.Lock()
	late := d.g.lateDown
	d.g.mu.Unlock()
	down := func() {
		b.setProp(d.g.Device, ifaceDevice, "ServicesResolved", dbus.MakeVariant(false))
		b.setProp(d.g.Device, ifaceDevice, "Connected", dbus.MakeVariant(false))
	}
	if late == nil {
		down()
		return nil
	}
	go func() { <-late; down() }()
	return nil
}

type gattChar struct {
	g    *GATT
	path dbus.ObjectPath
}

func (c gattChar) WriteValue(v []byte, opts map[string]dbus.Variant) *dbus.Error {
	if c.path != c.g.Inbox {
		return dbus.NewError("org.bluez.Error.NotPermitted", []any{"Write not permitted"})
	}
	typ, _ := opts["type"].Value().(string)
	select {
	case c.g.Writes <- Write{Char: c.path, Value: append([]byte(nil), v...), Type: typ}:
	default:
	}
	return nil
}

func (c gattChar) StartNotify() *dbus.Error {
	if c.path != c.g.Outbox {
		return dbus.NewError("org.bluez.Error.NotSupported", []any{"Operation is not supported"})
	}
	c.g.mu.Lock()
	c.g.notifying = true
	c.g.mu.Unlock()
	c.g.b.setProp(c.path, ifaceChar, "Notifying", dbus.MakeVariant(true))
	return nil
}

func (c gattChar) StopNotify() *dbus.Error {
	c.g.mu.Lock()
	c.g.notifying = false
	c.g.mu.Unlock()
	c.g.b.setProp(c.path, ifaceChar, "Notifying", dbus.MakeVariant(false))
	return nil
}

// Notifying reports whether notifications on Outbox are enabled.
func (g *GATT) Notifying() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.notifying
}

// Notify sends one notification on Outbox (a PropertiesChanged of Value).
func (g *GATT) Notify(v []byte) {
	g.b.setProp(g.Outbox, ifaceChar, "Value", dbus.MakeVariant(v))
}

// Drop disconnects the device as if the link were lost.
func (g *GATT) Drop() { _ = gattDevice{g}.Disconnect() }
