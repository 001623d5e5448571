package bluez_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bluez/internal/dbustest"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
)

// markerAddr sorts after every lockAddr: the emulator advertises in
// address order, so the marker's advertisement is the last of a round.
const markerAddr = "C0:FF:FF:FF:FF:FF"

func lockAddr(i int) string { return fmt.Sprintf("C0:00:00:00:%02X:%02X", i/256, i%256) }

// newLocks makes n reference locks of one fleet.
func newLocks(tb testing.TB, n int) []*lock.Lock {
	tb.Helper()
	fleet := channeltest.NewFleet(tb, "acme")
	ls := make([]*lock.Lock, n)
	for i := range ls {
		lp := fleet.Lock(tb, uint64(0x4c4b000000000000+i))
		l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
			Actuator: &locktest.Actuator{}, RTC: func() time.Time { return fleet.Now }})
		if err != nil {
			tb.Fatal(err)
		}
		ls[i] = l
	}
	return ls
}

// radioWorld is a private bus and an emulator whose radio only runs when
// told (Advertise), hosting the given locks at steady RSSIs.
func radioWorld(tb testing.TB, locks []*lock.Lock, opts func(i int) emulator.LockOptions) (*dbustest.Bus, *emulator.Emulator) {
	tb.Helper()
	// A short directory: a subtest's TempDir can make the socket's path
	// longer than a sockaddr_un holds.
	dir, err := os.MkdirTemp("", "adv")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	bus, err := dbustest.StartDaemon(context.Background(), dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = bus.Close() })
	emu, err := emulator.Start(context.Background(), emulator.Options{Addr: bus.Addr, Seed: 5, RadioInterval: time.Hour, AwayTimeout: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = emu.Close() })
	for i, l := range locks {
		o := emulator.LockOptions{Jitter: -1}
		if opts != nil {
			o = opts(i)
		}
		if err := emu.AddLock(l, lockAddr(i), o); err != nil {
			tb.Fatal(err)
		}
	}
	return bus, emu
}

// dialTap connects to bus through bluez.DialBus (the reader that decodes
// advertisements itself).
func dialTap(tb testing.TB, bus *dbustest.Bus) *dbus.Conn {
	tb.Helper()
	c, err := bluez.DialBus(bus.Addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// TestThousandLocksAppear: 1,000 locks appearing in one radio round (1,000
// InterfacesAdded back to back) all reach the client as Appeared events;
// then one advertisement of each, all changed, comes through the
// connection's own decoder (bluez.DialBus) as 1,000 Updated events; with
// nothing dropped and no resynchronisation needed.
func TestThousandLocksAppear(t *testing.T) {
	const n = 1000
	var battery atomic.Uint32
	battery.Store(90)
	bus, emu := radioWorld(t, newLocks(t, n), func(int) emulator.LockOptions {
		return emulator.LockOptions{Jitter: -1, Battery: func() uint8 { return uint8(battery.Load()) }}
	})
	ad, err := bluez.Open(context.Background(), dialTap(t, bus), bluez.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ad.Close()
	for _, want := range []struct {
		kind    bluez.EventKind
		battery uint8
	}{{bluez.Appeared, 90}, {bluez.Updated, 80}} {
		battery.Store(uint32(want.battery))
		emu.Advertise()
		seen := map[string]bool{}
		timeout := time.After(time.Minute) // a safety net only
		for len(seen) < n {
			select {
			case ev := <-ad.Events():
				if ev.Kind != want.kind || ev.Lock.Err != nil || ev.Lock.Battery != want.battery {
					t.Fatalf("event %v %+v, want %v at battery %d", ev.Kind, ev.Lock, want.kind, want.battery)
				}
				seen[ev.Lock.Address] = true
			case <-timeout:
				t.Fatalf("%d of %d locks %v", len(seen), n, want.kind)
			}
		}
	}
	if got := len(ad.Locks()); got != n {
		t.Fatalf("Locks lists %d, want %d", got, n)
	}
	if got := ad.DecodedAdverts(); got != n {
		t.Fatalf("%d advertisements decoded from the wire, want %d", got, n)
	}
	col := bluez.NewCollector(ad)
	if problems, err := testutil.CollectAndLint(col); err != nil || len(problems) > 0 {
		t.Fatalf("metric lint: %v %v", problems, err)
	}
	if err := testutil.CollectAndCompare(col, strings.NewReader(`
# HELP gatewayd_bluez_adverts_decoded_total Advertisements decoded by gatewayd's own D-Bus reader (bluez.DialBus) instead of godbus.
# TYPE gatewayd_bluez_adverts_decoded_total counter
gatewayd_bluez_adverts_decoded_total{adapter="hci0"} 1000
`), "gatewayd_bluez_adverts_decoded_total"); err != nil {
		t.Fatal(err)
	}
	if d, r := ad.DroppedEvents(), ad.Resyncs(); d != 0 || r != 0 {
		t.Fatalf("%d events dropped, %d resyncs; want none", d, r)
	}
}

// TestDiscoveryFilterRSSI: with Options.MinRSSI the client asks bluetoothd
// (here the emulator, which applies the filter as BlueZ does) to drop
// weaker advertisements: the lock at -90 dBm never appears, the one at
// -50 dBm does; without it both appear.
func TestDiscoveryFilterRSSI(t *testing.T) {
	// In address order: near, far, and a marker advertised last.
	locks := newLocks(t, 3)
	rssi := func(i int) emulator.LockOptions {
		return emulator.LockOptions{Jitter: -1, RSSI: []int16{-50, -90, -50}[i]}
	}
	for _, tc := range []struct {
		min  int16
		want int
	}{{-70, 2}, {0, 3}} {
		bus, emu := radioWorld(t, locks, rssi)
		ad, err := bluez.Open(context.Background(), bus.Conn(t), bluez.Options{MinRSSI: tc.min})
		if err != nil {
			t.Fatal(err)
		}
		emu.Advertise()
		emu.Advertise()
		// Signals reach the client in the order sent: once the marker
		// is listed, the far lock would be too had it passed.
		waitFor(t, "the marker lock", func() bool {
			for _, l := range ad.Locks() {
				if l.Address == lockAddr(2) {
					return true
				}
			}
			return false
		})
		ls := ad.Locks()
		far := false
		for _, l := range ls {
			far = far || l.Address == lockAddr(1)
		}
		if len(ls) != tc.want || far != (tc.min == 0) {
			t.Fatalf("MinRSSI %d: locks %+v, want %d", tc.min, ls, tc.want)
		}
		_ = ad.Close()
	}
	if _, err := bluez.Open(context.Background(), nil, bluez.Options{MinRSSI: -128}); !errors.Is(err, bluez.ErrInvalidArguments) {
		t.Fatalf("MinRSSI -128: %v, want ErrInvalidArguments", err)
	}
}

// TestDuplicateDataEveryAdvertisement: the client asks for DuplicateData,
// so a lock whose advertisement never changes is still heard at every
// advertisement (its LastSeen moves on), which presence and the
// scheduler's wake-ups depend on.
// Both on a godbus connection and on one made by bluez.DialBus.
func TestDuplicateDataEveryAdvertisement(t *testing.T) {
	for name, dial := range map[string]func(testing.TB, *dbustest.Bus) *dbus.Conn{
		"godbus": func(tb testing.TB, bus *dbustest.Bus) *dbus.Conn { return bus.Conn(tb) },
		"tap":    dialTap,
	} {
		t.Run(name, func(t *testing.T) {
			bus, emu := radioWorld(t, newLocks(t, 1), nil)
			now := atomic.Int64{}
			now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
			ad, err := bluez.Open(context.Background(), dial(t, bus), bluez.Options{Now: func() time.Time { return time.Unix(0, now.Load()) }})
			if err != nil {
				t.Fatal(err)
			}
			defer ad.Close()
			emu.Advertise()
			waitFor(t, "the lock", func() bool { return len(ad.Locks()) == 1 })
			first := ad.Locks()[0].LastSeen
			now.Add(int64(time.Second))
			emu.Advertise()
			waitFor(t, "the same advertisement heard again", func() bool { return ad.Locks()[0].LastSeen.After(first) })
			if name == "tap" && ad.DecodedAdverts() == 0 {
				t.Fatal("the advertisement went through godbus")
			}
		})
	}
}

// BenchmarkAdverts measures the client's cost per advertisement with 10,
// 100 and 1,000 locks each advertising once a round, the advertisement
// unchanged (DuplicateData: the common case at a dock, a
// PropertiesChanged{ManufacturerData} per advertisement), on a connection
// made by bluez.DialBus (advertisements decoded by the connection's own
// reader). Each iteration runs one round through the Adapter (decode,
// dispatch, update: until it reports the marker lock, advertised last, as
// Updated) and one round on a second, identical bus and emulator read by
// a bare godbus connection holding the adapter's match rule (the floor:
// the bus's cost to get the signals decoded into the process, which any
// godbus client pays), in alternating order. It reports wall time and
// process CPU (getrusage: it includes the in-process emulator encoding
// the signals, the same on both sides) per advertisement, and their
// ratios ("cpu/floor", "wall/floor"), which scripts/bench.sh takes the
// median of.
func BenchmarkAdverts(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("locks=%d", n), func(b *testing.B) { benchAdverts(b, n, dialTap) })
	}
}

// BenchmarkAdvertsGodbus is BenchmarkAdverts with the client on a plain
// godbus connection (dbus.Connect): every signal decoded by godbus and
// passed through the Dispatcher, as before bluez.DialBus.
func BenchmarkAdvertsGodbus(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("locks=%d", n), func(b *testing.B) {
			benchAdverts(b, n, func(tb testing.TB, bus *dbustest.Bus) *dbus.Conn { return bus.Conn(tb) })
		})
	}
}

func benchAdverts(b *testing.B, n int, dial func(testing.TB, *dbustest.Bus) *dbus.Conn) {
	ctx := context.Background()
	locks := newLocks(b, n+1)
	var round atomic.Uint32
	opts := func(i int) emulator.LockOptions {
		o := emulator.LockOptions{Jitter: -1}
		if i == n {
			o.Battery = func() uint8 { return uint8(round.Load()) }
		}
		return o
	}
	marker := func(tb testing.TB, emu *emulator.Emulator) {
		tb.Helper()
		if err := emu.AddLock(locks[n], markerAddr, opts(n)); err != nil {
			tb.Fatal(err)
		}
	}

	// The client's world.
	cbus, cemu := radioWorld(b, locks[:n], opts)
	marker(b, cemu)
	ad, err := bluez.Open(ctx, dial(b, cbus), bluez.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ad.Close() })
	cemu.Advertise()
	for seen := 0; seen < n+1; {
		if ev := <-ad.Events(); ev.Kind == bluez.Appeared {
			seen++
		}
	}
	clientRound := func() {
		cemu.Advertise()
		for {
			ev := <-ad.Events()
			if ev.Kind == bluez.Updated && ev.Lock.Address == markerAddr {
				return
			}
		}
	}

	// The floor's world: a bare connection with the adapter's rule, its
	// own discovery session with the adapter's filter.
	fbus, femu := radioWorld(b, locks[:n], opts)
	marker(b, femu)
	raw := fbus.Conn(b)
	rule := bluez.Match{Sender: bluez.BusName, PathNamespace: "/org/bluez", Interface: "org.freedesktop.DBus.Properties", Member: "PropertiesChanged"}.Rule()
	if err := raw.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.AddMatch", 0, rule).Err; err != nil {
		b.Fatal(err)
	}
	sigs := make(chan *dbus.Signal, 4096)
	raw.Signal(sigs)
	adapter := raw.Object(bluez.BusName, femu.AdapterPath())
	if err := adapter.CallWithContext(ctx, bluez.IfaceAdapter+".SetDiscoveryFilter", 0, map[string]dbus.Variant{
		"UUIDs": dbus.MakeVariant([]string{bluez.LockServiceUUID}), "Transport": dbus.MakeVariant("le"),
		"DuplicateData": dbus.MakeVariant(true)}).Err; err != nil {
		b.Fatal(err)
	}
	if err := adapter.CallWithContext(ctx, bluez.IfaceAdapter+".StartDiscovery", 0).Err; err != nil {
		b.Fatal(err)
	}
	femu.Advertise() // the devices appear (InterfacesAdded, not matched)
	markerPath := femu.DevicePath(markerAddr)
	floorRound := func() {
		femu.Advertise()
		for s := range sigs {
			if s.Path == markerPath {
				return
			}
		}
	}
	// Both worlds warm up.
	round.Add(1)
	clientRound()
	floorRound()

	var wallC, wallF, cpuC, cpuF time.Duration
	rounds := 0
	measure := func(f func(), wall, cpu *time.Duration) {
		round.Add(1)
		c0, t0 := cpuTime(), time.Now()
		f()
		*wall += time.Since(t0)
		*cpu += cpuTime() - c0
	}
	for b.Loop() {
		if rounds%2 == 0 {
			measure(clientRound, &wallC, &cpuC)
			measure(floorRound, &wallF, &cpuF)
		} else {
			measure(floorRound, &wallF, &cpuF)
			measure(clientRound, &wallC, &cpuC)
		}
		rounds++
	}
	adverts := float64(rounds * (n + 1))
	b.ReportMetric(float64(cpuC)/adverts, "cpu-ns/advert")
	b.ReportMetric(float64(cpuF)/adverts, "floorcpu-ns/advert")
	b.ReportMetric(float64(wallC)/adverts, "wall-ns/advert")
	b.ReportMetric(float64(cpuC)/float64(cpuF), "cpu/floor")
	b.ReportMetric(float64(wallC)/float64(wallF), "wall/floor")
	raw.RemoveSignal(sigs)
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
