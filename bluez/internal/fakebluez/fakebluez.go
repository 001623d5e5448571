// Package fakebluez is a minimal fake bluetoothd for package bluez's
// tests: it owns org.bluez on a private bus and exports an ObjectManager at
// /, one Adapter1 (with Powered, Discovering, StartDiscovery,
// StopDiscovery, SetDiscoveryFilter) and Device1 objects that tests add,
// remove and change with the signals bluetoothd would emit. It is a stand-in
// until the full emulator (bluez/emulator) replaces it.
//
// It may import the standard library and github.com/godbus/dbus/v5.
package fakebluez

import (
	"fmt"
	"sync"

	"github.com/godbus/dbus/v5"
)

const (
	ifaceAdapter = "org.bluez.Adapter1"
	ifaceDevice  = "org.bluez.Device1"
	ifaceProps   = "org.freedesktop.DBus.Properties"
	ifaceOM      = "org.freedesktop.DBus.ObjectManager"
)

// Bluez is the fake daemon.
type Bluez struct {
	conn        *dbus.Conn
	AdapterPath dbus.ObjectPath

	mu      sync.Mutex
	objects map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	filter  map[string]dbus.Variant
	starts  int
	stops   int
}

// New takes the name org.bluez on conn and exports the tree with one
// powered-off adapter at /org/bluez/hci0 with address addr.
func New(conn *dbus.Conn, addr string) (*Bluez, error) {
	b := &Bluez{
		conn:        conn,
		AdapterPath: "/org/bluez/hci0",
		objects:     map[dbus.ObjectPath]map[string]map[string]dbus.Variant{},
	}
	b.objects[b.AdapterPath] = map[string]map[string]dbus.Variant{ifaceAdapter: {
		"Address":     dbus.MakeVariant(addr),
		"Name":        dbus.MakeVariant("fake"),
		"Powered":     dbus.MakeVariant(false),
		"Discovering": dbus.MakeVariant(false),
	}}
	if err := conn.Export(om{b}, "/", ifaceOM); err != nil {
		return nil, err
	}
	if err := conn.Export(adapter{b}, b.AdapterPath, ifaceAdapter); err != nil {
		return nil, err
	}
	if err := conn.Export(props{b, b.AdapterPath}, b.AdapterPath, ifaceProps); err != nil {
		return nil, err
	}
	r, err := conn.RequestName("org.bluez", dbus.NameFlagDoNotQueue)
	if err != nil {
		return nil, err
	}
	if r != dbus.RequestNameReplyPrimaryOwner {
		return nil, fmt.Errorf("fakebluez: org.bluez not acquired (%d)", r)
	}
	return b, nil
}

type om struct{ b *Bluez }

func (o om) GetManagedObjects() (map[dbus.ObjectPath]map[string]map[string]dbus.Variant, *dbus.Error) {
	o.b.mu.Lock()
	defer o.b.mu.Unlock()
	out := make(map[dbus.ObjectPath]map[string]map[string]dbus.Variant, len(o.b.objects))
	for p, ifs := range o.b.objects {
		c := make(map[string]map[string]dbus.Variant, len(ifs))
		for i, ps := range ifs {
			cp := make(map[string]dbus.Variant, len(ps))
			for k, v := range ps {
				cp[k] = v
			}
			c[i] = cp
		}
		out[p] = c
	}
	return out, nil
}

type adapter struct{ b *Bluez }

func (a adapter) StartDiscovery() *dbus.Error {
	a.b.mu.Lock()
	a.b.starts++
	a.b.mu.Unlock()
	a.b.setProp(a.b.AdapterPath, ifaceAdapter, "Discovering", dbus.MakeVariant(true))
	return nil
}

func (a adapter) StopDiscovery() *dbus.Error {
	a.b.mu.Lock()
	a.b.stops++
	a.b.mu.Unlock()
	a.b.setProp(a.b.AdapterPath, ifaceAdapter, "Discovering", dbus.MakeVariant(false))
	return nil
}

func (a adapter) SetDiscoveryFilter(f map[string]dbus.Variant) *dbus.Error {
	a.b.mu.Lock()
	a.b.filter = f
	a.b.mu.Unlock()
	return nil
}

type props struct {
	b    *Bluez
	path dbus.ObjectPath
}

func (p props) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	p.b.mu.Lock()
	defer p.b.mu.Unlock()
	v, ok := p.b.objects[p.path][iface][name]
	if !ok {
		return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.InvalidArgs", []any{"No such property " + name})
	}
	return v, nil
}

func (p props) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	p.b.mu.Lock()
	defer p.b.mu.Unlock()
	out := map[string]dbus.Variant{}
	for k, v := range p.b.objects[p.path][iface] {
		out[k] = v
	}
	return out, nil
}

func (p props) Set(iface, name string, v dbus.Variant) *dbus.Error {
	if iface != ifaceAdapter || name != "Powered" {
		return dbus.NewError("org.bluez.Error.NotPermitted", []any{"read-only"})
	}
	if _, ok := v.Value().(bool); !ok {
		return dbus.NewError("org.bluez.Error.InvalidArguments", []any{"Invalid arguments in method call"})
	}
	p.b.setProp(p.path, iface, name, v)
	return nil
}

func (b *Bluez) setProp(path dbus.ObjectPath, iface, name string, v dbus.Variant) {
	b.mu.Lock()
	if ifs, ok := b.objects[path]; ok && ifs[iface] != nil {
		ifs[iface][name] = v
	}
	b.mu.Unlock()
	_ = b.conn.Emit(path, ifaceProps+".PropertiesChanged", iface, map[string]dbus.Variant{name: v}, []string{})
}

// Powered reports the adapter's Powered property.
func (b *Bluez) Powered() bool { return b.adapterBool("Powered") }

// Discovering reports the adapter's Discovering property.
func (b *Bluez) Discovering() bool { return b.adapterBool("Discovering") }

func (b *Bluez) adapterBool(name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, _ := b.objects[b.AdapterPath][ifaceAdapter][name].Value().(bool)
	return v
}

// Filter returns the last discovery filter set.
func (b *Bluez) Filter() map[string]dbus.Variant {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.filter
}

// DiscoveryCalls counts StartDiscovery and StopDiscovery calls.
func (b *Bluez) DiscoveryCalls() (starts, stops int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.starts, b.stops
}

// DevicePath is the path BlueZ gives a device with address addr.
func (b *Bluez) DevicePath(addr string) dbus.ObjectPath {
	p := []byte(addr)
	for i, c := range p {
		if c == ':' {
			p[i] = '_'
		}
	}
	return b.AdapterPath + "/dev_" + dbus.ObjectPath(p)
}

// AddDevice adds a Device1 with address addr and the given properties
// (Address and Adapter are filled in) and emits InterfacesAdded.
func (b *Bluez) AddDevice(addr string, p map[string]dbus.Variant) dbus.ObjectPath {
	path := b.DevicePath(addr)
	ps := map[string]dbus.Variant{
		"Address": dbus.MakeVariant(addr),
		"Adapter": dbus.MakeVariant(b.AdapterPath),
	}
	for k, v := range p {
		ps[k] = v
	}
	b.mu.Lock()
	b.objects[path] = map[string]map[string]dbus.Variant{ifaceDevice: ps}
	b.mu.Unlock()
	_ = b.conn.Emit("/", ifaceOM+".InterfacesAdded", path, map[string]map[string]dbus.Variant{ifaceDevice: ps})
	return path
}

// RemoveDevice removes the device at path and emits InterfacesRemoved.
func (b *Bluez) RemoveDevice(path dbus.ObjectPath) {
	b.mu.Lock()
	delete(b.objects, path)
	b.mu.Unlock()
	_ = b.conn.Emit("/", ifaceOM+".InterfacesRemoved", path, []string{ifaceDevice})
}

// ChangeDevice sets Device1 properties at path and emits
// PropertiesChanged.
func (b *Bluez) ChangeDevice(path dbus.ObjectPath, changed map[string]dbus.Variant) {
	b.mu.Lock()
	if ifs, ok := b.objects[path]; ok {
		for k, v := range changed {
			ifs[ifaceDevice][k] = v
		}
	}
	b.mu.Unlock()
	_ = b.conn.Emit(path, ifaceProps+".PropertiesChanged", ifaceDevice, changed, []string{})
}
