package dfulink_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/dfu/controller"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/device"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
	"github.com/gatewayd/gatewayd/internal/dfulink"
)

const (
	lockAddr = "DC:A6:32:01:02:03"
	oldVer   = 10000 // "1.0.0"
	newVer   = 10100 // "1.1.0"
)

// rig: a real dbus-daemon, the emulator hosting one whole reference lock
// (application and bootloader, firmware/lock/device), our adapter.
type rig struct {
	t       *testing.T
	ctx     context.Context
	bus     *emulator.Bus
	emu     *emulator.Emulator
	conn    *dbus.Conn
	ad      *bluez.Adapter
	fleet   *channeltest.Fleet
	admin   channeltest.Party
	gateway channeltest.Party
	key     *ecdsa.PrivateKey
	dev     *device.Device
	path    dbus.ObjectPath // the lock's device object
	counter uint64
}

func newRig(t *testing.T, adapterMTU, lockMTU int) *rig {
	t.Helper()
	// A safety net only: every wait below is for an event.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	bus, err := emulator.StartBus(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("%v (the BlueZ emulator needs dbus-daemon: run scripts/deps.sh)", err)
	}
	t.Cleanup(func() { bus.Close() })
	emu, err := emulator.Start(ctx, emulator.Options{Addr: bus.Addr, Seed: 1, MTU: adapterMTU,
		RadioInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	f := channeltest.NewFleet(t, "acme")
	d := sha256.Sum256([]byte("dfulink test dfu key"))
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, ctx: ctx, bus: bus, emu: emu, fleet: f, key: key,
		admin: f.Operator(t, "alice", cred.RoleAdmin), gateway: f.Gateway(t, "gw-dock-1")}
	lp := f.Lock(t, 0x4c4b000000000001)
	r.dev, err = device.New(device.Options{
		Lock: lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: f.Roots, Store: locktest.NewStore(),
			Actuator: &locktest.Actuator{}, RTC: func() time.Time { return f.Now }, Rand: rand.Reader},
		Bootloader: target.Options{Key: &key.PublicKey, Firmware: []byte("version 1.0.0"),
			Device: dfu.Device{HWVersion: 52, SoftDeviceFWID: 0x0101, AppVersion: oldVer, BootloaderVersion: 1}},
		Address: lockAddr,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.AddDevice(r.dev, lockAddr, emulator.LockOptions{MTU: lockMTU}); err != nil {
		t.Fatal(err)
	}
	r.conn, err = dbus.Connect(bus.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.conn.Close() })
	r.ad, err = bluez.Open(ctx, r.conn, bluez.Options{SweepEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.ad.Close() })
	l, err := r.dev.Lock()
	if err != nil {
		t.Fatal(err)
	}
	r.path = r.waitFor(func() (dbus.ObjectPath, bool) {
		for _, li := range r.ad.Locks() {
			if li.LockID == l.ID() {
				return li.Path, true
			}
		}
		return "", false
	}, "the lock's advertisement")
	return r
}

// waitFor polls cond until it holds (the rig's context is the safety net).
func (r *rig) waitFor(cond func() (dbus.ObjectPath, bool), what string) dbus.ObjectPath {
	r.t.Helper()
	for {
		if p, ok := cond(); ok {
			return p
		}
		select {
		case <-r.ctx.Done():
			r.t.Fatalf("waiting for %s: %v", what, r.ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// lockSession connects to the lock's application over BlueZ and runs the
// secure channel as the gateway. A connection can fail while the lock is
// not back on the radio yet: retried until the rig's deadline.
func (r *rig) lockSession() (*lockclient.Client, *bluez.Device) {
	r.t.Helper()
	for {
		dev, err := r.ad.Connect(r.ctx, bluez.DeviceOptions{Path: r.path})
		if err == nil {
			ch, err := channel.Dial(r.ctx, channel.NewFragmentTransport(dev, fragment.Options{}), r.fleet.GatewayConfig(r.gateway))
			if err != nil {
				r.t.Fatalf("handshake: %v", err)
			}
			return lockclient.New(ch), dev
		}
		if r.ctx.Err() != nil {
			r.t.Fatalf("connecting to the lock: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *rig) pkg(v uint32, fw []byte) *dfu.Image {
	r.t.Helper()
	data, err := dfu.Generate(dfu.Spec{Key: r.key, HWVersion: 52, SDReq: []uint32{0x0101},
		Images: []dfu.ImageSpec{{Kind: dfu.KindApplication, Name: "lock_app", Firmware: fw, FWVersion: v}}})
	if err != nil {
		r.t.Fatal(err)
	}
	p, err := dfu.Parse(data, dfu.Limits{})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := p.Verify(dfu.Policy{Key: &r.key.PublicKey, Device: dfu.Device{HWVersion: 52, SoftDeviceFWID: 0x0101, AppVersion: oldVer, BootloaderVersion: 1}}); err != nil {
		r.t.Fatalf("Verify: %v", err)
	}
	return p.Images[0]
}

// enterDFU sends an admin-signed enter-dfu for img over the lock's secure
// channel, through BlueZ.
func (r *rig) enterDFU(img *dfu.Image) {
	r.t.Helper()
	l, err := r.dev.Lock()
	if err != nil {
		r.t.Fatal(err)
	}
	c, dev := r.lockSession()
	defer dev.Close()
	r.counter++
	var id [16]byte
	_, _ = rand.Read(id[:])
	h := img.InitHash()
	signed, err := command.Sign(r.admin.Key, r.admin.Cert.Raw, command.Body{LockID: l.ID(), Op: command.OpEnterDFU,
		Args: command.Args{InitHash: h[:]}, CommandID: id, NotAfter: r.fleet.Now.Add(time.Hour), Counter: r.counter})
	if err != nil {
		r.t.Fatal(err)
	}
	res, err := c.EnterDFU(r.ctx, signed)
	if err != nil {
		r.t.Fatalf("EnterDFU: %v", err)
	}
	if res.Status != command.StatusOK {
		r.t.Fatalf("enter-dfu: %v %q", res.Status, res.Detail)
	}
}

// scanDFU runs a discovery for the DFU service from its own bus
// connection, as the gateway's DFU side will: BlueZ merges it with the
// adapter's lock-service filter.
func (r *rig) scanDFU() {
	r.t.Helper()
	c, err := dbus.Connect(r.bus.Addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	a := c.Object(bluez.BusName, r.ad.Path())
	if err := a.CallWithContext(r.ctx, bluez.IfaceAdapter+".SetDiscoveryFilter", 0, map[string]dbus.Variant{
		"UUIDs": dbus.MakeVariant([]string{dfulink.ServiceUUID}), "Transport": dbus.MakeVariant("le")}).Err; err != nil {
		r.t.Fatalf("SetDiscoveryFilter: %v", err)
	}
	if err := a.CallWithContext(r.ctx, bluez.IfaceAdapter+".StartDiscovery", 0).Err; err != nil {
		r.t.Fatalf("StartDiscovery: %v", err)
	}
}

// bootloader waits for the bootloader's device at address+1 and returns
// its path and advertised UUIDs and name.
func (r *rig) bootloader() dbus.ObjectPath {
	r.t.Helper()
	p := dfulink.DevicePath(r.ad.Path(), device.BootloaderAddress(lockAddr))
	r.waitFor(func() (dbus.ObjectPath, bool) {
		var props map[string]dbus.Variant
		err := r.conn.Object(bluez.BusName, p).CallWithContext(r.ctx, "org.freedesktop.DBus.Properties.GetAll", 0,
			bluez.IfaceDevice).Store(&props)
		if err != nil {
			return "", false
		}
		name, _ := props["Name"].Value().(string)
		uuids, _ := props["UUIDs"].Value().([]string)
		if name != device.BootloaderName || len(uuids) != 1 || uuids[0] != dfulink.ServiceUUID {
			r.t.Fatalf("bootloader advertises %q %v, want %q [%s]", name, uuids, device.BootloaderName, dfulink.ServiceUUID)
		}
		return p, true
	}, "the bootloader at address+1")
	return p
}

// send connects to the bootloader and runs the controller once.
func (r *rig) send(p dbus.ObjectPath, img *dfu.Image, wantMTU int) (controller.Stats, error) {
	r.t.Helper()
	link, err := dfulink.Connect(r.ctx, r.conn, r.ad, dfulink.Options{Path: p})
	if err != nil {
		r.t.Fatalf("dfulink.Connect: %v", err)
	}
	defer func() { _ = link.Close() }()
	if link.ATTMTU() != wantMTU {
		r.t.Fatalf("ATT MTU %d, want %d", link.ATTMTU(), wantMTU)
	}
	return controller.New(controller.Options{}).Send(r.ctx, link, img)
}

// waitBack waits for the lock to run the application again and checks
// that status, over BlueZ and the secure channel, reports version v.
func (r *rig) waitBack(v uint32) {
	r.t.Helper()
	r.waitFor(func() (dbus.ObjectPath, bool) { return "", r.dev.Mode() == device.ModeApplication }, "the application")
	c, dev := r.lockSession()
	defer dev.Close()
	res, err := c.Status(r.ctx)
	if err != nil {
		r.t.Fatalf("status: %v", err)
	}
	if res.Status != command.StatusOK || res.Firmware != device.VersionString(v) {
		r.t.Fatalf("status %v reports firmware %q, want %q", res.Status, res.Firmware, device.VersionString(v))
	}
}

func image(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ 0x5a
	}
	return b
}

// TestUpdateOverBlueZ: enter-dfu over the secure channel through BlueZ,
// the lock leaves its address, the bootloader appears at address+1 with
// the DFU service, the controller sends the package over dfulink at the
// connection's MTU (the smaller of adapter's and lock's), the lock
// activates it and is back at its address reporting the new version.
func TestUpdateOverBlueZ(t *testing.T) {
	for _, tc := range []struct{ adapter, lock, want int }{
		{23, 247, 23},
		{517, 247, 247},
	} {
		t.Run(fmt.Sprintf("MTU%d", tc.want), func(t *testing.T) {
			r := newRig(t, tc.adapter, tc.lock)
			fw := image(10000)
			img := r.pkg(newVer, fw)
			r.scanDFU()
			r.enterDFU(img)
			p := r.bootloader()
			if m := r.dev.Mode(); m != device.ModeBootloader {
				t.Fatalf("mode %v with the bootloader advertising, want bootloader", m)
			}
			st, err := r.send(p, img, tc.want)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if st.ResumedAt != 0 || st.PacketBytes < len(fw) {
				t.Fatalf("stats %+v: want a whole transfer of %d bytes", st, len(fw))
			}
			t.Logf("%+v", st)
			r.waitBack(newVer)
			got, v := r.dev.Firmware()
			if string(got) != string(fw) || v != newVer {
				t.Fatalf("runs %d bytes at version %d", len(got), v)
			}
		})
	}
}

// TestUpdateResumesAfterDrop: the link to the bootloader drops about 30 %
// into the firmware; a new connection resumes where the bootloader
// stands (not from zero), and the update completes.
func TestUpdateResumesAfterDrop(t *testing.T) {
	r := newRig(t, 517, 247)
	fw := image(20000)
	img := r.pkg(newVer, fw)
	r.scanDFU()
	r.enterDFU(img)
	p := r.bootloader()
	writes := len(img.InitPacket.Raw)/244 + 1 + len(fw)*3/10/244
	if err := r.emu.InjectFaults(device.BootloaderAddress(lockAddr), emulator.Faults{DropAfterWrites: writes}); err != nil {
		t.Fatal(err)
	}
	_, err := r.send(p, img, 247)
	if !errors.Is(err, controller.ErrDisconnected) {
		t.Fatalf("Send over the dropping link: %v, want controller.ErrDisconnected", err)
	}
	if m := r.dev.Mode(); m != device.ModeBootloader {
		t.Fatalf("mode %v after the drop, want bootloader", m)
	}
	st, err := r.send(p, img, 247)
	if err != nil {
		t.Fatalf("resumed Send: %v", err)
	}
	t.Logf("resumed at %d of %d bytes: %+v", st.ResumedAt, len(fw), st)
	if !st.InitResumed || st.ResumedAt == 0 || st.ResumedAt >= len(fw) {
		t.Fatalf("resumed stats %+v: want the init packet kept and a resume inside the image", st)
	}
	if st.PacketBytes >= len(fw) {
		t.Fatalf("resume sent %d bytes, the image is %d: not resumed", st.PacketBytes, len(fw))
	}
	r.waitBack(newVer)
}

// TestBootloaderService: in DFU mode the lock is gone from its address
// (a connection there fails) and its bootloader at address+1 exports the
// Secure DFU service as docs/dfu.md §4 lists it: Control Point (write,
// notify), Packet (write without response), each with the connection's
// MTU; a Control Point request before notifications are on is refused.
func TestBootloaderService(t *testing.T) {
	r := newRig(t, 517, 247)
	img := r.pkg(newVer, image(1000))
	r.scanDFU()
	r.enterDFU(img)
	p := r.bootloader() // the lock left its address before
	cctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	if dev, err := r.ad.Connect(cctx, bluez.DeviceOptions{Path: r.path}); err == nil {
		_ = dev.Close()
		t.Fatal("the lock's address took a connection in DFU mode")
	}
	dobj := r.conn.Object(bluez.BusName, p)
	if err := dobj.CallWithContext(r.ctx, bluez.IfaceDevice+".Connect", 0).Err; err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer dobj.CallWithContext(r.ctx, bluez.IfaceDevice+".Disconnect", 0)
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	r.waitFor(func() (dbus.ObjectPath, bool) {
		var v dbus.Variant
		if err := dobj.CallWithContext(r.ctx, "org.freedesktop.DBus.Properties.Get", 0, bluez.IfaceDevice, "ServicesResolved").Store(&v); err != nil {
			t.Fatal(err)
		}
		ok, _ := v.Value().(bool)
		return "", ok
	}, "ServicesResolved")
	if err := r.conn.Object(bluez.BusName, "/").CallWithContext(r.ctx, "org.freedesktop.DBus.ObjectManager.GetManagedObjects", 0).Store(&objs); err != nil {
		t.Fatal(err)
	}
	chars := map[string]map[string]dbus.Variant{}
	var cp dbus.ObjectPath
	services := 0
	for op, ifs := range objs {
		if !strings.HasPrefix(string(op), string(p)+"/") {
			continue
		}
		if s, ok := ifs[bluez.IfaceGattService]; ok {
			services++
			if u, _ := s["UUID"].Value().(string); u != dfulink.ServiceUUID {
				t.Errorf("service %s on the bootloader", u)
			}
		}
		if c, ok := ifs[bluez.IfaceGattCharacteristic]; ok {
			u, _ := c["UUID"].Value().(string)
			chars[u] = c
			if u == dfulink.ControlPointUUID {
				cp = op
			}
		}
	}
	if services != 1 || len(chars) != 2 {
		t.Fatalf("%d services, characteristics %v: want the DFU service with two", services, chars)
	}
	for u, want := range map[string][]string{dfulink.ControlPointUUID: {"write", "notify"}, dfulink.PacketUUID: {"write-without-response"}} {
		flags, _ := chars[u]["Flags"].Value().([]string)
		if fmt.Sprint(flags) != fmt.Sprint(want) {
			t.Errorf("%s flags %v, want %v", u, flags, want)
		}
		if m, _ := chars[u]["MTU"].Value().(uint16); m != 247 {
			t.Errorf("%s MTU %d, want 247", u, m)
		}
	}
	err := r.conn.Object(bluez.BusName, cp).CallWithContext(r.ctx, bluez.IfaceGattCharacteristic+".WriteValue", 0,
		dfu.SetPRNRequest(0), map[string]dbus.Variant{"type": dbus.MakeVariant(bluez.WriteRequest)}).Err
	if err == nil {
		t.Fatal("a Control Point request without notifications on was taken")
	}
}

// TestAttackOtherPackageOverBlueZ: an enter-dfu names one package; over
// BlueZ the bootloader refuses another one signed by the same fleet DFU
// key at its init packet's Execute (operation not permitted), nothing is
// activated, and the lock still runs its old version after a reset.
func TestAttackOtherPackageOverBlueZ(t *testing.T) {
	r := newRig(t, 517, 247)
	named := r.pkg(newVer, image(3000))
	other := r.pkg(newVer, image(5000))
	r.scanDFU()
	r.enterDFU(named)
	p := r.bootloader()
	_, err := r.send(p, other, 247)
	var re *dfu.ResponseError
	if !errors.Is(err, dfu.ErrRefused) || !errors.As(err, &re) || re.Result != dfu.ResNotPermitted {
		t.Fatalf("Send of another package: %v, want refused with operation not permitted", err)
	}
	if m := r.dev.Mode(); m != device.ModeBootloader {
		t.Fatalf("mode %v, want still the bootloader", m)
	}
	if err := r.dev.PowerCut(); err != nil {
		t.Fatal(err)
	}
	r.waitBack(oldVer)
}
