package emulator

import (
	"fmt"
	"sort"
	"strings"

	"github.com/godbus/dbus/v5"
)

// methodsXML are the methods and signals of each interface, as BlueZ
// 5.66 introspects them.
var methodsXML = map[string]string{
	ifaceOM: `<method name="GetManagedObjects"><arg name="objects" type="a{oa{sa{sv}}}" direction="out"/></method>` +
		`<signal name="InterfacesAdded"><arg name="object" type="o"/><arg name="interfaces" type="a{sa{sv}}"/></signal>` +
		`<signal name="InterfacesRemoved"><arg name="object" type="o"/><arg name="interfaces" type="as"/></signal>`,
	ifaceProps: `<method name="Get"><arg name="interface" type="s" direction="in"/><arg name="name" type="s" direction="in"/><arg name="value" type="v" direction="out"/></method>` +
		`<method name="Set"><arg name="interface" type="s" direction="in"/><arg name="name" type="s" direction="in"/><arg name="value" type="v" direction="in"/></method>` +
		`<method name="GetAll"><arg name="interface" type="s" direction="in"/><arg name="properties" type="a{sv}" direction="out"/></method>` +
		`<signal name="PropertiesChanged"><arg name="interface" type="s"/><arg name="changed_properties" type="a{sv}"/><arg name="invalidated_properties" type="as"/></signal>`,
	ifaceIntro: `<method name="Introspect"><arg name="xml" type="s" direction="out"/></method>`,
	ifaceAgentMgr: `<method name="RegisterAgent"><arg name="agent" type="o" direction="in"/><arg name="capability" type="s" direction="in"/></method>` +
		`<method name="UnregisterAgent"><arg name="agent" type="o" direction="in"/></method>` +
		`<method name="RequestDefaultAgent"><arg name="agent" type="o" direction="in"/></method>`,
	ifaceAdapter: `<method name="StartDiscovery"></method><method name="SetDiscoveryFilter"><arg name="properties" type="a{sv}" direction="in"/></method>` +
		`<method name="StopDiscovery"></method><method name="RemoveDevice"><arg name="device" type="o" direction="in"/></method>` +
		`<method name="GetDiscoveryFilters"><arg name="filters" type="as" direction="out"/></method>`,
	// src/advertising.c methods.
	ifaceAdvMgr: `<method name="RegisterAdvertisement"><arg name="advertisement" type="o" direction="in"/><arg name="options" type="a{sv}" direction="in"/></method>` +
		`<method name="UnregisterAdvertisement"><arg name="service" type="o" direction="in"/></method>`,
	ifaceDevice:  `<method name="Disconnect"></method><method name="Connect"></method><method name="Pair"></method><method name="CancelPairing"></method>`,
	ifaceService: ``,
	// src/gatt-client.c characteristic_methods.
	ifaceChar: `<method name="ReadValue"><arg name="options" type="a{sv}" direction="in"/><arg name="value" type="ay" direction="out"/></method>` +
		`<method name="WriteValue"><arg name="value" type="ay" direction="in"/><arg name="options" type="a{sv}" direction="in"/></method>` +
		`<method name="AcquireWrite"><arg name="options" type="a{sv}" direction="in"/><arg name="fd" type="h" direction="out"/><arg name="mtu" type="q" direction="out"/></method>` +
		`<method name="AcquireNotify"><arg name="options" type="a{sv}" direction="in"/><arg name="fd" type="h" direction="out"/><arg name="mtu" type="q" direction="out"/></method>` +
		`<method name="StartNotify"></method><method name="StopNotify"></method>`,
	// src/gatt-client.c descriptor_methods.
	ifaceDesc: `<method name="ReadValue"><arg name="options" type="a{sv}" direction="in"/><arg name="value" type="ay" direction="out"/></method>` +
		`<method name="WriteValue"><arg name="value" type="ay" direction="in"/><arg name="options" type="a{sv}" direction="in"/></method>`,
}

type introHandler struct{ e *Emulator }

// Introspect describes the object at the call's path: its interfaces,
// their methods, signals and properties, and its children.
func (h introHandler) Introspect(m dbus.Message) (string, *dbus.Error) {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	p := msgPath(m)
	var b strings.Builder
	b.WriteString(`<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">` + "\n<node>")
	names := []string{ifaceIntro, ifaceProps}
	var in ifaces
	if p == "/" {
		names = append(names, ifaceOM)
	} else {
		var ok bool
		if in, ok = e.objs[p]; !ok && !e.hasChildren(p) {
			return "", dbusErr("UnknownObject", fmt.Sprintf("No such object %s", p))
		}
		for i := range in {
			names = append(names, i)
		}
	}
	sort.Strings(names)
	for _, i := range names {
		fmt.Fprintf(&b, `<interface name="%s">%s`, i, methodsXML[i])
		keys := make([]string, 0, len(in[i]))
		for k := range in[i] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			access := "read"
			if writable[i][k] {
				access = "readwrite"
			}
			fmt.Fprintf(&b, `<property name="%s" type="%s" access="%s"></property>`, k, in[i][k].Signature(), access)
		}
		b.WriteString("</interface>")
	}
	for _, c := range e.children(p) {
		fmt.Fprintf(&b, `<node name="%s"/>`, c)
	}
	b.WriteString("</node>")
	return b.String(), nil
}

func (e *Emulator) hasChildren(p dbus.ObjectPath) bool { return len(e.children(p)) > 0 }

// children are the names of the nodes directly below p.
func (e *Emulator) children(p dbus.ObjectPath) []string {
	prefix := string(p) + "/"
	if p == "/" {
		prefix = "/"
	}
	set := map[string]bool{}
	for o := range e.objs {
		s := string(o)
		if !strings.HasPrefix(s, prefix) || s == string(p) {
			continue
		}
		s = strings.TrimPrefix(s, prefix)
		if i := strings.IndexByte(s, '/'); i >= 0 {
			s = s[:i]
		}
		set[s] = true
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
