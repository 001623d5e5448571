package realbluez

import (
	"context"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
)

const (
	ifaceAdvMgr = "org.bluez.LEAdvertisingManager1"
	ifaceAdv    = "org.bluez.LEAdvertisement1"
)

// advObject is an LEAdvertisement1 object on the gateway's connection:
// its properties (Properties.Get, GetAll) and Release.
type advObject struct{ props map[string]dbus.Variant }

func (a advObject) Release() *dbus.Error { return nil }

func (a advObject) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	if x, ok := a.props[name]; ok && iface == ifaceAdv {
		return x, nil
	}
	return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.InvalidArgs", []any{"no such property " + name})
}

func (a advObject) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	if iface != ifaceAdv {
		return map[string]dbus.Variant{}, nil
	}
	return a.props, nil
}

func (a advObject) Set(iface, name string, x dbus.Variant) *dbus.Error {
	return dbus.NewError("org.freedesktop.DBus.Error.PropertyReadOnly", []any{name})
}

// scenarioAdvertise registers two advertisements on the gateway's
// adapter: the lock's (the 128-bit service UUID and the 11-byte payload,
// over 31 bytes with the flags: refused) and the payload alone (fits:
// registered, then unregistered). The facts are the D-Bus error name and
// message.
func scenarioAdvertise(ctx context.Context, r *Run) error {
	payload := []byte{1, 0x4c, 0x4b, 0, 0, 0, 0, 0, 0xc1, 0, 100}
	md := map[uint16]dbus.Variant{bluez.TestCompanyID: dbus.MakeVariant(payload)}
	try := func(name string, props map[string]dbus.Variant) (map[string]any, string, error) {
		path := dbus.ObjectPath("/org/gatewayd/realbluez/adv_" + name)
		a := advObject{props: props}
		if err := r.env.Conn.Export(a, path, ifaceAdv); err != nil {
			return nil, "", err
		}
		if err := r.env.Conn.Export(a, path, "org.freedesktop.DBus.Properties"); err != nil {
			return nil, "", err
		}
		defer func() {
			_ = r.env.Conn.Export(nil, path, ifaceAdv)
			_ = r.env.Conn.Export(nil, path, "org.freedesktop.DBus.Properties")
		}()
		adapter := r.env.Conn.Object(bluez.BusName, dbus.ObjectPath("/org/bluez/"+r.env.Adapter))
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := adapter.CallWithContext(cctx, ifaceAdvMgr+".RegisterAdvertisement", 0, path, map[string]dbus.Variant{}).Err
		if err != nil {
			err = bluez.MapError(err)
			var msg string
			if be, ok := err.(*bluez.Error); ok {
				msg = be.Message
			}
			return map[string]any{"error_name": ErrorName(err), "error_message": msg}, "refused", nil
		}
		if err := adapter.CallWithContext(cctx, ifaceAdvMgr+".UnregisterAdvertisement", 0, path).Err; err != nil {
			return nil, "", fmt.Errorf("UnregisterAdvertisement: %w", bluez.MapError(err))
		}
		return map[string]any{}, "registered", nil
	}
	if err := r.expect("advertise", "too-long", "refused", func() (map[string]any, string, error) {
		return try("long", map[string]dbus.Variant{"Type": dbus.MakeVariant("peripheral"),
			"ServiceUUIDs": dbus.MakeVariant([]string{bluez.LockServiceUUID}), "ManufacturerData": dbus.MakeVariant(md)})
	}); err != nil {
		return err
	}
	return r.expect("advertise", "fits", "registered", func() (map[string]any, string, error) {
		return try("short", map[string]dbus.Variant{"Type": dbus.MakeVariant("peripheral"),
			"ManufacturerData": dbus.MakeVariant(md)})
	})
}
