package bluez

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bluez/internal/dbustest"
	"github.com/gatewayd/gatewayd/bluez/internal/fakebluez"
	"github.com/godbus/dbus/v5"
)

func lockMD(id byte, flags, battery byte) dbus.Variant {
	p := []byte{0x01, 0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, id, flags, battery}
	return dbus.MakeVariant(map[uint16]dbus.Variant{0xFFFF: dbus.MakeVariant(p)})
}

func lockProps(id, flags, battery byte, rssi int16) map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"UUIDs":            dbus.MakeVariant([]string{LockServiceUUID}),
		"ManufacturerData": lockMD(id, flags, battery),
		"RSSI":             dbus.MakeVariant(rssi),
	}
}

type env struct {
	bus    *dbustest.Bus
	fake   *fakebluez.Bluez
	client *dbus.Conn
	via    *dbus.Conn
}

func newEnv(t *testing.T) *env {
	t.Helper()
	bus := dbustest.Start(t)
	f, err := fakebluez.New(bus.Conn(t), "00:AA:BB:CC:DD:EE")
	if err != nil {
		t.Fatal(err)
	}
	return &env{bus: bus, fake: f, client: bus.Conn(t), via: bus.Conn(t)}
}

func waitEvent(t *testing.T, a *Adapter, kind EventKind, addr string) LockInfo {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-a.Events():
			if !ok {
				t.Fatal("Events closed")
			}
			if ev.Kind == kind && ev.Lock.Address == addr {
				return ev.Lock
			}
		case <-timeout:
			t.Fatalf("no %v event for %s", kind, addr)
		}
	}
}

func TestAdapterOpenListsAndTracks(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	good := e.fake.AddDevice("11:22:33:44:55:01", lockProps(1, FlagLocked|FlagBatteryLow, 15, -60))
	// Wrong value type inside a{qv}, wrong type altogether, and a
	// non-lock device: none of them may break the listing.
	e.fake.AddDevice("11:22:33:44:55:02", map[string]dbus.Variant{
		"UUIDs":            dbus.MakeVariant([]string{LockServiceUUID}),
		"ManufacturerData": dbus.MakeVariant(map[uint16]dbus.Variant{0xFFFF: dbus.MakeVariant("oops")}),
	})
	e.fake.AddDevice("11:22:33:44:55:03", map[string]dbus.Variant{
		"ManufacturerData": dbus.MakeVariant(map[string]dbus.Variant{"x": dbus.MakeVariant(int32(1))}),
	})
	e.fake.AddDevice("11:22:33:44:55:04", map[string]dbus.Variant{"Name": dbus.MakeVariant("headphones")})

	rules0 := matchRules(t, e.bus, e.via, e.client)
	g0 := runtime.NumGoroutine()
	a, err := Open(ctx, e.client, Options{Adapter: "hci0", CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !e.fake.Powered() || !e.fake.Discovering() {
		t.Fatalf("powered %v discovering %v", e.fake.Powered(), e.fake.Discovering())
	}
	f := e.fake.Filter()
	if u, _ := f["UUIDs"].Value().([]string); len(u) != 1 || u[0] != LockServiceUUID {
		t.Fatalf("filter UUIDs %v", f["UUIDs"])
	}
	if tr, _ := f["Transport"].Value().(string); tr != "le" {
		t.Fatalf("filter Transport %v", f["Transport"])
	}

	locks := a.Locks()
	if len(locks) != 3 {
		t.Fatalf("Locks = %+v, want 3", locks)
	}
	l := locks[0]
	if l.Err != nil || l.Path != good || l.LockID != [8]byte{0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 1} ||
		l.Flags != FlagLocked|FlagBatteryLow || l.Battery != 15 || l.RSSI != -60 || l.LastSeen.IsZero() {
		t.Fatalf("lock 1 = %+v", l)
	}
	for _, bad := range locks[1:] {
		if !errors.Is(bad.Err, ErrAdvertisement) {
			t.Fatalf("bad lock %s Err = %v", bad.Address, bad.Err)
		}
	}

	// Appear, update, disappear through signals.
	p := e.fake.AddDevice("11:22:33:44:55:10", lockProps(0x10, 0, 90, -70))
	if got := waitEvent(t, a, Appeared, "11:22:33:44:55:10"); got.Battery != 90 {
		t.Fatalf("appeared %+v", got)
	}
	e.fake.ChangeDevice(p, map[string]dbus.Variant{"ManufacturerData": lockMD(0x10, FlagJammed, 80), "RSSI": dbus.MakeVariant(int16(-50))})
	if got := waitEvent(t, a, Updated, "11:22:33:44:55:10"); got.Battery != 80 || got.Flags != FlagJammed || got.RSSI != -50 {
		t.Fatalf("updated %+v", got)
	}
	e.fake.RemoveDevice(p)
	waitEvent(t, a, Gone, "11:22:33:44:55:10")
	if n := len(a.Locks()); n != 3 {
		t.Fatalf("%d locks after removal, want 3", n)
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if e.fake.Discovering() {
		t.Fatal("still discovering after Close")
	}
	for range a.Events() { // drain what is buffered; Close closed it
	}
	if got := matchRules(t, e.bus, e.via, e.client); got != rules0 {
		t.Fatalf("match rules after Close %d, before Open %d", got, rules0)
	}
	if n := settleGoroutines(t, g0); n > g0 {
		t.Fatalf("goroutines after Close %d, before Open %d", n, g0)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestAdapterNoAdapter(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rules0 := matchRules(t, e.bus, e.via, e.client)
	if _, err := Open(ctx, e.client, Options{Adapter: "hci7"}); !errors.Is(err, ErrNoAdapter) {
		t.Fatalf("Open hci7: %v", err)
	}
	if got := matchRules(t, e.bus, e.via, e.client); got != rules0 {
		t.Fatalf("failed Open left %d rules, want %d", got, rules0)
	}
	// By address too.
	a, err := Open(ctx, e.client, Options{Adapter: "00:aa:bb:cc:dd:ee"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Path() != "/org/bluez/hci0" {
		t.Fatalf("path %s", a.Path())
	}
	_ = a.Close()
}

func TestAdapterThousandDevicesGoroutinesFlat(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := Open(ctx, e.client, Options{EventQueue: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	g0 := runtime.NumGoroutine()
	const n = 1000
	paths := make([]dbus.ObjectPath, n)
	maxG := 0
	for i := range n {
		paths[i] = e.fake.AddDevice(fmt.Sprintf("22:00:00:00:%02X:%02X", i>>8, i&0xff), lockProps(byte(i), 0, 50, -80))
		if i%100 == 0 {
			maxG = max(maxG, runtime.NumGoroutine())
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(a.Locks()) != n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := len(a.Locks()); got != n {
		t.Fatalf("%d locks, want %d", got, n)
	}
	for _, p := range paths {
		e.fake.RemoveDevice(p)
	}
	for len(a.Locks()) != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := len(a.Locks()); got != 0 {
		t.Fatalf("%d locks after removal, want 0", got)
	}
	// The fake's own exports add no goroutines per device; godbus may
	// park a few transiently while delivering, so allow a small slack.
	if maxG > g0+20 {
		t.Fatalf("goroutines peaked at %d with %d devices, started at %d", maxG, n, g0)
	}
	if got := settleGoroutines(t, g0); got > g0 {
		t.Fatalf("goroutines %d after 1000 devices came and went, before %d", got, g0)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestAdapterAwayTimeout(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	a, err := Open(ctx, e.client, Options{AwayTimeout: 10 * time.Second, SweepEvery: 5 * time.Millisecond, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	const addr = "33:00:00:00:00:01"
	p := e.fake.AddDevice(addr, lockProps(1, 0, 50, -80))
	if got := waitEvent(t, a, Appeared, addr); !got.LastSeen.Equal(clk.Now()) {
		t.Fatalf("LastSeen %v, want %v", got.LastSeen, clk.Now())
	}
	clk.Advance(9 * time.Second)
	time.Sleep(50 * time.Millisecond) // several sweeps: still present
	if len(a.Locks()) != 1 {
		t.Fatal("lock gone before the away timeout")
	}
	e.fake.ChangeDevice(p, map[string]dbus.Variant{"RSSI": dbus.MakeVariant(int16(-81))})
	waitEvent(t, a, Updated, addr)
	clk.Advance(9 * time.Second) // 9 s since the last RSSI: still present
	time.Sleep(50 * time.Millisecond)
	if len(a.Locks()) != 1 {
		t.Fatal("lock gone although seen 9 s ago")
	}
	clk.Advance(2 * time.Second)
	waitEvent(t, a, Gone, addr)
	if len(a.Locks()) != 0 {
		t.Fatal("away lock still listed")
	}
	// Seen again: appears again.
	e.fake.ChangeDevice(p, map[string]dbus.Variant{"RSSI": dbus.MakeVariant(int16(-70))})
	if got := waitEvent(t, a, Appeared, addr); got.RSSI != -70 || !got.LastSeen.Equal(clk.Now()) {
		t.Fatalf("reappeared %+v", got)
	}
}

func TestParseAdvertisement(t *testing.T) {
	var info LockInfo
	ok := []byte{1, 1, 2, 3, 4, 5, 6, 7, 8, 0x0f, 100}
	if err := ParseAdvertisement(ok, &info); err != nil || info.LockID != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} || info.Flags != 0x0f || info.Battery != 100 {
		t.Fatalf("%v %+v", err, info)
	}
	for _, bad := range [][]byte{nil, ok[:10], append(ok[:11:11], 0), {2, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1}} {
		if err := ParseAdvertisement(bad, &info); !errors.Is(err, ErrAdvertisement) {
			t.Fatalf("ParseAdvertisement(%x) = %v", bad, err)
		}
	}
}

func TestAdapterResyncAfterDroppedSignals(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A queue of 2 cannot keep up with a burst of 500 devices: signals are
	// dropped, and the adapter must still end with the right listing. The
	// drop check also runs on each sweep tick, so a drop in the last
	// signals of a burst is repaired too.
	a, err := Open(ctx, e.client, Options{SignalQueue: 2, EventQueue: 4096, SweepEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	const n = 500
	paths := make([]dbus.ObjectPath, n)
	for i := range n {
		paths[i] = e.fake.AddDevice(fmt.Sprintf("55:00:00:00:%02X:%02X", i>>8, i&0xff), lockProps(byte(i), 0, 50, -80))
	}
	waitLocks := func(want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for len(a.Locks()) != want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := len(a.Locks()); got != want {
			t.Fatalf("%d locks, want %d (resyncs %d)", got, want, a.Resyncs())
		}
	}
	waitLocks(n)
	for _, p := range paths[:n/2] {
		e.fake.RemoveDevice(p)
	}
	waitLocks(n - n/2)
	if a.Resyncs() == 0 {
		t.Fatal("no resync although signals were dropped")
	}
}

// TestRSSICoalesced: a lock whose advertisements change
// only its RSSI is reported Updated at most once per UpdateEvery, with the
// latest RSSI; any other change is reported at once; Locks is always
// current; and a held-back RSSI goes out with the first advertisement
// after UpdateEvery, even one that changes nothing. On a plain godbus
// connection and on DialBus's (the tap's fast path).
func TestRSSICoalesced(t *testing.T) {
	for _, tapped := range []bool{false, true} {
		name := "godbus"
		if tapped {
			name = "tap"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			conn := e.client
			if tapped {
				c, err := DialBus(e.bus.Addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.Close() })
				conn = c
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			a, err := Open(ctx, conn, Options{UpdateEvery: time.Second, Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			const addr = "33:00:00:00:00:02"
			p := e.fake.AddDevice(addr, lockProps(1, 0, 50, -80))
			waitEvent(t, a, Appeared, addr)
			// Within UpdateEvery of the Appeared: RSSI-only changes are
			// held back; the battery's change goes out at once, with the
			// latest RSSI, and is the first event after Appeared.
			for _, r := range []int16{-81, -82, -83} {
				e.fake.ChangeDevice(p, map[string]dbus.Variant{"RSSI": dbus.MakeVariant(r), "ManufacturerData": lockMD(1, 0, 50)})
			}
			e.fake.ChangeDevice(p, map[string]dbus.Variant{"ManufacturerData": lockMD(1, 0, 49)})
			ev := nextEvent(t, a)
			if ev.Kind != Updated || ev.Lock.Battery != 49 || ev.Lock.RSSI != -83 {
				t.Fatalf("first event after Appeared: %v %+v; want Updated with battery 49, RSSI -83", ev.Kind, ev.Lock)
			}
			// Held back again, but Locks has it.
			e.fake.ChangeDevice(p, map[string]dbus.Variant{"RSSI": dbus.MakeVariant(int16(-90)), "ManufacturerData": lockMD(1, 0, 49)})
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				if ls := a.Locks(); len(ls) == 1 && ls[0].RSSI == -90 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Locks %+v, want RSSI -90", a.Locks())
				}
			}
			// After UpdateEvery, an advertisement changing nothing carries
			// the held-back RSSI out.
			clk.Advance(time.Second)
			e.fake.ChangeDevice(p, map[string]dbus.Variant{"ManufacturerData": lockMD(1, 0, 49)})
			if ev := nextEvent(t, a); ev.Kind != Updated || ev.Lock.RSSI != -90 {
				t.Fatalf("after UpdateEvery: %v %+v; want Updated with RSSI -90", ev.Kind, ev.Lock)
			}
			if d := a.DroppedEvents(); d != 0 {
				t.Fatalf("%d events dropped", d)
			}
			if n := a.DecodedAdverts(); tapped != (n > 0) {
				t.Fatalf("%d advertisements decoded by the tap", n)
			}
		})
	}
}

// nextEvent is the adapter's next event.
func nextEvent(t *testing.T, a *Adapter) Event {
	t.Helper()
	select {
	case ev, ok := <-a.Events():
		if !ok {
			t.Fatal("Events closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	return Event{}
}

// TestLostDiscoveringSignalCostsNoPowerCycle: the client's Discovering
// flag goes stale (a PropertiesChanged lost) while its own discovery
// session runs. The health check's StartDiscovery then answers
// InProgress, as bluetoothd answers a client whose session runs; the
// client reads Discovering from bluetoothd before counting a strike, so
// even with one strike enough no power cycle follows. A real wedge
// (Discovering false, StartDiscovery InProgress) is still power-cycled.
func TestLostDiscoveringSignalCostsNoPowerCycle(t *testing.T) {
	bus := dbustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	emu, err := emulator.Start(ctx, emulator.Options{Addr: bus.Addr, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	a, err := Open(ctx, bus.Conn(t), Options{SweepEvery: 20 * time.Millisecond, WedgeDiscoveryStrikes: 1,
		WedgeConnectFailures: -1, MinPowerCycleInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	waitHealth := func(n uint64) {
		t.Helper()
		h := a.HealthChecks()
		for deadline := time.Now().Add(20 * time.Second); a.HealthChecks() < h+n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d health checks", n)
			}
		}
	}
	for deadline := time.Now().Add(20 * time.Second); !a.discovering.Load(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("discovery never started")
		}
	}
	a.discovering.Store(false)
	waitHealth(3)
	if c, e := a.PowerCycles(), emu.PowerCycles(); c != 0 || e != 0 {
		t.Fatalf("a stale Discovering flag cost a power cycle (client %d, bluetoothd %d)", c, e)
	}
	if !a.discovering.Load() {
		t.Fatal("the Discovering flag was not read again")
	}
	if err := emu.Wedge(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); a.PowerCycles() != 1 || emu.PowerCycles() != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a wedge was not power-cycled (client %d, bluetoothd %d)", a.PowerCycles(), emu.PowerCycles())
		}
	}
}
