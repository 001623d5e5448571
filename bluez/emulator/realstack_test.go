package emulator

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// The tests of this file hold the emulator to what real BlueZ 5.66 did on
// the real-BlueZ tier (bluez/internal/realbluez TestDifferential, issue
// 13): each names the fact of the differential test it matches.

// pairingWorld is a world with an agent and one lock, discovered and
// connected.
func pairingWorld(t *testing.T, o Options) (*world, *Emulator, dbus.ObjectPath, *testAgent) {
	t.Helper()
	w := newWorld(t)
	e := w.start(o)
	const addr = "C0:FF:EE:00:00:61"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	agent := &testAgent{released: make(chan struct{})}
	if err := w.client.Export(agent, "/test/agent", ifaceAgent); err != nil {
		t.Fatal(err)
	}
	w.mustCall("/org/bluez", ifaceAgentMgr+".RegisterAgent", dbus.ObjectPath("/test/agent"), "KeyboardOnly")
	w.connect(dev)
	return w, e, dev, agent
}

// devChanges are the Device1 changes of dev the client received, in
// order, as "Name=value" (the watched properties only).
func devChanges(w *world, dev dbus.ObjectPath, names ...string) []string {
	w.sigs.mu.Lock()
	defer w.sigs.mu.Unlock()
	var out []string
	for _, s := range w.sigs.sigs {
		for _, n := range names {
			if isPropsChanged(s, dev, ifaceDevice, n) {
				ch := s.Body[1].(map[string]dbus.Variant)
				out = append(out, n+"="+ch[n].String())
			}
		}
	}
	return out
}

// TestFailedPairingDropsLinkAndForgetsDevice: after a failed pairing real
// BlueZ drops the link (differential fact link_dropped) and the device is
// temporary again, so a restarted bluetoothd does not load it
// (stored_device false); a device only connected to is loaded.
func TestFailedPairingDropsLinkAndForgetsDevice(t *testing.T) {
	w, e, dev, agent := pairingWorld(t, Options{PairFailureStall: -1})
	agent.passkey.Store(111111) // no bond window: the lock refuses it
	wantErr(t, w.call(dev, ifaceDevice+".Pair").Err, "org.bluez.Error.AuthenticationFailed")
	waitFor(t, "link dropped", func() bool { return !connected(w, dev) })
	got := devChanges(w, dev, "Connected", "ServicesResolved")
	want := []string{"Connected=true", "ServicesResolved=true", "ServicesResolved=false", "Connected=false"}
	if !slices.Equal(got, want) {
		t.Fatalf("Device1 changes %v, want %v", got, want)
	}
	if len(e.Bonds()) != 0 {
		t.Fatalf("bonds %v", e.Bonds())
	}
	// bluetoothd restarts: the device was made temporary again, so it is
	// not loaded; it comes back only with discovery.
	e2, err := e.Restart(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e2.Close() })
	if _, ok := w.devices()[dev]; ok {
		t.Fatal("the device of a failed pairing was loaded from storage after the restart")
	}

	// Without a failed pairing, a device a client connected to is stored
	// and loaded at the restart, without RSSI until it is seen again.
	w.discover(ServiceUUID)
	waitFor(t, "device", func() bool { _, ok := w.devices()[dev]; return ok })
	w.connect(dev)
	w.mustCall(dev, ifaceDevice+".Disconnect")
	e3, err := e2.Restart(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e3.Close() })
	d, ok := w.devices()[dev]
	if !ok {
		t.Fatal("a device connected to was not loaded from storage after the restart")
	}
	if _, has := d["RSSI"]; has {
		t.Fatalf("a device loaded from storage has RSSI: %v", d)
	}
}

// TestReconnectStallsAfterFailedPairing: after a failed pairing the next
// connection waits while bluetoothd resumes discovery
// (Options.PairFailureStall): a client that tries once with a short
// timeout fails; one that waits long enough connects.
func TestReconnectStallsAfterFailedPairing(t *testing.T) {
	const stall = 1500 * time.Millisecond
	w, _, dev, agent := pairingWorld(t, Options{PairFailureStall: stall})
	agent.passkey.Store(111111)
	failed := time.Now()
	wantErr(t, w.call(dev, ifaceDevice+".Pair").Err, "org.bluez.Error.AuthenticationFailed")
	waitFor(t, "link dropped", func() bool { return !connected(w, dev) })

	// One attempt with a short timeout, as ensureConnected did.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err := w.client.Object("org.bluez", dev).CallWithContext(ctx, ifaceDevice+".Connect", 0).Err
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect within 200 ms of a failed pairing: %v, want a timeout (the stall)", err)
	}
	// The attempt goes on in bluetoothd, as a real one does: the link
	// comes up once the stall has passed.
	waitFor(t, "connected after the stall", func() bool { return connected(w, dev) })
	if since := time.Since(failed); since < stall {
		t.Fatalf("connected %v after the failed pairing, before the stall of %v", since, stall)
	}
}

// TestMTUIsTheSmallerOfBothEnds: the ATT MTU is what the Exchange MTU
// settles, the smaller of the adapter's and the lock's (differential fact
// mtu: 517 between two BlueZ ends).
func TestMTUIsTheSmallerOfBothEnds(t *testing.T) {
	for _, c := range []struct {
		name            string
		adapter, lock   int
		want            uint16
		wantAddLockFail bool
	}{
		{"defaults: an nRF52832's 247", 0, 0, DefaultLockMTU, false},
		{"two BlueZ ends", 0, 517, 517, false},
		{"adapter smaller", 100, 517, 100, false},
		{"lock at the minimum", 0, 23, 23, false},
		{"lock MTU out of range", 0, 600, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			e := w.start(Options{MTU: c.adapter})
			const addr = "C0:FF:EE:00:00:62"
			err := e.AddLock(w.lock(62).l, addr, LockOptions{MTU: c.lock})
			if c.wantAddLockFail {
				if !errors.Is(err, ErrBadOptions) {
					t.Fatalf("AddLock with MTU %d: %v, want ErrBadOptions", c.lock, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			w.discover(ServiceUUID)
			dev := e.DevicePath(addr)
			waitFor(t, "device", func() bool { _, ok := w.devices()[dev]; return ok })
			w.connect(dev)
			inbox := dev + "/service000a/char000b"
			if got := w.objects()[inbox][ifaceChar]["MTU"].Value(); got != c.want {
				t.Fatalf("MTU %v, want %d", got, c.want)
			}
		})
	}
}

// TestConnectReturnsBeforeServicesResolved: Connected, Connect's reply
// and ServicesResolved come in this order, ResolveDelay apart (the
// differential fact signals: "Connected=true,reply,ServicesResolved=true"
// on real BlueZ, 0.15-0.55 s apart under the tier), on the first
// connection (service discovery) and on a reconnection of a bonded
// device (the GATT cache restore); in between GATT calls fail as on a
// disconnected device.
func TestConnectReturnsBeforeServicesResolved(t *testing.T) {
	const gap = 400 * time.Millisecond
	w := newWorld(t)
	e := w.start(Options{ResolveDelay: gap, Bonds: []string{"C0:FF:EE:00:00:63"}})
	const addr = "C0:FF:EE:00:00:63"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	inbox := dev + "/service000a/char000b"
	for round := 1; round <= 2; round++ {
		start := time.Now()
		call := w.mustCall(dev, ifaceDevice+".Connect")
		if r, _ := w.devices()[dev]["ServicesResolved"].Value().(bool); r {
			t.Fatalf("round %d: ServicesResolved already true when Connect returned", round)
		}
		// The client's GATT calls before ServicesResolved: the objects are
		// not there yet (first connection) or answer "Not connected".
		err := w.call(inbox, ifaceChar+".WriteValue", []byte{0}, map[string]dbus.Variant{}).Err
		want := "org.freedesktop.DBus.Error.UnknownObject"
		if round == 2 {
			want = "org.bluez.Error.Failed"
		}
		wantErr(t, err, want)
		resolved := w.sigs.wait(t, "ServicesResolved true", func(s *dbus.Signal) bool {
			if !isPropsChanged(s, dev, ifaceDevice, "ServicesResolved") || s.Sequence < call.ResponseSequence {
				return false
			}
			return s.Body[1].(map[string]dbus.Variant)["ServicesResolved"].Value() == true
		})
		if since := time.Since(start); since < gap {
			t.Fatalf("round %d: ServicesResolved %v after Connect, before the gap of %v", round, since, gap)
		}
		if resolved.Sequence < call.ResponseSequence {
			t.Fatalf("round %d: ServicesResolved before Connect's reply", round)
		}
		if got := w.objects()[inbox][ifaceChar]["MTU"].Value(); got != uint16(DefaultLockMTU) {
			t.Fatalf("round %d: MTU %v once resolved", round, got)
		}
		w.mustCall(dev, ifaceDevice+".Disconnect")
	}
}

// TestAdvertisementOver31BytesRefused: LEAdvertisingManager1 answers an
// advertisement whose data exceed 31 bytes with org.bluez.Error.Failed
// "Failed to register advertisement", as real BlueZ 5.66 on Linux 6.1
// (differential step advertise/too-long), and registers one that fits.
func TestAdvertisementOver31BytesRefused(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{})
	md := map[uint16]dbus.Variant{CompanyID: v(make([]byte, 11))}
	long := advProps{"Type": v("peripheral"), "ServiceUUIDs": v([]string{ServiceUUID}), "ManufacturerData": v(md)}
	short := advProps{"Type": v("peripheral"), "ManufacturerData": v(md)}
	bad := advProps{"Type": v("flyer")}
	for path, p := range map[dbus.ObjectPath]advProps{"/adv/long": long, "/adv/short": short, "/adv/bad": bad} {
		if err := w.client.Export(p, path, ifaceProps); err != nil {
			t.Fatal(err)
		}
	}
	adapter := e.AdapterPath()
	err := w.call(adapter, ifaceAdvMgr+".RegisterAdvertisement", dbus.ObjectPath("/adv/long"), map[string]dbus.Variant{}).Err
	wantErr(t, err, "org.bluez.Error.Failed")
	if msg := err.(dbus.Error).Body[0]; msg != "Failed to register advertisement" {
		t.Fatalf("message %q", msg)
	}
	wantErr(t, w.call(adapter, ifaceAdvMgr+".RegisterAdvertisement", dbus.ObjectPath("/adv/bad"), map[string]dbus.Variant{}).Err,
		"org.bluez.Error.Failed")
	w.mustCall(adapter, ifaceAdvMgr+".RegisterAdvertisement", dbus.ObjectPath("/adv/short"), map[string]dbus.Variant{})
	wantErr(t, w.call(adapter, ifaceAdvMgr+".RegisterAdvertisement", dbus.ObjectPath("/adv/short"), map[string]dbus.Variant{}).Err,
		"org.bluez.Error.AlreadyExists")
	if n := w.objects()[adapter][ifaceAdvMgr]["ActiveInstances"].Value(); n != byte(1) {
		t.Fatalf("ActiveInstances %v", n)
	}
	w.mustCall(adapter, ifaceAdvMgr+".UnregisterAdvertisement", dbus.ObjectPath("/adv/short"))
	wantErr(t, w.call(adapter, ifaceAdvMgr+".UnregisterAdvertisement", dbus.ObjectPath("/adv/short")).Err,
		"org.bluez.Error.DoesNotExist")
	for _, c := range []struct {
		props advProps
		want  int
	}{
		{long, 33}, {short, 15},
		{advProps{"Type": v("broadcast"), "ServiceUUIDs": v([]string{"180d", "0000180f-0000-1000-8000-00805f9b34fb"}),
			"LocalName": v("lock"), "Discoverable": v(true)}, 6 + 6 + 3},
	} {
		if n, ok := advLen(c.props); !ok || n != c.want {
			t.Errorf("advLen(%v) = %d %v, want %d", c.props, n, ok, c.want)
		}
	}
}

// advProps is an LEAdvertisement1 object's Properties.
type advProps map[string]dbus.Variant

func (p advProps) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	return p, nil
}

// TestLostStartNotifyUnderEATT: the EATT race of two BlueZ ends
// (Faults.LostStartNotify) leaves StartNotify unanswered: the caller's
// timeout ends it, the link dropping answers it "Not connected", and the
// next connection's StartNotify works. Plain ATT has no such loss.
func TestLostStartNotifyUnderEATT(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{})
	const addr = "C0:FF:EE:00:00:64"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	outbox := dev + "/service000a/char000d"
	if err := e.InjectFaults(addr, Faults{LostStartNotify: 1}); err != nil {
		t.Fatal(err)
	}
	w.connect(dev)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := w.client.Object("org.bluez", outbox).CallWithContext(ctx, ifaceChar+".StartNotify", 0).Err
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("StartNotify with a lost request: %v, want the caller's timeout", err)
	}
	// The client gives up the connection (the lost request is answered
	// "Not connected" as the link drops) and connects again.
	w.mustCall(dev, ifaceDevice+".Disconnect")
	w.connect(dev)
	w.mustCall(outbox, ifaceChar+".StartNotify")
	waitFor(t, "Notifying", func() bool { return w.objects()[outbox][ifaceChar]["Notifying"].Value() == true })
}

// TestSlowResolve: Faults.SlowResolve holds one connection's
// ServicesResolved (the tier's EATT mode: 30 s on a bonded reconnection)
// while the link is up and Connect has returned; the next connection
// resolves as usual.
func TestSlowResolve(t *testing.T) {
	const slow = time.Second
	w := newWorld(t)
	e := w.start(Options{})
	const addr = "C0:FF:EE:00:00:65"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	if err := e.InjectFaults(addr, Faults{SlowResolve: slow}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	w.mustCall(dev, ifaceDevice+".Connect")
	if !connected(w, dev) {
		t.Fatal("not connected after Connect")
	}
	waitFor(t, "ServicesResolved", func() bool { return w.devices()[dev]["ServicesResolved"].Value() == true })
	if since := time.Since(start); since < slow {
		t.Fatalf("resolved %v after Connect, before the slow resolve's %v", since, slow)
	}
	w.mustCall(dev, ifaceDevice+".Disconnect")
	w.connect(dev)
	if err := e.InjectFaults(addr, Faults{SlowResolve: -1}); !errors.Is(err, ErrBadFaults) {
		t.Fatalf("a negative SlowResolve: %v", err)
	}
}
