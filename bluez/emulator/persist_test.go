package emulator

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// gattTrace renders the signals about dev and the objects below it, in
// order: "+rel" and "-rel" for InterfacesAdded and InterfacesRemoved,
// "rel Prop=value" for each changed property (the radio's RSSI and
// ManufacturerData left out). rel is the path relative to dev ("" for dev).
func gattTrace(sigs []*dbus.Signal, dev dbus.ObjectPath) []string {
	rel := func(p dbus.ObjectPath) (string, bool) {
		r, ok := strings.CutPrefix(string(p), string(dev))
		return r, ok && (r == "" || r[0] == '/')
	}
	var out []string
	for _, s := range sigs {
		switch s.Name {
		case ifaceOM + ".InterfacesAdded", ifaceOM + ".InterfacesRemoved":
			if r, ok := rel(s.Body[0].(dbus.ObjectPath)); ok {
				sign := "+"
				if strings.HasSuffix(s.Name, "Removed") {
					sign = "-"
				}
				out = append(out, sign+r)
			}
		case ifaceProps + ".PropertiesChanged":
			r, ok := rel(s.Path)
			if !ok {
				continue
			}
			ch := s.Body[1].(map[string]dbus.Variant)
			for _, k := range slices.Sorted(maps.Keys(ch)) {
				if k == "RSSI" || k == "ManufacturerData" {
					continue
				}
				out = append(out, fmt.Sprintf("%s %s=%v", r, k, ch[k].Value()))
			}
		}
	}
	return out
}

// tracer checks the signals about one device against a growing list of
// expectations: every step adds the signals it must cause, and the trace
// since the tracer started must begin with the list. (Signals reach the
// watcher asynchronously, so no step marks its own start.)
type tracer struct {
	t    *testing.T
	w    *world
	dev  dbus.ObjectPath
	mark int
	want []string
}

// newTracer starts once the device's own InterfacesAdded has arrived.
func newTracer(t *testing.T, w *world, dev dbus.ObjectPath) *tracer {
	t.Helper()
	w.sigs.wait(t, "device added", func(s *dbus.Signal) bool {
		return s.Name == ifaceOM+".InterfacesAdded" && s.Body[0] == dev
	})
	return &tracer{t: t, w: w, dev: dev, mark: w.sigs.mark()}
}

// expect waits for the signals of a step and checks the whole trace.
func (tr *tracer) expect(step string, more ...string) {
	tr.t.Helper()
	tr.want = append(tr.want, more...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := gattTrace(tr.w.sigs.since(tr.mark), tr.dev)
		if len(got) >= len(tr.want) || time.Now().After(deadline) {
			// Later signals (a radio tick's rediscovery) are left to the
			// next step.
			if !slices.Equal(got[:min(len(got), len(tr.want))], tr.want) {
				tr.t.Fatalf("after %s: signals\n%q\nwant\n%q", step, got, tr.want)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The GATT objects in unregister_service's order, then the device.
var removedWithDevice = []string{"-/service000a/char000b", "-/service000a/char000d/desc000f",
	"-/service000a/char000d", "-/service000a/char0010", "-/service000a", "-"}

// BlueZ 5.66 with [GATT] Cache = always (the default) keeps a device's
// GATT objects across connections: exported once, by the first
// connection; gone only with the device.
func TestGATTObjectsPersistAcrossConnections(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{MTU: 100})
	const addr = "C0:FF:EE:00:00:70"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	svc := dev + "/service000a"
	inbox, outbox, ccc, info := svc+"/char000b", svc+"/char000d", svc+"/char000d/desc000f", svc+"/char0010"
	tr := newTracer(t, w, dev)

	w.connect(dev)
	tr.expect("first Connect", " Connected=true", "+/service000a", "+/service000a/char000b", "+/service000a/char000d",
		"+/service000a/char000d/desc000f", "+/service000a/char0010", " ServicesResolved=true")
	w.mustCall(outbox, ifaceChar+".StartNotify")
	w.mustCall(info, ifaceChar+".ReadValue", map[string]dbus.Variant{})
	tr.expect("StartNotify, ReadValue", "/service000a/char000d Notifying=true", "/service000a/char0010 Value=[1 8 0 0]")

	// Disconnect: ServicesResolved false, Connected false, nothing else.
	// Notifying stays true (src/gatt-client.c btd_gatt_client_disconnected
	// clears the registrations, not chrc->notifying) and MTU stops
	// existing without a signal (characteristic_mtu_exists).
	w.mustCall(dev, ifaceDevice+".Disconnect")
	tr.expect("Disconnect", " ServicesResolved=false", " Connected=false")
	objs := w.objects()
	for _, p := range []dbus.ObjectPath{svc, inbox, outbox, ccc, info} {
		if _, ok := objs[p]; !ok {
			t.Fatalf("%s gone after Disconnect", p)
		}
	}
	for _, p := range []dbus.ObjectPath{inbox, outbox, info} {
		if _, ok := objs[p][ifaceChar]["MTU"]; ok {
			t.Errorf("%s has an MTU while disconnected", p)
		}
	}
	wantErr(t, w.call(inbox, ifaceProps+".Get", ifaceChar, "MTU").Err, "org.freedesktop.DBus.Error.InvalidArgs")
	if x := objs[outbox][ifaceChar]["Notifying"]; x.Value() != true {
		t.Fatalf("Notifying %v after Disconnect", x)
	}
	if x := objs[info][ifaceChar]["Value"].Value(); !slices.Equal(x.([]byte), infoValue) {
		t.Fatalf("cached Info Value % x", x)
	}

	// Calls while disconnected: src/gatt-client.c checks the connection
	// first, before offsets, flags or lengths.
	wantNotConnected(t, w.call(info, ifaceChar+".ReadValue", map[string]dbus.Variant{"offset": v("bad")}).Err)
	wantNotConnected(t, w.call(inbox, ifaceChar+".ReadValue", map[string]dbus.Variant{}).Err)
	wantNotConnected(t, w.call(inbox, ifaceChar+".WriteValue", make([]byte, 500), map[string]dbus.Variant{}).Err)
	wantNotConnected(t, w.call(info, ifaceChar+".WriteValue", []byte{0}, map[string]dbus.Variant{}).Err)
	wantNotConnected(t, w.call(ccc, ifaceDesc+".ReadValue", map[string]dbus.Variant{}).Err)
	// The caller's kept session is not registered: InProgress
	// (characteristic_start_notify, client->notify_id == 0).
	err := w.call(outbox, ifaceChar+".StartNotify").Err
	wantErr(t, err, "org.bluez.Error.InProgress")
	if de := err.(dbus.Error); len(de.Body) != 1 || de.Body[0] != "In Progress" {
		t.Fatalf("StartNotify message %v", de.Body)
	}
	wantErr(t, w.call(inbox, ifaceChar+".StartNotify").Err, "org.bluez.Error.NotSupported")

	// Reconnect: the same objects, no InterfacesAdded; MTU back; the
	// session registered again, Notifying unchanged.
	w.connect(dev)
	tr.expect("second Connect", " Connected=true", " ServicesResolved=true")
	objs = w.objects()
	for _, p := range []dbus.ObjectPath{inbox, outbox, info} {
		if x := objs[p][ifaceChar]["MTU"]; x.Value() != uint16(100) {
			t.Errorf("%s MTU %v after reconnecting", p, x)
		}
	}
	w.mustCall(outbox, ifaceChar+".StartNotify") // registered again: a plain return
	w.mustCall(inbox, ifaceChar+".WriteValue", []byte{0}, map[string]dbus.Variant{"type": v("command")})

	// RemoveDevice on a connected device: disconnected first (src/adapter.c
	// remove_device → device_request_disconnect), then removed with its
	// GATT objects first, in unregister_service's order.
	w.mustCall(e.AdapterPath(), ifaceAdapter+".RemoveDevice", dev)
	tr.expect("RemoveDevice", append([]string{" ServicesResolved=false", " Connected=false"}, removedWithDevice...)...)
	wantErr(t, w.call(inbox, ifaceChar+".WriteValue", []byte{0}, map[string]dbus.Variant{}).Err,
		"org.freedesktop.DBus.Error.UnknownObject")

	// A device object made anew exports them again on its first
	// connection.
	tr.expect("rediscovery", "+")
	w.connect(dev)
	tr.expect("Connect after RemoveDevice", " Connected=true", "+/service000a", "+/service000a/char000b", "+/service000a/char000d",
		"+/service000a/char000d/desc000f", "+/service000a/char0010", " ServicesResolved=true")
}

// A disconnected device's GATT objects go with it whatever removes it:
// RemoveDevice, the away timeout (src/device.c device_disappeared →
// btd_adapter_remove_device), RemoveAdapter.
func TestGATTObjectsGoWithTheDevice(t *testing.T) {
	w := newWorld(t)
	const a1, a2 = "C0:FF:EE:00:00:71", "C0:FF:EE:00:00:72"
	e := w.start(Options{})
	hostAndDiscover(t, w, e, a1, a2)
	d1, d2 := e.DevicePath(a1), e.DevicePath(a2)
	t1, t2 := newTracer(t, w, d1), newTracer(t, w, d2)
	session := []string{" Connected=true", "+/service000a", "+/service000a/char000b", "+/service000a/char000d",
		"+/service000a/char000d/desc000f", "+/service000a/char0010", " ServicesResolved=true",
		" ServicesResolved=false", " Connected=false"}
	for _, d := range []dbus.ObjectPath{d1, d2} {
		w.connect(d)
		w.mustCall(d, ifaceDevice+".Disconnect")
	}
	t1.expect("connect, disconnect", session...)
	t2.expect("connect, disconnect", session...)

	w.mustCall(e.AdapterPath(), ifaceAdapter+".RemoveDevice", d1)
	t1.expect("RemoveDevice", removedWithDevice...)

	// The away timeout: only for temporary devices, which Connect never
	// leaves; made temporary again here as RemoveDevice does first
	// (btd_device_set_temporary).
	e.mu.Lock()
	delete(e.stored, a2)
	e.mu.Unlock()
	if err := e.LeaveRange(a2); err != nil {
		t.Fatal(err)
	}
	e.tick(time.Now().Add(time.Hour))
	t2.expect("away timeout", removedWithDevice...)

	// RemoveAdapter, with a connected and a disconnected device: no
	// property changes (src/adapter.c adapter_remove → device_remove).
	if err := e.EnterRange(a2); err != nil {
		t.Fatal(err)
	}
	t1.expect("rediscovery", "+")
	t2.expect("rediscovery", "+")
	w.connect(d1)
	w.connect(d2)
	w.mustCall(d2, ifaceDevice+".Disconnect")
	t1.expect("connect", session[:7]...)
	t2.expect("connect, disconnect", session...)
	if err := e.RemoveAdapter(); err != nil {
		t.Fatal(err)
	}
	t1.expect("RemoveAdapter", removedWithDevice...)
	t2.expect("RemoveAdapter", removedWithDevice...)
}

// Notify sessions belong to the characteristic, not the connection
// (src/gatt-client.c chrc->notify_clients): they survive a disconnect
// and the next connection registers them again.
func TestNotifySessionsAcrossConnections(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{})
	const addr = "C0:FF:EE:00:00:73"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	outbox := dev + "/service000a/char000d"
	tr := newTracer(t, w, dev)
	w.connect(dev)
	w.mustCall(outbox, ifaceChar+".StartNotify")
	w.mustCall(dev, ifaceDevice+".Disconnect")
	tr.expect("connect, StartNotify, disconnect", " Connected=true", "+/service000a", "+/service000a/char000b",
		"+/service000a/char000d", "+/service000a/char000d/desc000f", "+/service000a/char0010", " ServicesResolved=true",
		"/service000a/char000d Notifying=true", " ServicesResolved=false", " Connected=false")

	// StopNotify needs no connection; with no session registered,
	// update_notifying turns Notifying false.
	w.mustCall(outbox, ifaceChar+".StopNotify")
	tr.expect("StopNotify while disconnected", "/service000a/char000d Notifying=false")
	err := w.call(outbox, ifaceChar+".StopNotify").Err
	wantErr(t, err, "org.bluez.Error.Failed")
	if de := err.(dbus.Error); de.Body[0] != "No notify session started" {
		t.Fatalf("StopNotify message %v", de.Body)
	}
	// StopNotify checks no flags (characteristic_stop_notify).
	wantErr(t, w.call(dev+"/service000a/char000b", ifaceChar+".StopNotify").Err, "org.bluez.Error.Failed")

	// StartNotify while disconnected succeeds ("If the device is
	// currently not connected, return success") and changes nothing
	// until a connection registers it: Notifying true before
	// ServicesResolved (btd_gatt_client_connected precedes ready).
	other := w.bus.Conn(t)
	if err := other.Object("org.bluez", outbox).CallWithContext(ctxT(t), ifaceChar+".StartNotify", 0).Err; err != nil {
		t.Fatal(err)
	}
	w.connect(dev)
	tr.expect("Connect with a pending session", " Connected=true", "/service000a/char000d Notifying=true", " ServicesResolved=true")

	// The lock's notifications reach the bus again.
	e.mu.Lock()
	c := e.devices[addr].conn
	e.mu.Unlock()
	if err := c.lk.WritePacket(ctxT(t), []byte{7}); err != nil {
		t.Fatal(err)
	}
	tr.expect("notification", "/service000a/char000d Value=[7]")

	// A session's owner leaving the bus ends it.
	_ = other.Close()
	tr.expect("owner left", "/service000a/char000d Notifying=false")
}
