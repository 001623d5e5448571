package bluez_test

import (
	"context"
	"math"
	"slices"
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
	emu  *emulator.Emulator
	lock *lock.Lock
	// fleet is the lock's fleet, for a real session with it.
	fleet *channeltest.Fleet
}

// newBenchWorld: the client's connection is made with opts (a test's
// message counters).
func newBenchWorld(b testing.TB, opts ...dbus.ConnOption) *benchWorld {
	b.Helper()
	bus := dbustest.Start(b)
	ctx := context.Background()
	// Zero link latency: services resolved at once (before Connect's
	// reply; real BlueZ replies first and resolves later, so a real
	// session also waits for ServicesResolved: one more signal).
	emu, err := emulator.Start(ctx, emulator.Options{Addr: bus.Addr, Seed: 3, RadioInterval: 10 * time.Millisecond,
		ResolveDelay: -1})
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
	conn, err := dbus.Connect(bus.Addr, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	w := &benchWorld{bus: bus, conn: conn, emu: emu, lock: l, fleet: fleet}
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

// BenchmarkLinkCycle is the D-Bus work of a real one-command session as
// gatewayd runs it (internal/bluelink: Dial, Handshake, one signed unlock,
// Close) at zero link latency, without its cryptography: the same calls
// and the same signals waited on, in the same order, with writes of the
// same fragment counts (sessionShape; TestOneCommandSessionRoundTrips
// checks both against a real session on the emulator). Each step of the
// shape writes a message_1 the lock refuses at once (so no cryptography
// runs on either side), split into as many fragments as the session's
// message at that step, and reads the one-fragment EDHOC error it
// notifies back. That is 12 method calls (Connect, Get(ServicesResolved),
// Get(MTU), StartNotify, 6 WriteValue, StopNotify, Disconnect) and 5
// signals waited on (4 notifications and Connected=false after
// Disconnect), 14.5 round trips counting a one-way signal as half
// (sessionRoundTrips). No AddMatch/RemoveMatch (the device's
// subscription rides on the adapter's rule) and no GetManagedObjects
// (characteristics are remembered from the first connection; BlueZ keeps
// them). scripts/bench.sh compares it with 14.5 times
// BenchmarkDBusRoundTrip, and with BenchmarkLinkCycleTraffic, from the
// same run.
func BenchmarkLinkCycle(b *testing.B) {
	w := newBenchWorld(b)
	var id uint8
	for b.Loop() {
		w.cycle(b, &id)
	}
}

// sessionShape is the cycle's messages: how many fragments each is
// written in, each answered with one notification. A real one-command
// session at the emulator's default ATT MTU (247) writes message_1 (1
// fragment) and reads message_2 (2 notifications), writes message_3 (2)
// and reads message_4, writes the signed unlock (2) and
// reads its result, and writes the close frame (1): 6 writes and 4
// notifications, which the cycle makes in this order (message_2's second
// notification moved after the close frame). TestOneCommandSessionRoundTrips
// counts the real session's calls and signals and checks they equal the
// cycle's.
var sessionShape = []int{1, 2, 2, 1}

// sessionRoundTrips is the floor of a one-command session in D-Bus round
// trips: its method calls, and half a round trip for each signal it waits
// for (one-way).
const sessionRoundTrips = 14.5

// cycle is one session-shaped cycle (sessionShape); id numbers the
// messages.
func (w *benchWorld) cycle(b testing.TB, id *uint8) {
	ctx := context.Background()
	dev, err := w.ad.Connect(ctx, bluez.DeviceOptions{Path: w.info.Path})
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range sessionShape {
		frags, err := fragment.Split(*id, refusedMessage1(n, dev.MTU()), dev.MTU())
		if err != nil || len(frags) != n {
			b.Fatalf("%d fragments, want %d: %v", len(frags), n, err)
		}
		*id++
		for _, f := range frags {
			if err := dev.WritePacket(ctx, f); err != nil {
				b.Fatal(err)
			}
		}
		p, err := dev.ReadPacket(ctx)
		if err != nil || len(p) < 6 || p[5] != channel.MsgEDHOCError {
			b.Fatalf("notification %x, %v", p, err)
		}
	}
	if err := dev.Close(); err != nil {
		b.Fatal(err)
	}
}

// refusedMessage1 is a message_1 with METHOD 3 (not supported) and a
// valid X25519 G_X (the base point, u = 9), padded to fill frags
// fragments at ATT MTU mtu with one EAD padding item (label 0, RFC 9528
// §3.8, a byte string of zeros: one item for the lock to read): the lock
// refuses it with ERR_CODE 1 straight away.
func refusedMessage1(frags, mtu int) []byte {
	m1 := append([]byte{channel.MsgEDHOC1, 0x03, 0x00, 0x58, 0x20, 0x09}, make([]byte, 31)...)
	m1 = append(m1, 0x0e)
	per, err := fragment.MaxPayload(mtu)
	if err != nil || frags < 2 {
		return m1
	}
	pad := (frags-1)*per + 1 - len(m1) - 4 // after the item's 4-byte head
	return append(append(m1, 0x00, 0x59, byte(pad>>8), byte(pad)), make([]byte, pad)...)
}

// BenchmarkLinkCycleTraffic is the cycle's D-Bus traffic with no logic on
// either side: the 12 method round trips (bare Properties.Get) and the 10
// signals BlueZ sends the client during a cycle (Connected,
// ServicesResolved and Notifying, each on and off, and the 4
// notifications), emitted by another connection and received through the
// client's dispatcher, interleaved as in the cycle. It is the floor that
// also counts what BlueZ's API makes the client receive.
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
		for i := range 12 {
			if i < 10 {
				if err := src.Emit("/org/gatewayd/bench", "org.freedesktop.DBus.Properties.PropertiesChanged",
					bluez.IfaceDevice, changed, []string{}); err != nil {
					b.Fatal(err)
				}
			}
			var v dbus.Variant
			if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, bluez.IfaceAdapter, "Powered").Store(&v); err != nil {
				b.Fatal(err)
			}
		}
		for range 10 {
			<-sub.C()
		}
	}
}

// BenchmarkLinkCycleInterleaved runs BenchmarkLinkCycle's cycle and
// its floor, BenchmarkDBusRoundTrip's round trip sessionRoundTrips times,
// in one loop, on the same bus and emulator: each iteration times one
// cycle and 14 or 15 bare round trips (14.5 on average), in alternating
// order, so that neither side always follows the other (the tail of a
// cycle's signals, say, lands on both). Machine noise here changes from
// second to second, so two benchmarks run one after the other can see
// different machines; interleaved at the millisecond, both see the same
// one. It reports the cycle as a multiple of its floor ("cycle/floor",
// the median of the per-iteration ratios, as firmware/internal/interleave
// does), which scripts/bench.sh takes the median of, and the mean cycle
// over the mean floor ("cycle/floor-mean").
func BenchmarkLinkCycleInterleaved(b *testing.B) {
	w := newBenchWorld(b)
	ctx := context.Background()
	obj := w.conn.Object(bluez.BusName, w.ad.Path())
	var (
		id            uint8
		cycle, rt     time.Duration
		cycles, trips int
		ratios        []float64
	)
	doCycle := func() time.Duration {
		t0 := time.Now()
		w.cycle(b, &id)
		d := time.Since(t0)
		cycle += d
		cycles++
		return d
	}
	doTrips := func(n int) time.Duration {
		t0 := time.Now()
		for range n {
			var v dbus.Variant
			if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, bluez.IfaceAdapter, "Powered").Store(&v); err != nil {
				b.Fatal(err)
			}
		}
		d := time.Since(t0)
		rt += d
		trips += n
		return d
	}
	lo := int(math.Floor(sessionRoundTrips))
	hi := int(math.Ceil(sessionRoundTrips))
	i := 0
	for b.Loop() {
		// lo and hi round trips in turn: sessionRoundTrips on average
		// (for a whole or half number).
		n := lo
		if (i/2)%2 == 1 {
			n = hi
		}
		var c, f time.Duration
		if i%2 == 0 {
			c = doCycle()
			f = doTrips(n)
		} else {
			f = doTrips(n)
			c = doCycle()
		}
		ratios = append(ratios, float64(c)/(float64(f)/float64(n)*sessionRoundTrips))
		i++
	}
	perCycle := float64(cycle) / float64(cycles)
	perTrip := float64(rt) / float64(trips)
	slices.Sort(ratios)
	b.ReportMetric(perCycle, "cycle-ns")
	b.ReportMetric(perTrip, "roundtrip-ns")
	b.ReportMetric(perCycle/(sessionRoundTrips*perTrip), "cycle/floor-mean")
	b.ReportMetric(ratios[len(ratios)/2], "cycle/floor")
}
