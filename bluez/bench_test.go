package bluez_test

import (
	"context"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bluez/internal/dbustest"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
)

// benchWorld is one emulated lock on a private bus, discovered by the
// client, at zero link latency.
type benchWorld struct {
	bus  *dbustest.Bus
	conn *dbus.Conn
	ad   *bluez.Adapter
	info bluez.LockInfo
}

func newBenchWorld(b *testing.B) *benchWorld {
	b.Helper()
	bus := dbustest.Start(b)
	ctx := context.Background()
	emu, err := emulator.Start(ctx, emulator.Options{Addr: bus.Addr, Seed: 3, RadioInterval: 10 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = emu.Close() })
	fleet := channeltest.NewFleet(b, "acme")
	lp := fleet.Lock(b, 0x4c4b0000000000bb)
	l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
		Actuator: &locktest.Actuator{}, RTC: func() time.Time { return fleet.Now }})
	if err != nil {
		b.Fatal(err)
	}
	// A steady RSSI: no PropertiesChanged on every radio tick while
	// the benchmarks run.
	if err := emu.AddLock(l, "C0:00:00:00:00:BB", emulator.LockOptions{Jitter: -1}); err != nil {
		b.Fatal(err)
	}
	w := &benchWorld{bus: bus, conn: bus.Conn(b)}
	if w.ad, err = bluez.Open(ctx, w.conn, bluez.Options{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = w.ad.Close() })
	for deadline := time.Now().Add(20 * time.Second); w.info.Path == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("lock not discovered")
		}
		for _, li := range w.ad.Locks() {
			w.info = li
		}
	}
	return w
}

// BenchmarkDBusRoundTrip is the floor: one bare method call on the private
// bus to the emulated bluetoothd (Properties.Get on the adapter).
func BenchmarkDBusRoundTrip(b *testing.B) {
	w := newBenchWorld(b)
	obj := w.conn.Object(bluez.BusName, w.ad.Path())
	ctx := context.Background()
	for b.Loop() {
		var v dbus.Variant
		if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, bluez.IfaceAdapter, "Powered").Store(&v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLinkCycle is the client's connect-write-notify-disconnect cycle
// at zero link latency, as the fleet layer will run it (Adapter.Connect):
// connect, write one fragment (a message_1 the lock refuses at once, so no
// cryptography runs), read the one-fragment EDHOC error it notifies back,
// disconnect. It needs 7.5 D-Bus round trips: Connect, Get(ServicesResolved),
// Get(MTU), StartNotify, WriteValue, StopNotify, Disconnect, and the
// notification back (one-way, counted as half). No AddMatch/RemoveMatch
// (the device's subscription rides on the adapter's rule) and no
// GetManagedObjects (characteristics are remembered from the first
// connection; BlueZ keeps them). scripts/bench.sh compares it with 7.5 times
// BenchmarkDBusRoundTrip, and with BenchmarkLinkCycleTraffic, from the same
// run.
func BenchmarkLinkCycle(b *testing.B) {
	w := newBenchWorld(b)
	m1 := refusedMessage1()
	var id uint8
	for b.Loop() {
		w.cycle(b, m1, &id)
	}
}

// cycle is one connect-write-notify-disconnect cycle; id numbers the
// fragments.
func (w *benchWorld) cycle(b *testing.B, m1 []byte, id *uint8) {
	ctx := context.Background()
	dev, err := w.ad.Connect(ctx, bluez.DeviceOptions{Path: w.info.Path})
	if err != nil {
		b.Fatal(err)
	}
	frags, err := fragment.Split(*id, m1, dev.MTU())
	if err != nil || len(frags) != 1 {
		b.Fatalf("%d fragments, %v", len(frags), err)
	}
	*id++
	if err := dev.WritePacket(ctx, frags[0]); err != nil {
		b.Fatal(err)
	}
	p, err := dev.ReadPacket(ctx)
	if err != nil || len(p) < 6 || p[5] != channel.MsgEDHOCError {
		b.Fatalf("notification %x, %v", p, err)
	}
	if err := dev.Close(); err != nil {
		b.Fatal(err)
	}
}

// refusedMessage1 is a message_1 with METHOD 3 (not supported) and a
// valid X25519 G_X (the base point, u = 9): the lock refuses it with
// ERR_CODE 1 straight away.
func refusedMessage1() []byte {
	m1 := append([]byte{channel.MsgEDHOC1, 0x03, 0x00, 0x58, 0x20, 0x09}, make([]byte, 31)...)
	return append(m1, 0x0e)
}

// BenchmarkLinkCycleTraffic is the cycle's D-Bus traffic with no logic on
// either side: the 7 method round trips (bare Properties.Get) and the 7
// signals BlueZ sends the client during a cycle (Connected,
// ServicesResolved and Notifying, each on and off, and the notification),
// emitted by another connection and received through the client's
// dispatcher, interleaved as in the cycle. It is the floor that also
// counts what BlueZ's API makes the client receive.
func BenchmarkLinkCycleTraffic(b *testing.B) {
	w := newBenchWorld(b)
	ctx := context.Background()
	src := w.bus.Conn(b)
	sub, err := w.ad.Dispatcher().Subscribe(ctx, bluez.Match{Sender: src.Names()[0], Path: "/org/gatewayd/bench",
		Interface: "org.freedesktop.DBus.Properties", Member: "PropertiesChanged"}, 64)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Close() })
	obj := w.conn.Object(bluez.BusName, w.ad.Path())
	changed := map[string]dbus.Variant{"Connected": dbus.MakeVariant(true)}
	for b.Loop() {
		for range 7 {
			if err := src.Emit("/org/gatewayd/bench", "org.freedesktop.DBus.Properties.PropertiesChanged",
				bluez.IfaceDevice, changed, []string{}); err != nil {
				b.Fatal(err)
			}
			var v dbus.Variant
			if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, bluez.IfaceAdapter, "Powered").Store(&v); err != nil {
				b.Fatal(err)
			}
		}
		for range 7 {
			<-sub.C()
		}
	}
}

// BenchmarkLinkCycleInterleaved runs BenchmarkLinkCycle's cycle and
// BenchmarkDBusRoundTrip's round trip in one loop, on the same bus and
// emulator: each iteration times one cycle and 7 or 8 bare round trips
// (7.5 on average), in alternating order, so that neither side always
// follows the other (the tail of a cycle's signals, say, lands on both).
// Machine noise here changes from second to second, so two benchmarks
// run one after the other can see different machines; interleaved at the
// millisecond, both see the same one. It reports the cycle as a multiple
// of 7.5 round trips ("cycle/7.5rt"), which scripts/bench.sh takes the
// median of.
func BenchmarkLinkCycleInterleaved(b *testing.B) {
	w := newBenchWorld(b)
	m1 := refusedMessage1()
	ctx := context.Background()
	obj := w.conn.Object(bluez.BusName, w.ad.Path())
	var (
		id            uint8
		cycle, rt     time.Duration
		cycles, trips int
	)
	doCycle := func() {
		t0 := time.Now()
		w.cycle(b, m1, &id)
		cycle += time.Since(t0)
		cycles++
	}
	doTrips := func(n int) {
		t0 := time.Now()
		for range n {
			var v dbus.Variant
			if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, bluez.IfaceAdapter, "Powered").Store(&v); err != nil {
				b.Fatal(err)
			}
		}
		rt += time.Since(t0)
		trips += n
	}
	i := 0
	for b.Loop() {
		n := 7 + (i/2)%2
		if i%2 == 0 {
			doCycle()
			doTrips(n)
		} else {
			doTrips(n)
			doCycle()
		}
		i++
	}
	perCycle := float64(cycle) / float64(cycles)
	perTrip := float64(rt) / float64(trips)
	b.ReportMetric(perCycle, "cycle-ns")
	b.ReportMetric(perTrip, "roundtrip-ns")
	b.ReportMetric(perCycle/(7.5*perTrip), "cycle/7.5rt")
}
