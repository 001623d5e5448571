package bluez_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bluez/internal/dbustest"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
)

// realStackWorld is the client, an emulator with opts and one lock,
// discovered.
func realStackWorld(t *testing.T, opts emulator.Options) (*emulator.Emulator, *dbus.Conn, *bluez.Adapter, bluez.LockInfo) {
	t.Helper()
	bus := dbustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	opts.Addr, opts.RadioInterval = bus.Addr, 20*time.Millisecond
	emu, err := emulator.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	fleet := channeltest.NewFleet(t, "acme")
	lp := fleet.Lock(t, 0x4c4b0000000000d1)
	l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
		Actuator: &locktest.Actuator{}, RTC: func() time.Time { return fleet.Now }})
	if err != nil {
		t.Fatal(err)
	}
	const addr = "C0:00:00:00:00:D1"
	if err := emu.AddLock(l, addr, emulator.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	conn := bus.Conn(t)
	ad, err := bluez.Open(ctx, conn, bluez.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ad.Close() })
	for {
		for _, li := range ad.Locks() {
			if li.Err == nil && li.LockID == l.ID() {
				return emu, conn, ad, li
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("lock not discovered")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func servicesResolved(t *testing.T, conn *dbus.Conn, dev dbus.ObjectPath) bool {
	t.Helper()
	var v dbus.Variant
	if err := conn.Object(bluez.BusName, dev).Call("org.freedesktop.DBus.Properties.Get", 0, bluez.IfaceDevice, "ServicesResolved").Store(&v); err != nil {
		t.Fatal(err)
	}
	r, _ := v.Value().(bool)
	return r
}

// TestConnectWaitsForServicesResolved: real BlueZ replies to
// Device1.Connect before ServicesResolved, 0.1-3.5 s before (issue 13);
// the client's Connect returns only once the services are resolved, on a
// first connection and on a reconnection (the GATT cache restore), with
// the MTU the Exchange MTU settled (the lock's 247 against BlueZ's 517).
func TestConnectWaitsForServicesResolved(t *testing.T) {
	_, conn, ad, li := realStackWorld(t, emulator.Options{ResolveDelay: time.Second})
	for round := 1; round <= 2; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		dev, err := bluez.Connect(ctx, conn, bluez.DeviceOptions{Path: li.Path, Dispatcher: ad.Dispatcher()})
		cancel()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !servicesResolved(t, conn, li.Path) {
			t.Fatalf("round %d: Connect returned before ServicesResolved", round)
		}
		if dev.MTU() != emulator.DefaultLockMTU {
			t.Fatalf("round %d: MTU %d, want %d", round, dev.MTU(), emulator.DefaultLockMTU)
		}
		if err := dev.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConnectAfterLostStartNotify: under EATT, bluetoothd 5.66 can lose
// StartNotify's CCC write (emulator.Faults.LostStartNotify): the client's
// Connect fails with its call timeout and drops the link, and the next
// Connect works.
func TestConnectAfterLostStartNotify(t *testing.T) {
	emu, conn, ad, li := realStackWorld(t, emulator.Options{})
	if err := emu.InjectFaults(li.Address, emulator.Faults{LostStartNotify: 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := bluez.Connect(ctx, conn, bluez.DeviceOptions{Path: li.Path, Dispatcher: ad.Dispatcher(), CallTimeout: 500 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect with a lost StartNotify: %v, want its call timeout", err)
	}
	dev, err := bluez.Connect(ctx, conn, bluez.DeviceOptions{Path: li.Path, Dispatcher: ad.Dispatcher()})
	if err != nil {
		t.Fatalf("Connect after the lost request: %v", err)
	}
	_ = dev.Close()
}

// TestConnectGivesUpOnSlowResolve: a connection whose services take
// longer to resolve than the caller's deadline (the tier's EATT mode: 30
// s on a bonded reconnection) fails with the deadline and leaves no link
// up; the next Connect works.
func TestConnectGivesUpOnSlowResolve(t *testing.T) {
	emu, conn, ad, li := realStackWorld(t, emulator.Options{})
	if err := emu.InjectFaults(li.Address, emulator.Faults{SlowResolve: time.Minute}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err := bluez.Connect(ctx, conn, bluez.DeviceOptions{Path: li.Path, Dispatcher: ad.Dispatcher()})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect with services resolving for a minute: %v, want the deadline", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev, err := bluez.Connect(ctx, conn, bluez.DeviceOptions{Path: li.Path, Dispatcher: ad.Dispatcher()})
	if err != nil {
		t.Fatalf("Connect after giving up: %v", err)
	}
	_ = dev.Close()
}
