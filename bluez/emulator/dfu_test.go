package emulator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
	"github.com/gatewayd/gatewayd/firmware/lock"
	lockdevice "github.com/gatewayd/gatewayd/firmware/lock/device"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
)

func (w *world) wholeLock(n uint64, addr string) *lockdevice.Device {
	w.t.Helper()
	p := w.fleet.Lock(w.t, n)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		w.t.Fatal(err)
	}
	d, err := lockdevice.New(lockdevice.Options{
		Lock: lock.Options{Cert: p.Cert, Key: p.Key, Roots: w.fleet.Roots, Store: locktest.NewStore(),
			Actuator: &locktest.Actuator{}, RTC: func() time.Time { return w.fleet.Now }, Rand: rand.Reader},
		Bootloader: target.Options{Key: &k.PublicKey, Firmware: []byte("v1"),
			Device: dfu.Device{HWVersion: 52, SoftDeviceFWID: 0x0101, AppVersion: 10000, BootloaderVersion: 1}},
		Address: addr})
	if err != nil {
		w.t.Fatal(err)
	}
	return d
}

// TestAddDeviceRefuses: AddDevice refuses an address that is not the
// device's, a lock MTU out of range, and an address (or address+1) a
// lock already has.
func TestAddDeviceRefuses(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{})
	d := w.wholeLock(1, "C0:00:00:00:00:10")
	if err := e.AddDevice(d, "C0:00:00:00:00:11", LockOptions{}); !errors.Is(err, ErrBadAddress) {
		t.Errorf("another address: %v, want ErrBadAddress", err)
	}
	if err := e.AddDevice(d, "C0:00:00:00:00:10", LockOptions{MTU: 600}); !errors.Is(err, ErrBadOptions) {
		t.Errorf("MTU 600: %v, want ErrBadOptions", err)
	}
	if err := e.AddLock(w.lock(2).l, "C0:00:00:00:00:11", LockOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.AddDevice(d, "C0:00:00:00:00:10", LockOptions{}); !errors.Is(err, ErrDuplicateLock) {
		t.Errorf("address+1 taken: %v, want ErrDuplicateLock", err)
	}
}

// TestAddDeviceHostsTheApplication: a whole lock in application mode
// advertises as any lock: the lock service and its payload at its
// address.
func TestAddDeviceHostsTheApplication(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{})
	addr := "C0:00:00:00:00:20"
	if err := e.AddDevice(w.wholeLock(1, addr), addr, LockOptions{}); err != nil {
		t.Fatal(err)
	}
	w.discover()
	p := e.DevicePath(addr)
	waitFor(t, "the lock's device", func() bool { _, ok := w.devices()[p]; return ok })
	props := w.devices()[p]
	if u, _ := props["UUIDs"].Value().([]string); len(u) != 1 || u[0] != ServiceUUID {
		t.Errorf("UUIDs %v, want the lock service", u)
	}
	if _, ok := props["ManufacturerData"]; !ok {
		t.Error("no lock payload")
	}
}
