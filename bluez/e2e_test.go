package bluez_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bluez/internal/dbustest"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// TestClientAgainstEmulator runs the client against the BlueZ emulator on
// a real private bus: discover 200 reference locks, connect to one, run the
// EDHOC handshake and a signed unlock over GATT, disconnect — repeatedly,
// checking that goroutines and the client connection's match rules stay
// flat across cycles (TestLinkCyclesLeakNothing does 1,000 and also
// watches the heap).
func TestClientAgainstEmulator(t *testing.T) {
	bus := dbustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	emu, err := emulator.Start(ctx, emulator.Options{Addr: bus.Addr, Seed: 1,
		// 200 locks advertising twice a second with varying RSSI: about
		// 400 PropertiesChanged a second, as a busy dock would see.
		RadioInterval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()

	fleet := channeltest.NewFleet(t, "acme")
	gw, op := fleet.Gateway(t, "gw-dock-1"), fleet.Operator(t, "otto", cred.RoleOperator)
	const locks = 200
	var target *lock.Lock
	var act *locktest.Actuator
	for i := range locks {
		lp := fleet.Lock(t, uint64(0x4c4b000000000000+i))
		a := &locktest.Actuator{}
		l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
			Actuator: a, RTC: func() time.Time { return fleet.Now }})
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("C0:00:00:00:%02X:%02X", i/256, i%256)
		if err := emu.AddLock(l, addr, emulator.LockOptions{}); err != nil {
			t.Fatal(err)
		}
		if i == 7 {
			target, act = l, a
		}
	}

	conn := bus.Conn(t)
	ad, err := bluez.Open(ctx, conn, bluez.Options{CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ad.Close()
	var info bluez.LockInfo
	for deadline := time.Now().Add(20 * time.Second); ; {
		found := 0
		for _, li := range ad.Locks() {
			if li.Err == nil {
				found++
			}
			if li.LockID == target.ID() {
				info = li
			}
		}
		if found == locks && info.Path != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("discovered %d of %d locks", found, locks)
		}
		time.Sleep(20 * time.Millisecond)
	}

	via := bus.Conn(t)
	cycle := func(n uint64) {
		t.Helper()
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		defer ccancel()
		dev, err := bluez.Connect(cctx, conn, bluez.DeviceOptions{Path: info.Path, Dispatcher: ad.Dispatcher()})
		if err != nil {
			t.Fatalf("cycle %d: connect: %v", n, err)
		}
		defer dev.Close()
		ch, err := channel.Dial(cctx, channel.NewFragmentTransport(dev, fragment.Options{}), fleet.GatewayConfig(gw))
		if err != nil {
			t.Fatalf("cycle %d: handshake: %v", n, err)
		}
		var id [16]byte
		id[15] = byte(n)
		id[14] = byte(n >> 8)
		signed, err := command.Sign(op.Key, op.Cert.Raw, command.Body{LockID: target.ID(), Op: command.OpUnlock,
			CommandID: id, NotAfter: fleet.Now.Add(time.Hour), Counter: n})
		if err != nil {
			t.Fatal(err)
		}
		r, err := lockclient.New(ch).Signed(cctx, command.OpUnlock, signed)
		if err != nil || r.Status != command.StatusOK {
			t.Fatalf("cycle %d: unlock: %v %v", n, r, err)
		}
	}
	cycle(1)
	if act.Moves() != 1 {
		t.Fatalf("bolt moved %d times", act.Moves())
	}
	settle := func() (int, uint32) {
		var g int
		var rules uint32
		for range 50 {
			runtime.GC()
			g = runtime.NumGoroutine()
			rules, err = bus.MatchRules(ctx, via, conn.Names()[0])
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return g, rules
	}
	g0, r0 := settle()
	const cycles = 20
	for n := uint64(2); n < 2+cycles; n++ {
		cycle(n)
	}
	g1, r1 := settle()
	if r1 != r0 {
		t.Fatalf("match rules of the client connection: %d before, %d after %d cycles", r0, r1, cycles)
	}
	if g1 > g0+2 {
		t.Fatalf("goroutines: %d before, %d after %d cycles", g0, g1, cycles)
	}
	if act.Moves() != 1+cycles {
		t.Fatalf("bolt moved %d times, want %d", act.Moves(), 1+cycles)
	}
}

// TestClientRecoversFromBluetoothdRestart: bluetoothd crashes and comes
// back; the client, without being restarted, starts discovery again on
// the new daemon, sees the locks again, and a handshake works.
func TestClientRecoversFromBluetoothdRestart(t *testing.T) {
	bus := dbustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	emu, err := emulator.Start(ctx, emulator.Options{Addr: bus.Addr, Seed: 2, RadioInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	fleet := channeltest.NewFleet(t, "acme")
	gw := fleet.Gateway(t, "gw-dock-1")
	lp := fleet.Lock(t, 0x4c4b0000000000aa)
	l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
		Actuator: &locktest.Actuator{}, RTC: func() time.Time { return fleet.Now }})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.AddLock(l, "C0:00:00:00:00:AA", emulator.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	conn := bus.Conn(t)
	ad, err := bluez.Open(ctx, conn, bluez.Options{CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ad.Close()
	waitLock := func(what string) bluez.LockInfo {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			for _, li := range ad.Locks() {
				if li.LockID == l.ID() && li.Err == nil {
					return li
				}
			}
		}
		t.Fatalf("%s: lock not discovered", what)
		return bluez.LockInfo{}
	}
	waitLock("before the restart")

	emu2, err := emu.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer emu2.Close()
	for deadline := time.Now().Add(20 * time.Second); ad.Restarts() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the client did not notice the restart")
		}
	}
	info := waitLock("after the restart")
	dev, err := bluez.Connect(ctx, conn, bluez.DeviceOptions{Path: info.Path, Dispatcher: ad.Dispatcher()})
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	defer dev.Close()
	ch, err := channel.Dial(ctx, channel.NewFragmentTransport(dev, fragment.Options{}), fleet.GatewayConfig(gw))
	if err != nil {
		t.Fatalf("handshake after restart: %v", err)
	}
	r, err := lockclient.New(ch).Status(ctx)
	if err != nil || r.Status != command.StatusOK {
		t.Fatalf("status after restart: %v %v", r, err)
	}
}

// TestLinkCyclesLeakNothing: 1,000 connect/handshake/disconnect cycles
// through the client leave the goroutines, the client connection's match
// rules on the bus (org.freedesktop.DBus.Debug.Stats) and the live heap
// flat. Both measurements are taken after a warm-up of 100 cycles, with
// the heap measured after a forced GC; a leak of even 1 KiB a cycle would
// show as 900 KiB.
func TestLinkCyclesLeakNothing(t *testing.T) {
	bus := dbustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	emu, err := emulator.Start(ctx, emulator.Options{Addr: bus.Addr, Seed: 4, RadioInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	fleet := channeltest.NewFleet(t, "acme")
	gw := fleet.Gateway(t, "gw-dock-1")
	lp := fleet.Lock(t, 0x4c4b0000000000cc)
	l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
		Actuator: &locktest.Actuator{}, RTC: func() time.Time { return fleet.Now }})
	if err != nil {
		t.Fatal(err)
	}
	const addr = "C0:00:00:00:00:CC"
	if err := emu.AddLock(l, addr, emulator.LockOptions{Jitter: -1}); err != nil {
		t.Fatal(err)
	}
	conn := bus.Conn(t)
	ad, err := bluez.Open(ctx, conn, bluez.Options{CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ad.Close()
	path := emu.DevicePath(addr)
	for deadline := time.Now().Add(20 * time.Second); len(ad.Locks()) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("lock not discovered")
		}
	}
	cycle := func(n int) {
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		defer ccancel()
		dev, err := ad.Connect(cctx, bluez.DeviceOptions{Path: path})
		if err != nil {
			t.Fatalf("cycle %d: connect: %v", n, err)
		}
		if _, err := channel.Dial(cctx, channel.NewFragmentTransport(dev, fragment.Options{}), fleet.GatewayConfig(gw)); err != nil {
			t.Fatalf("cycle %d: handshake: %v", n, err)
		}
		if err := dev.Close(); err != nil {
			t.Fatalf("cycle %d: close: %v", n, err)
		}
	}
	via := bus.Conn(t)
	measure := func() (goroutines int, rules uint32, heap uint64) {
		// Let the last disconnect's signals and goroutines settle.
		for range 20 {
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rules, err := bus.MatchRules(ctx, via, conn.Names()[0])
		if err != nil {
			t.Fatal(err)
		}
		return runtime.NumGoroutine(), rules, ms.HeapAlloc
	}
	for n := range 100 {
		cycle(n)
	}
	g0, r0, h0 := measure()
	for n := 100; n < 1000; n++ {
		cycle(n)
	}
	g1, r1, h1 := measure()
	t.Logf("after 100 cycles: %d goroutines, %d match rules, heap %d KiB; after 1,000: %d, %d, %d KiB",
		g0, r0, h0>>10, g1, r1, h1>>10)
	if r1 != r0 {
		t.Errorf("match rules of the client connection: %d after 100 cycles, %d after 1,000", r0, r1)
	}
	if g1 > g0+2 {
		t.Errorf("goroutines: %d after 100 cycles, %d after 1,000", g0, g1)
	}
	if h1 > h0+900<<10 {
		t.Errorf("live heap grew by %d KiB over 900 cycles (more than 1 KiB a cycle)", (h1-h0)>>10)
	}
}
