package emulator

import (
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
)

// filter is one client's discovery filter (Adapter1.SetDiscoveryFilter).
type filter struct {
	uuids         []string // lower-case; empty: any
	rssi          int16    // 0: none
	hasRSSI       bool
	transport     string
	duplicateData bool
}

// matches reports whether an advertisement passes the filter.
func (f *filter) matches(uuids []string, rssi int16) bool {
	if f == nil {
		return true
	}
	if f.transport == "bredr" {
		return false
	}
	if f.hasRSSI && rssi < f.rssi {
		return false
	}
	if len(f.uuids) == 0 {
		return true
	}
	// No allocation: the radio asks this for every advertisement.
	for _, u := range uuids {
		for _, w := range f.uuids {
			if strings.EqualFold(u, w) {
				return true
			}
		}
	}
	return false
}

type adapterHandler struct{ e *Emulator }

// poweredAdapterLocked is the adapter a discovery call is for, or the
// error BlueZ answers when it is unknown or off (NotReady); e.mu is held.
func (e *Emulator) poweredAdapterLocked(m dbus.Message) (dbus.ObjectPath, *dbus.Error) {
	p, derr := e.lookup(m, ifaceAdapter)
	if derr != nil {
		return p, derr
	}
	if !e.boolProp(p, ifaceAdapter, "Powered") {
		return p, bluezErr("NotReady", "Resource Not Ready")
	}
	return p, nil
}

func (h adapterHandler) StartDiscovery(m dbus.Message) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	p, derr := e.poweredAdapterLocked(m)
	if derr != nil {
		return derr
	}
	s := msgSender(m)
	if _, ok := e.discovery[s]; ok || e.wedged {
		// src/adapter.c start_discovery: btd_error_busy. A wedged
		// adapter answers so to every client: bluetoothd believes a
		// discovery runs that the controller never ends.
		return bluezErr("InProgress", "Operation already in progress")
	}
	f := e.pending[s]
	if f == nil {
		f = &filter{}
	}
	e.discovery[s] = f
	e.setProps(p, ifaceAdapter, map[string]dbus.Variant{"Discovering": v(true)})
	e.log.Debug("discovery started", "client", s)
	return nil
}

func (h adapterHandler) StopDiscovery(m dbus.Message) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	_, derr := e.poweredAdapterLocked(m)
	if derr != nil {
		return derr
	}
	s := msgSender(m)
	if _, ok := e.discovery[s]; !ok {
		return bluezErr("Failed", "No discovery started")
	}
	e.stopDiscoveryLocked(s)
	return nil
}

func (e *Emulator) stopDiscoveryLocked(client string) {
	delete(e.discovery, client)
	if len(e.discovery) == 0 {
		e.setProps(e.adapter, ifaceAdapter, map[string]dbus.Variant{"Discovering": v(false)})
	}
	e.log.Debug("discovery stopped", "client", client)
}

func (h adapterHandler) SetDiscoveryFilter(m dbus.Message, props map[string]dbus.Variant) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	_, derr := e.poweredAdapterLocked(m)
	if derr != nil {
		return derr
	}
	f, derr := parseFilter(props)
	if derr != nil {
		return derr
	}
	s := msgSender(m)
	if len(props) == 0 {
		f = nil // an empty dict clears the filter
	}
	e.pending[s] = f
	if _, ok := e.discovery[s]; ok {
		e.discovery[s] = f
	}
	return nil
}

func invalidArgs() *dbus.Error {
	return bluezErr("InvalidArguments", "Invalid arguments in method call")
}

func parseFilter(props map[string]dbus.Variant) (*filter, *dbus.Error) {
	f := &filter{transport: "auto"}
	for k, x := range props {
		switch k {
		case "UUIDs":
			us, ok := x.Value().([]string)
			if !ok {
				return nil, invalidArgs()
			}
			for _, u := range us {
				f.uuids = append(f.uuids, strings.ToLower(u))
			}
		case "RSSI":
			r, ok := x.Value().(int16)
			if !ok || r < -127 || r > 20 {
				return nil, invalidArgs()
			}
			f.rssi, f.hasRSSI = r, true
		case "Pathloss":
			if _, ok := x.Value().(uint16); !ok {
				return nil, invalidArgs()
			}
		case "Transport":
			t, ok := x.Value().(string)
			if !ok || (t != "auto" && t != "le" && t != "bredr") {
				return nil, invalidArgs()
			}
			f.transport = t
		case "DuplicateData":
			b, ok := x.Value().(bool)
			if !ok {
				return nil, invalidArgs()
			}
			f.duplicateData = b
		case "Discoverable", "AutoConnect":
			if _, ok := x.Value().(bool); !ok {
				return nil, invalidArgs()
			}
		case "Pattern":
			if _, ok := x.Value().(string); !ok {
				return nil, invalidArgs()
			}
		default:
			return nil, invalidArgs()
		}
	}
	if _, ok := props["RSSI"]; ok {
		if _, ok := props["Pathloss"]; ok {
			return nil, invalidArgs() // BlueZ refuses both at once
		}
	}
	return f, nil
}

func (h adapterHandler) GetDiscoveryFilters(m dbus.Message) ([]string, *dbus.Error) {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if _, derr := h.e.lookup(m, ifaceAdapter); derr != nil {
		return nil, derr
	}
	return []string{"UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable", "Pattern"}, nil
}

func (h adapterHandler) RemoveDevice(m dbus.Message, dev dbus.ObjectPath) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, derr := e.lookup(m, ifaceAdapter); derr != nil {
		return derr
	}
	d := e.deviceOf(dev)
	if d == nil || d.path != dev {
		return bluezErr("DoesNotExist", "Does Not Exist")
	}
	if d.conn != nil {
		e.disconnectLocked(d)
	}
	delete(e.bonds, d.addr)
	delete(e.stored, d.addr)
	e.removeDeviceLocked(d)
	return nil
}

// watchOwners ends the discovery sessions and agents of clients that leave
// the bus, as bluetoothd does.
func (e *Emulator) watchOwners() error {
	if err := e.conn.AddMatchSignal(dbus.WithMatchSender("org.freedesktop.DBus"),
		dbus.WithMatchInterface("org.freedesktop.DBus"), dbus.WithMatchMember("NameOwnerChanged")); err != nil {
		return fmt.Errorf("emulator: watching NameOwnerChanged: %w", err)
	}
	ch := make(chan *dbus.Signal, 64)
	e.conn.Signal(ch)
	e.wg.Go(func() {
		defer e.conn.RemoveSignal(ch)
		for {
			select {
			case <-e.ctx.Done():
				return
			case s := <-ch:
				if s == nil || s.Name != "org.freedesktop.DBus.NameOwnerChanged" || len(s.Body) != 3 {
					continue
				}
				name, _ := s.Body[0].(string)
				newOwner, _ := s.Body[2].(string)
				if newOwner != "" || !strings.HasPrefix(name, ":") {
					continue
				}
				e.mu.Lock()
				if _, ok := e.discovery[name]; ok && !e.closed {
					e.stopDiscoveryLocked(name)
				}
				delete(e.pending, name)
				e.dropAgentLocked(name)
				e.dropNotifyLocked(name)
				e.dropAdvertsLocked(name)
				e.mu.Unlock()
			}
		}
	})
	return nil
}
