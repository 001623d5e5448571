package emulator

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

func TestManagedObjectsHaveBlueZTypes(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{})
	tl := w.lock(1)
	if err := e.AddLock(tl.l, "C0:FF:EE:00:00:01", LockOptions{}); err != nil {
		t.Fatal(err)
	}
	w.discover(ServiceUUID)
	dev := e.DevicePath("C0:FF:EE:00:00:01")
	if dev != "/org/bluez/hci0/dev_C0_FF_EE_00_00_01" {
		t.Fatalf("device path %s", dev)
	}
	w.sigs.wait(t, "InterfacesAdded", func(s *dbus.Signal) bool {
		return s.Name == ifaceOM+".InterfacesAdded" && s.Path == "/" && s.Body[0] == dev
	})
	objs := w.objects()
	if _, ok := objs["/org/bluez"][ifaceAgentMgr]; !ok {
		t.Fatal("no AgentManager1 at /org/bluez")
	}
	check := func(path dbus.ObjectPath, iface string, want map[string]string) {
		t.Helper()
		ps, ok := objs[path][iface]
		if !ok {
			t.Fatalf("no %s at %s", iface, path)
		}
		for k, sig := range want {
			x, ok := ps[k]
			if !ok {
				t.Errorf("%s.%s missing", iface, k)
				continue
			}
			if got := x.Signature().String(); got != sig {
				t.Errorf("%s.%s has signature %q, want %q", iface, k, got, sig)
			}
		}
		for _, std := range standard {
			if _, ok := objs[path][std]; !ok {
				t.Errorf("%s lacks %s", path, std)
			}
		}
	}
	check("/org/bluez/hci0", ifaceAdapter, map[string]string{"Address": "s", "AddressType": "s", "Name": "s",
		"Alias": "s", "Class": "u", "Powered": "b", "Discoverable": "b", "Pairable": "b", "Discovering": "b",
		"UUIDs": "as", "Modalias": "s", "Roles": "as", "DiscoverableTimeout": "u"})
	check(dev, ifaceDevice, map[string]string{"Address": "s", "AddressType": "s", "Name": "s", "Alias": "s",
		"Paired": "b", "Bonded": "b", "Trusted": "b", "Blocked": "b", "Connected": "b", "ServicesResolved": "b",
		"LegacyPairing": "b", "RSSI": "n", "ManufacturerData": "a{qv}", "UUIDs": "as",
		"Adapter": "o"})
	// What real bluetoothd 5.66 did not show in the real-BlueZ tier
	// (bluez/internal/realbluez TestDifferential) must not appear.
	for p, names := range map[dbus.ObjectPath][]string{
		"/org/bluez/hci0": {"ExperimentalFeatures"},
		dev:               {"AdvertisingFlags", "TxPower"},
	} {
		for _, n := range names {
			for iface, ps := range objs[p] {
				if _, ok := ps[n]; ok {
					t.Errorf("%s %s.%s: real BlueZ 5.66 has none", p, iface, n)
				}
			}
		}
	}
	md := objs[dev][ifaceDevice]["ManufacturerData"].Value().(map[uint16]dbus.Variant)
	if sig := md[0xFFFF].Signature().String(); sig != "ay" {
		t.Fatalf("ManufacturerData[0xFFFF] is %q", sig)
	}
	if at := objs[dev][ifaceDevice]["AddressType"].Value(); at != "random" {
		t.Fatalf("AddressType %v", at)
	}

	// Properties.Get and Introspect agree.
	var rssi dbus.Variant
	if err := w.call(dev, ifaceProps+".Get", ifaceDevice, "RSSI").Store(&rssi); err != nil || rssi.Signature().String() != "n" {
		t.Fatalf("Get RSSI: %v %v", rssi, err)
	}
	wantErr(t, w.call(dev, ifaceProps+".Get", ifaceDevice, "Nope").Err, "org.freedesktop.DBus.Error.InvalidArgs")
	wantErr(t, w.call(dev, ifaceProps+".Set", ifaceDevice, "RSSI", v(int16(1))).Err, "org.freedesktop.DBus.Error.PropertyReadOnly")
	var xml string
	if err := w.call("/org/bluez/hci0", ifaceIntro+".Introspect").Store(&xml); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<interface name="org.bluez.Adapter1">`, `<method name="StartDiscovery">`,
		`<property name="Powered" type="b" access="readwrite">`, `<node name="dev_C0_FF_EE_00_00_01"/>`} {
		if !strings.Contains(xml, want) {
			t.Errorf("introspection lacks %s", want)
		}
	}
	// A method of an interface the object lacks is refused as gdbus does.
	wantErr(t, w.call("/org/bluez/hci0", ifaceDevice+".Connect").Err, "org.freedesktop.DBus.Error.UnknownMethod")
}

func TestDiscoveryShowsManyLocksWithTheirPayload(t *testing.T) {
	const n = 200
	w := newWorld(t)
	e := w.start(Options{})
	ids := map[dbus.ObjectPath][8]byte{}
	for i := range n {
		tl := w.lock(uint64(0x4c4b000000000000 + i))
		a := addrOf(i)
		if err := e.AddLock(tl.l, a, LockOptions{Battery: func() uint8 { return 15 }}); err != nil {
			t.Fatal(err)
		}
		ids[e.DevicePath(a)] = tl.l.ID()
	}
	// A filter on another service shows nothing.
	w.discover("0000180f-0000-1000-8000-00805f9b34fb")
	waitTicks(t, e, 3)
	if d := w.devices(); len(d) != 0 {
		t.Fatalf("%d devices for another service", len(d))
	}
	w.mustCall("/org/bluez/hci0", ifaceAdapter+".SetDiscoveryFilter",
		map[string]dbus.Variant{"UUIDs": v([]string{strings.ToUpper(ServiceUUID)}), "Transport": v("le")})
	var devs map[dbus.ObjectPath]map[string]dbus.Variant
	waitFor(t, "200 devices", func() bool { devs = w.devices(); return len(devs) == n })
	for p, d := range devs {
		md := d["ManufacturerData"].Value().(map[uint16]dbus.Variant)
		pl, _ := md[CompanyID].Value().([]byte)
		id := ids[p]
		if len(pl) != 11 || pl[0] != 1 || !bytes.Equal(pl[1:9], id[:]) || pl[10] != 15 || pl[9]&8 == 0 {
			t.Fatalf("%s: payload % x, lock ID % x", p, pl, id)
		}
		if us := d["UUIDs"].Value().([]string); len(us) != 1 || us[0] != ServiceUUID {
			t.Fatalf("UUIDs %v", us)
		}
	}
}

func TestDiscoveryErrors(t *testing.T) {
	w := newWorld(t)
	w.start(Options{Unpowered: true})
	const a = dbus.ObjectPath("/org/bluez/hci0")
	wantErr(t, w.call(a, ifaceAdapter+".StartDiscovery").Err, "org.bluez.Error.NotReady")
	wantErr(t, w.call(a, ifaceProps+".Set", ifaceAdapter, "Powered", v("yes")).Err, "org.freedesktop.DBus.Error.InvalidArgs")
	w.mustCall(a, ifaceProps+".Set", ifaceAdapter, "Powered", v(true))
	wantErr(t, w.call(a, ifaceAdapter+".SetDiscoveryFilter", map[string]dbus.Variant{"Bogus": v(true)}).Err,
		"org.bluez.Error.InvalidArguments")
	wantErr(t, w.call(a, ifaceAdapter+".SetDiscoveryFilter", map[string]dbus.Variant{"RSSI": v(int32(-70))}).Err,
		"org.bluez.Error.InvalidArguments")
	w.mustCall(a, ifaceAdapter+".SetDiscoveryFilter", map[string]dbus.Variant{"RSSI": v(int16(-90)), "DuplicateData": v(false)})
	w.mustCall(a, ifaceAdapter+".StartDiscovery")
	wantErr(t, w.call(a, ifaceAdapter+".StartDiscovery").Err, "org.bluez.Error.InProgress")
	// Another client may discover at the same time.
	other := w.bus.Conn(t)
	if err := other.Object("org.bluez", a).CallWithContext(ctxT(t), ifaceAdapter+".StartDiscovery", 0).Err; err != nil {
		t.Fatal(err)
	}
	w.mustCall(a, ifaceAdapter+".StopDiscovery")
	wantErr(t, w.call(a, ifaceAdapter+".StopDiscovery").Err, "org.bluez.Error.Failed")
	var on bool
	if err := w.call(a, ifaceProps+".Get", ifaceAdapter, "Discovering").Store(&on); err != nil || !on {
		t.Fatalf("Discovering %v %v while another client discovers", on, err)
	}
	// That client leaving the bus ends its discovery.
	_ = other.Close()
	w.sigs.wait(t, "Discovering false", func(s *dbus.Signal) bool {
		return isPropsChanged(s, a, ifaceAdapter, "Discovering") && s.Body[1].(map[string]dbus.Variant)["Discovering"].Value() == false
	})
	var filters []string
	if err := w.call(a, ifaceAdapter+".GetDiscoveryFilters").Store(&filters); err != nil || len(filters) == 0 {
		t.Fatalf("GetDiscoveryFilters %v %v", filters, err)
	}
	wantErr(t, w.call(a, ifaceAdapter+".RemoveDevice", dbus.ObjectPath("/org/bluez/hci0/dev_00_00_00_00_00_00")).Err,
		"org.bluez.Error.DoesNotExist")
}

func TestRSSIChangesAndLockLeavesRange(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{Seed: 7, AwayTimeout: 200 * time.Millisecond})
	tl := w.lock(2)
	const addr = "C0:FF:EE:00:00:02"
	if err := e.AddLock(tl.l, addr, LockOptions{RSSI: -70, Jitter: 8}); err != nil {
		t.Fatal(err)
	}
	w.discover()
	dev := e.DevicePath(addr)
	s := w.sigs.wait(t, "RSSI PropertiesChanged", func(s *dbus.Signal) bool {
		return isPropsChanged(s, dev, ifaceDevice, "RSSI")
	})
	r := s.Body[1].(map[string]dbus.Variant)["RSSI"].Value().(int16)
	if r < -78 || r > -62 {
		t.Fatalf("RSSI %d outside -70±8", r)
	}
	if err := e.RemoveLock(addr); err != nil {
		t.Fatal(err)
	}
	if err := e.RemoveLock(addr); !errors.Is(err, ErrNoSuchLock) {
		t.Fatalf("second RemoveLock: %v", err)
	}
	s = w.sigs.wait(t, "InterfacesRemoved", func(s *dbus.Signal) bool {
		return s.Name == ifaceOM+".InterfacesRemoved" && s.Body[0] == dev
	})
	if names := s.Body[1].([]string); !strings.Contains(strings.Join(names, ","), ifaceDevice) {
		t.Fatalf("removed %v", names)
	}
	if err := e.AddLock(tl.l, "bad", LockOptions{}); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("bad address: %v", err)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	w := newWorld(t)
	tl := w.lock(3)
	runtime.GC()
	before := runtime.NumGoroutine()
	e, err := Start(context.Background(), Options{Addr: w.bus.Addr, RadioInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.AddLock(tl.l, "C0:FF:EE:00:00:03", LockOptions{}); err != nil {
		t.Fatal(err)
	}
	w.discover()
	dev := e.DevicePath("C0:FF:EE:00:00:03")
	waitFor(t, "device", func() bool { _, ok := w.devices()[dev]; return ok })
	w.connect(dev)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	settleGoroutines(t, before)
	// The name is free again.
	e2, err := Start(context.Background(), Options{Addr: w.bus.Addr})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(context.Background(), Options{Addr: w.bus.Addr}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("second owner: %v", err)
	}
	_ = e2.Close()
	settleGoroutines(t, before)
}

func TestThousandsOfLocksWithoutAGoroutineEach(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 locks")
	}
	const n = 2000
	w := newWorld(t)
	e := w.start(Options{RadioInterval: 50 * time.Millisecond})
	tl := w.lock(1) // one lock behind many addresses: the radio does not care
	runtime.GC()
	before := runtime.NumGoroutine()
	for i := range n {
		if err := e.AddLock(tl.l, addrOf(i), LockOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	w.discover(ServiceUUID)
	// Counted inside: a GetManagedObjects of 2,000 devices every 10 ms
	// under -race on a loaded machine outlasted its 20 s deadline.
	waitFor(t, "2000 devices", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.devices) == n
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	if err := w.client.Object("org.bluez", "/").CallWithContext(ctx, ifaceOM+".GetManagedObjects", 0).Store(&objs); err != nil {
		t.Fatal(err)
	}
	devs := 0
	for _, in := range objs {
		if _, ok := in[ifaceDevice]; ok {
			devs++
		}
	}
	if devs != n {
		t.Fatalf("%d devices on the bus, want %d", devs, n)
	}
	if g := runtime.NumGoroutine(); g > before+5 {
		t.Fatalf("%d goroutines for %d devices (was %d)", g, n, before)
	}
}

func TestSeedMakesTheRadioReproducible(t *testing.T) {
	run := func(seed uint64) []int16 {
		w := newWorld(t)
		e := w.start(Options{Seed: seed, RadioInterval: time.Hour})
		for i := range 5 {
			if err := e.AddLock(w.lock(uint64(40+i)).l, addrOf(i), LockOptions{Jitter: 20}); err != nil {
				t.Fatal(err)
			}
		}
		e.mu.Lock()
		e.discovery["test"] = nil
		e.mu.Unlock()
		var out []int16
		for range 4 {
			e.tick(time.Now())
			e.mu.Lock()
			for i := range 5 {
				x, _ := e.prop(e.DevicePath(addrOf(i)), ifaceDevice, "RSSI")
				out = append(out, x.Value().(int16))
			}
			e.mu.Unlock()
		}
		return out
	}
	a, b, c := run(1), run(1), run(2)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different radio:\n%v\n%v", a, b)
	}
	if slices.Equal(a, c) {
		t.Fatalf("seeds 1 and 2 gave the same radio %v", a)
	}
}

// TestOutlivesStartContext: Start's context bounds the start only; the
// emulator keeps org.bluez after it ends, until Close (a Restart called
// from inside a short-lived context must not die with it).
func TestOutlivesStartContext(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	e, err := Start(ctx, Options{Addr: w.bus.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cancel()
	time.Sleep(50 * time.Millisecond) // godbus would close a WithContext connection by now
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	if err := w.client.Object(busName, "/").CallWithContext(ctxT(t), ifaceOM+".GetManagedObjects", 0).Store(&objs); err != nil {
		t.Fatalf("after Start's context ended: %v", err)
	}
	if _, err := Start(ctx, Options{Addr: w.bus.Addr}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with an ended context: %v", err)
	}
}
