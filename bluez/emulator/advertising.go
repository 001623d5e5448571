package emulator

import (
	"strings"

	"github.com/godbus/dbus/v5"
)

const (
	ifaceAdvMgr = "org.bluez.LEAdvertisingManager1"
	ifaceAdv    = "org.bluez.LEAdvertisement1"
	// maxAdvLen is the legacy advertising data limit the Linux kernel
	// (6.1) applies to every advertising instance, even on an
	// extended-advertising controller (HCI_MAX_AD_LENGTH).
	maxAdvLen = 31
	// advInstances is SupportedInstances (HCI_MAX_ADV_INSTANCES).
	advInstances = 5
)

// advKey names a registered advertisement: its owner and object path.
type advKey struct {
	owner string
	path  dbus.ObjectPath
}

// advMgrProps are LEAdvertisingManager1's properties (5.66 src/advertising.c
// properties, without the experimental ones).
func (e *Emulator) advMgrProps() map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"ActiveInstances": v(byte(len(e.adverts))), "SupportedInstances": v(byte(advInstances - len(e.adverts))),
		"SupportedIncludes":          v([]string{"tx-power", "appearance", "local-name"}),
		"SupportedSecondaryChannels": v([]string{"1M", "2M", "Coded"}),
	}
}

type advMgrHandler struct{ e *Emulator }

// RegisterAdvertisement reads the advertisement's properties from its
// owner (Properties.GetAll, as bluetoothd's proxy does) and adds it if
// its advertising data fits: over 31 bytes, BlueZ 5.66 on Linux 6.1
// answers org.bluez.Error.Failed "Failed to register advertisement" (the
// kernel refuses the data; seen on the real-BlueZ tier, TestDifferential
// advertise/too-long). Errors as src/advertising.c register_advertisement:
// AlreadyExists for a path registered twice, NotPermitted "Maximum
// advertisements reached", Failed "Failed to parse advertisement." for
// properties it cannot read.
func (h advMgrHandler) RegisterAdvertisement(m dbus.Message, path dbus.ObjectPath, opts map[string]dbus.Variant) *dbus.Error {
	e := h.e
	e.mu.Lock()
	if _, derr := e.poweredAdapterLocked(m); derr != nil {
		e.mu.Unlock()
		return derr
	}
	if !path.IsValid() {
		e.mu.Unlock()
		return invalidArgs()
	}
	k := advKey{owner: msgSender(m), path: path}
	if e.adverts[k] {
		e.mu.Unlock()
		return bluezErr("AlreadyExists", "Already Exists")
	}
	if len(e.adverts) >= advInstances {
		e.mu.Unlock()
		return bluezErr("NotPermitted", "Maximum advertisements reached")
	}
	e.mu.Unlock()

	ctx, cancel := e.callCtx()
	defer cancel()
	var props map[string]dbus.Variant
	if err := e.conn.Object(k.owner, path).CallWithContext(ctx, ifaceProps+".GetAll", 0, ifaceAdv).Store(&props); err != nil {
		return bluezErr("Failed", "Failed to parse advertisement.")
	}
	n, ok := advLen(props)
	if !ok {
		return bluezErr("Failed", "Failed to parse advertisement.")
	}
	if n > maxAdvLen {
		e.log.Debug("advertisement refused: data too long", "owner", k.owner, "path", path, "bytes", n)
		return bluezErr("Failed", "Failed to register advertisement")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gone || e.closed {
		return bluezErr("Failed", "Failed to register advertisement")
	}
	e.adverts[k] = true
	e.setProps(e.adapter, ifaceAdvMgr, e.advMgrProps())
	return nil
}

// UnregisterAdvertisement removes a registered advertisement, or answers
// DoesNotExist "Does Not Exist".
func (h advMgrHandler) UnregisterAdvertisement(m dbus.Message, path dbus.ObjectPath) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, derr := e.lookup(m, ifaceAdvMgr); derr != nil {
		return derr
	}
	k := advKey{owner: msgSender(m), path: path}
	if !e.adverts[k] {
		return bluezErr("DoesNotExist", "Does Not Exist")
	}
	delete(e.adverts, k)
	e.setProps(e.adapter, ifaceAdvMgr, e.advMgrProps())
	return nil
}

// dropAdvertsLocked ends the advertisements of a client that left the
// bus (src/advertising.c client_disconnect_cb).
func (e *Emulator) dropAdvertsLocked(owner string) {
	n := len(e.adverts)
	for k := range e.adverts {
		if k.owner == owner {
			delete(e.adverts, k)
		}
	}
	if len(e.adverts) != n && !e.gone {
		e.setProps(e.adapter, ifaceAdvMgr, e.advMgrProps())
	}
}

// advLen is the length of the advertising data an advertisement's
// properties make (src/shared/ad.c bt_ad_generate): each AD structure is
// a length byte, a type byte and its data; UUIDs are grouped by size.
// The Flags structure (3 bytes) counts when the advertisement is
// discoverable. ok is false for a property of the wrong type or an
// unknown Type.
func advLen(props map[string]dbus.Variant) (n int, ok bool) {
	uuids := func(name string) bool {
		x, has := props[name]
		if !has {
			return true
		}
		us, isList := x.Value().([]string)
		if !isList {
			return false
		}
		sizes := map[int]int{}
		for _, u := range us {
			sizes[uuidSize(u)]++
		}
		for size, count := range sizes {
			n += 2 + size*count
		}
		return true
	}
	if t, has := props["Type"]; has {
		s, isStr := t.Value().(string)
		if !isStr || (s != "peripheral" && s != "broadcast") {
			return 0, false
		}
	} else {
		return 0, false
	}
	if !uuids("ServiceUUIDs") || !uuids("SolicitUUIDs") {
		return 0, false
	}
	if x, has := props["ManufacturerData"]; has {
		md, isMap := x.Value().(map[uint16]dbus.Variant)
		if !isMap {
			return 0, false
		}
		for _, d := range md {
			b, isBytes := d.Value().([]byte)
			if !isBytes {
				return 0, false
			}
			n += 4 + len(b)
		}
	}
	if x, has := props["ServiceData"]; has {
		sd, isMap := x.Value().(map[string]dbus.Variant)
		if !isMap {
			return 0, false
		}
		for u, d := range sd {
			b, isBytes := d.Value().([]byte)
			if !isBytes {
				return 0, false
			}
			n += 2 + uuidSize(u) + len(b)
		}
	}
	if x, has := props["Data"]; has {
		dd, isMap := x.Value().(map[byte]dbus.Variant)
		if !isMap {
			return 0, false
		}
		for _, d := range dd {
			b, isBytes := d.Value().([]byte)
			if !isBytes {
				return 0, false
			}
			n += 2 + len(b)
		}
	}
	if x, has := props["LocalName"]; has {
		s, isStr := x.Value().(string)
		if !isStr {
			return 0, false
		}
		n += 2 + len(s)
	}
	if _, has := props["Appearance"]; has {
		n += 4
	}
	if x, has := props["Includes"]; has {
		inc, isList := x.Value().([]string)
		if !isList {
			return 0, false
		}
		for _, i := range inc {
			switch i {
			case "tx-power":
				n += 3
			case "appearance":
				n += 4
			}
		}
	}
	if x, has := props["Discoverable"]; has {
		if d, _ := x.Value().(bool); d {
			n += 3
		}
	}
	return n, true
}

// uuidSize is the bytes a UUID takes in advertising data: 2 for a 16-bit
// (short or on the Bluetooth base), 4 for a 32-bit, else 16.
func uuidSize(u string) int {
	u = strings.ToLower(u)
	switch {
	case len(u) == 4:
		return 2
	case len(u) == 8:
		return 4
	case len(u) == 36 && strings.HasSuffix(u, "-0000-1000-8000-00805f9b34fb"):
		if strings.HasPrefix(u, "0000") {
			return 2
		}
		return 4
	}
	return 16
}
