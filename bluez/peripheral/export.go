package peripheral

import (
	"context"
	"errors"
	"fmt"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/internal/locklink"
)

// ServiceHandle is the lock service's declaration handle. Inbox's value
// is at +2, Outbox's at +4 with its CCC at +5, Info's at +7 (each
// characteristic's declaration just before its value).
const ServiceHandle uint16 = 0x0100

type objects map[dbus.ObjectPath]map[string]map[string]dbus.Variant

func v(x any) dbus.Variant { return dbus.MakeVariant(x) }

// gattObjects are the GATT application's objects, as GetManagedObjects
// reports them (bluetoothd reads them there).
//
// Each object carries a fixed Handle (BlueZ's server-side Handle
// property): bluetoothd adds characteristics in the order the reply lists
// them, and a Go map has no order, so without fixed handles every
// registration (each bluetoothd restart) could move Outbox and its CCC
// and break a bonded gateway's cached handles. A firmware's attribute
// table is fixed too.
func (p *Peripheral) gattObjects() objects {
	chr := func(uuid string, handle uint16, flags []string) map[string]map[string]dbus.Variant {
		return map[string]map[string]dbus.Variant{ifaceChar: {
			"UUID": v(uuid), "Service": v(p.svc), "Flags": v(flags), "Handle": v(handle)}}
	}
	objs := objects{
		p.svc: {ifaceService: {"UUID": v(bluez.LockServiceUUID), "Primary": v(true),
			"Includes": v([]dbus.ObjectPath{}), "Handle": v(ServiceHandle)}},
		p.inbox:  chr(bluez.InboxUUID, ServiceHandle+2, []string{"write-without-response", "write"}),
		p.outbox: chr(bluez.OutboxUUID, ServiceHandle+4, []string{"notify"}),
		p.info:   chr(InfoUUID, ServiceHandle+7, []string{"read"}),
	}
	objs[p.outbox][ifaceChar]["Notifying"] = v(false)
	return objs
}

// advProps are the LEAdvertisement1 properties, with the lock's current
// payload.
func (p *Peripheral) advProps() map[string]dbus.Variant {
	props := map[string]dbus.Variant{
		"Type":         v("peripheral"),
		"ServiceUUIDs": v([]string{bluez.LockServiceUUID}),
		"ManufacturerData": v(map[uint16]dbus.Variant{
			bluez.TestCompanyID: v(Advertisement(p.opts.Lock, p.opts.Battery())),
		}),
	}
	if p.opts.LocalName != "" {
		props["LocalName"] = v(p.opts.LocalName)
	}
	return props
}

func (p *Peripheral) propsOf(path dbus.ObjectPath, iface string) (map[string]dbus.Variant, bool) {
	if path == p.adv && iface == ifaceAdv {
		return p.advProps(), true
	}
	ifs, ok := p.gattObjects()[path]
	if !ok {
		return nil, false
	}
	props, ok := ifs[iface]
	return props, ok
}

func (p *Peripheral) export() error {
	exp := func(h any, path dbus.ObjectPath, iface string) error {
		if err := p.conn.Export(h, path, iface); err != nil {
			return fmt.Errorf("peripheral: exporting %s at %s: %w", iface, path, err)
		}
		return nil
	}
	if err := exp(omHandler{p}, p.app, ifaceOM); err != nil {
		return err
	}
	for _, path := range []dbus.ObjectPath{p.svc, p.inbox, p.outbox, p.info, p.adv} {
		if err := exp(propsHandler{p, path}, path, ifaceProps); err != nil {
			return err
		}
	}
	for _, path := range []dbus.ObjectPath{p.inbox, p.outbox, p.info} {
		if err := exp(charHandler{p, path}, path, ifaceChar); err != nil {
			return err
		}
	}
	if err := exp(advHandler{p}, p.adv, ifaceAdv); err != nil {
		return err
	}
	return exp(agentHandler{p}, p.agent, bluez.IfaceAgent)
}

func (p *Peripheral) unexport() {
	_ = p.conn.Export(nil, p.app, ifaceOM)
	for _, path := range []dbus.ObjectPath{p.svc, p.inbox, p.outbox, p.info, p.adv} {
		_ = p.conn.Export(nil, path, ifaceProps)
	}
	for _, path := range []dbus.ObjectPath{p.inbox, p.outbox, p.info} {
		_ = p.conn.Export(nil, path, ifaceChar)
	}
	_ = p.conn.Export(nil, p.adv, ifaceAdv)
	_ = p.conn.Export(nil, p.agent, bluez.IfaceAgent)
}

func bluezError(name, msg string) *dbus.Error {
	return dbus.NewError("org.bluez.Error."+name, []any{msg})
}

type omHandler struct{ p *Peripheral }

func (h omHandler) GetManagedObjects() (map[dbus.ObjectPath]map[string]map[string]dbus.Variant, *dbus.Error) {
	return h.p.gattObjects(), nil
}

type propsHandler struct {
	p    *Peripheral
	path dbus.ObjectPath
}

func (h propsHandler) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	props, ok := h.p.propsOf(h.path, iface)
	if !ok {
		return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.InvalidArgs", []any{"no interface " + iface})
	}
	val, ok := props[name]
	if !ok {
		return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.InvalidArgs", []any{"no property " + name})
	}
	return val, nil
}

func (h propsHandler) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	props, ok := h.p.propsOf(h.path, iface)
	if !ok {
		return map[string]dbus.Variant{}, nil
	}
	return props, nil
}

func (h propsHandler) Set(iface, name string, _ dbus.Variant) *dbus.Error {
	return dbus.NewError("org.freedesktop.DBus.Error.PropertyReadOnly", []any{name + " is read-only"})
}

type advHandler struct{ p *Peripheral }

// Release: bluetoothd dropped the advertisement (it is registered again at
// the next tick).
func (h advHandler) Release() *dbus.Error {
	h.p.mu.Lock()
	h.p.advOn = false
	h.p.mu.Unlock()
	return nil
}

type charHandler struct {
	p    *Peripheral
	path dbus.ObjectPath
}

func (h charHandler) ReadValue(opts map[string]dbus.Variant) ([]byte, *dbus.Error) {
	if h.path != h.p.info {
		return nil, bluezError("NotPermitted", "Read not permitted")
	}
	off, _ := opts["offset"].Value().(uint16)
	if int(off) > len(infoValue) {
		return nil, bluezError("InvalidOffset", "Invalid offset")
	}
	return append([]byte(nil), infoValue[off:]...), nil
}

// WriteValue delivers an Inbox write to the lock's connection with the
// writing device (options "device", "mtu").
func (h charHandler) WriteValue(value []byte, opts map[string]dbus.Variant) *dbus.Error {
	p := h.p
	if h.path != p.inbox {
		return bluezError("NotPermitted", "Write not permitted")
	}
	dev, _ := opts["device"].Value().(dbus.ObjectPath)
	mtu, _ := opts["mtu"].Value().(uint16)
	s, err := p.sessionFor(dev, int(mtu))
	if err != nil {
		p.log.Debug("write refused", "device", string(dev), "err", err)
		return bluezError("Failed", err.Error())
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.CallTimeout)
	defer cancel()
	if err := s.link.Deliver(ctx, value); err != nil {
		if errors.Is(err, locklink.ErrTooLong) {
			return bluezError("InvalidValueLength", "Invalid Length")
		}
		return bluezError("Failed", err.Error())
	}
	p.stats.writes.Add(1)
	return nil
}

func (h charHandler) StartNotify() *dbus.Error {
	if h.path != h.p.outbox {
		return bluezError("NotSupported", "Operation is not supported")
	}
	return nil
}

func (h charHandler) StopNotify() *dbus.Error {
	if h.path != h.p.outbox {
		return bluezError("NotSupported", "Operation is not supported")
	}
	return nil
}

// agentHandler is the default Agent1, for the lock's side of pairings.
type agentHandler struct{ p *Peripheral }

func rejected(what string) *dbus.Error {
	return dbus.NewError("org.bluez.Error.Rejected", []any{what})
}

func (h agentHandler) count() { h.p.stats.agentRequests.Add(1) }

func (h agentHandler) Release() *dbus.Error { return nil }

func (h agentHandler) RequestPinCode(dbus.ObjectPath) (string, *dbus.Error) {
	h.count()
	return "", rejected("PIN codes are not supported")
}

func (h agentHandler) DisplayPinCode(dbus.ObjectPath, string) *dbus.Error {
	h.count()
	return rejected("PIN codes are not supported")
}

// RequestPasskey answers with the passkey of the bond window open for the
// device, or Rejected. An earlier pairing of the same device that got a
// passkey and never completed failed.
func (h agentHandler) RequestPasskey(dev dbus.ObjectPath) (uint32, *dbus.Error) {
	p := h.p.opts.Group.forDevice(dev, h.p)
	p.stats.agentRequests.Add(1)
	addr := addressOf(dev)
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, pending := p.pending[addr]; pending {
		delete(p.pending, addr)
		p.failedLocked(addr, "asked for a passkey again")
	}
	pk, ok := p.opts.Lock.BondPasskey(addr)
	if addr == "" || !ok {
		p.log.Info("RequestPasskey rejected: no bond window for this peer", "peer", addr)
		return 0, rejected("no bond window is open for this device")
	}
	p.pending[addr] = pk
	p.stats.passkeysGiven.Add(1)
	p.log.Debug("RequestPasskey answered", "peer", addr)
	return pk, nil
}

func (h agentHandler) DisplayPasskey(dbus.ObjectPath, uint32, uint16) *dbus.Error {
	h.count()
	return nil
}

func (h agentHandler) RequestConfirmation(dbus.ObjectPath, uint32) *dbus.Error {
	h.count()
	return rejected("numeric comparison is not supported")
}

func (h agentHandler) RequestAuthorization(dbus.ObjectPath) *dbus.Error {
	h.count()
	return rejected("pairing is allowed only in a bond window, with a passkey")
}

func (h agentHandler) AuthorizeService(dbus.ObjectPath, string) *dbus.Error {
	h.count()
	return rejected("service authorization is not supported")
}

func (h agentHandler) Cancel() *dbus.Error { return nil }
