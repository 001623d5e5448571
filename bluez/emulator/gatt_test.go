package emulator

import (
	"context"
	"crypto/rand"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// gattLink is the gateway's side of a connection, as a BlueZ client sees
// it: WriteValue on Inbox, PropertiesChanged of Outbox's Value.
type gattLink struct {
	c      *dbus.Conn
	inbox  dbus.ObjectPath
	outbox dbus.ObjectPath
	sigs   chan *dbus.Signal
	mtu    int
}

func newGATTLink(t *testing.T, w *world, dev dbus.ObjectPath, mtu int) *gattLink {
	t.Helper()
	c := w.bus.Conn(t)
	l := &gattLink{c: c, inbox: dev + "/service000a/char000b", outbox: dev + "/service000a/char000d",
		sigs: make(chan *dbus.Signal, 1024), mtu: mtu}
	if err := c.AddMatchSignal(dbus.WithMatchSender("org.bluez"), dbus.WithMatchObjectPath(l.outbox),
		dbus.WithMatchInterface(ifaceProps), dbus.WithMatchMember("PropertiesChanged")); err != nil {
		t.Fatal(err)
	}
	c.Signal(l.sigs)
	t.Cleanup(func() { c.RemoveSignal(l.sigs) })
	if err := c.Object("org.bluez", l.outbox).CallWithContext(ctxT(t), ifaceChar+".StartNotify", 0).Err; err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *gattLink) MTU() int { return l.mtu }

func (l *gattLink) WritePacket(ctx context.Context, p []byte) error {
	return l.c.Object("org.bluez", l.inbox).CallWithContext(ctx, ifaceChar+".WriteValue", 0, p,
		map[string]dbus.Variant{"type": v("command")}).Err
}

func (l *gattLink) ReadPacket(ctx context.Context) ([]byte, error) {
	for {
		select {
		case s := <-l.sigs:
			if !isPropsChanged(s, l.outbox, ifaceChar, "Value") {
				continue
			}
			return s.Body[1].(map[string]dbus.Variant)["Value"].Value().([]byte), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func TestConnectGATTRoundTripWithSignedCommand(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{MTU: 64})
	tl := w.lock(4)
	const addr = "C0:FF:EE:00:00:04"
	if err := e.AddLock(tl.l, addr, LockOptions{}); err != nil {
		t.Fatal(err)
	}
	w.discover(ServiceUUID)
	dev := e.DevicePath(addr)
	waitFor(t, "device", func() bool { _, ok := w.devices()[dev]; return ok })
	w.connect(dev)
	objs := w.objects()
	if objs[dev][ifaceDevice]["Connected"].Value() != true || objs[dev][ifaceDevice]["ServicesResolved"].Value() != true {
		t.Fatalf("device after Connect: %v", objs[dev][ifaceDevice])
	}
	// The property sets of BlueZ 5.66 (src/gatt-client.c), with no
	// Handle (added in 5.69).
	keys := func(p dbus.ObjectPath, iface string) string {
		return strings.Join(slices.Sorted(maps.Keys(objs[p][iface])), ",")
	}
	svcPath := dev + "/service000a"
	for p, want := range map[dbus.ObjectPath][2]string{
		svcPath:                        {ifaceService, "Device,Includes,Primary,UUID"},
		svcPath + "/char000b":          {ifaceChar, "Flags,MTU,Service,UUID,Value,WriteAcquired"},
		svcPath + "/char000d":          {ifaceChar, "Flags,MTU,NotifyAcquired,Notifying,Service,UUID,Value"},
		svcPath + "/char000d/desc000f": {ifaceDesc, "Characteristic,UUID,Value"},
		svcPath + "/char0010":          {ifaceChar, "Flags,MTU,Service,UUID,Value"},
	} {
		if got := keys(p, want[0]); got != want[1] {
			t.Errorf("%s %s: properties %s, want %s", p, want[0], got, want[1])
		}
	}
	svc := objs[svcPath][ifaceService]
	if svc["UUID"].Value() != ServiceUUID || svc["Primary"].Value() != true || svc["Device"].Value() != dev ||
		svc["Includes"].Signature().String() != "ao" {
		t.Fatalf("service %v", svc)
	}
	for path, uuid := range map[dbus.ObjectPath]string{"/service000a/char000b": InboxUUID,
		"/service000a/char000d": OutboxUUID, "/service000a/char0010": InfoUUID} {
		c := objs[dev+path][ifaceChar]
		if c["UUID"].Value() != uuid || c["Service"].Value() != dev+"/service000a" || c["MTU"].Value() != uint16(64) ||
			c["Flags"].Signature().String() != "as" || c["Value"].Signature().String() != "ay" {
			t.Fatalf("%s: %v", path, c)
		}
	}
	if x := objs[svcPath+"/char000d"][ifaceChar]; x["NotifyAcquired"].Value() != false || x["Notifying"].Value() != false {
		t.Fatalf("Outbox %v", x)
	}
	if x := objs[svcPath+"/char000b"][ifaceChar]["WriteAcquired"]; x.Value() != false {
		t.Fatalf("Inbox WriteAcquired %v", x)
	}
	ccc := objs[svcPath+"/char000d/desc000f"][ifaceDesc]
	if ccc["UUID"].Value() != CCCUUID || ccc["Characteristic"].Value() != svcPath+"/char000d" ||
		ccc["Value"].Signature().String() != "ay" {
		t.Fatalf("CCC %v", ccc)
	}
	var info []byte
	if err := w.call(dev+"/service000a/char0010", ifaceChar+".ReadValue", map[string]dbus.Variant{}).Store(&info); err != nil ||
		string(info) != string(infoValue) {
		t.Fatalf("Info % x %v", info, err)
	}
	wantErr(t, w.call(dev+"/service000a/char000b", ifaceChar+".WriteValue", make([]byte, 62), map[string]dbus.Variant{}).Err,
		"org.bluez.Error.InvalidValueLength")
	// BlueZ 5.66 dev_connect answers a connected LE device with success.
	w.connect(dev)

	// Notify sessions are per client: one that leaves the bus loses its own.
	outbox := dev + "/service000a/char000d"
	wantErr(t, w.call(outbox, ifaceChar+".StopNotify").Err, "org.bluez.Error.Failed")
	wantErr(t, w.call(dev+"/service000a/char000b", ifaceChar+".StartNotify").Err, "org.bluez.Error.NotSupported")
	other, err := w.bus.Dial()
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Object("org.bluez", outbox).CallWithContext(ctxT(t), ifaceChar+".StartNotify", 0).Err; err != nil {
		t.Fatal(err)
	}
	_ = other.Close()
	w.sigs.wait(t, "Notifying false", func(s *dbus.Signal) bool {
		return isPropsChanged(s, outbox, ifaceChar, "Notifying") && s.Body[1].(map[string]dbus.Variant)["Notifying"].Value() == false
	})

	// EDHOC over GATT, then a status request and an operator-signed unlock.
	gl := newGATTLink(t, w, dev, 64)
	ctx := ctxT(t)
	conn, err := channel.Dial(ctx, channel.NewFragmentTransport(gl, fragment.Options{}), w.fleet.GatewayConfig(w.fleet.Gateway(t, "gw-1")))
	if err != nil {
		t.Fatalf("handshake over GATT: %v", err)
	}
	c := lockclient.New(conn)
	r, err := c.Status(ctx)
	if err != nil || r.Status != command.StatusOK {
		t.Fatalf("status: %+v %v", r, err)
	}
	op := w.fleet.Operator(t, "otto", cred.RoleOperator)
	var cid [16]byte
	_, _ = rand.Read(cid[:])
	signed, err := command.Sign(op.Key, op.Cert.Raw, command.Body{LockID: tl.l.ID(), Op: command.OpUnlock,
		CommandID: cid, NotAfter: w.fleet.Now.Add(time.Hour), Counter: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, err = c.Signed(ctx, command.OpUnlock, signed)
	if err != nil || r.Status != command.StatusOK || tl.act.State() != command.StateUnlocked {
		t.Fatalf("signed unlock: %+v %v, bolt %v", r, err, tl.act.State())
	}

	// Disconnect ends the lock's Serve; the GATT objects stay (BlueZ 5.66
	// with Cache = always), and calls on them fail "Not connected".
	w.mustCall(dev, ifaceDevice+".Disconnect")
	w.sigs.wait(t, "Connected false", func(s *dbus.Signal) bool {
		return isPropsChanged(s, dev, ifaceDevice, "Connected") && s.Body[1].(map[string]dbus.Variant)["Connected"].Value() == false
	})
	objs = w.objects()
	if _, ok := objs[dev+"/service000a"]; !ok || objs[dev][ifaceDevice]["Connected"].Value() != false {
		t.Fatal("GATT objects gone or Connected left after Disconnect")
	}
	wantErr(t, w.call(dev, ifaceDevice+".Disconnect").Err, "org.bluez.Error.NotConnected")
	if _, err := c.Status(ctx); err == nil {
		t.Fatal("status over a closed connection")
	}
	wantNotConnected(t, w.call(dev+"/service000a/char000b", ifaceChar+".WriteValue", []byte{0}, map[string]dbus.Variant{}).Err)
}

// wantNotConnected checks BlueZ 5.66's answer to a GATT call on a
// disconnected device (src/gatt-client.c: btd_error_failed(msg, "Not
// connected")).
func wantNotConnected(t *testing.T, err error) {
	t.Helper()
	wantErr(t, err, "org.bluez.Error.Failed")
	if de, ok := err.(dbus.Error); !ok || len(de.Body) != 1 || de.Body[0] != "Not connected" {
		t.Fatalf("error %#v, want Failed \"Not connected\"", err)
	}
}

func TestConnectErrors(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{MaxConnections: 1})
	attempting, release := make(chan struct{}, 1), make(chan struct{})
	e.mu.Lock()
	e.connectHook = func() { attempting <- struct{}{}; <-release }
	e.mu.Unlock()
	var devs []dbus.ObjectPath
	for i := range 3 {
		a := addrOf(0x100 + i)
		if err := e.AddLock(w.lock(uint64(10+i)).l, a, LockOptions{}); err != nil {
			t.Fatal(err)
		}
		devs = append(devs, e.DevicePath(a))
	}
	w.discover(ServiceUUID)
	waitFor(t, "devices", func() bool { return len(w.devices()) == 3 })
	var wg sync.WaitGroup
	var first error
	wg.Go(func() { first = w.call(devs[0], ifaceDevice+".Connect").Err })
	<-attempting
	wantErr(t, w.call(devs[1], ifaceDevice+".Connect").Err, "org.bluez.Error.InProgress")
	close(release)
	wg.Wait()
	e.mu.Lock()
	e.connectHook = nil
	e.mu.Unlock()
	if first != nil {
		t.Fatal(first)
	}
	err := w.call(devs[1], ifaceDevice+".Connect").Err
	wantErr(t, err, "org.bluez.Error.Failed")
	var de dbus.Error
	if errors.As(err, &de) && (len(de.Body) != 1 || de.Body[0] != "le-connection-abort-by-local") {
		t.Fatalf("message %v", de.Body)
	}
	// A lock out of range cannot be connected.
	w.mustCall(devs[0], ifaceDevice+".Disconnect")
	if err := e.RemoveLock(addrOf(0x102)); err != nil {
		t.Fatal(err)
	}
	wantErr(t, w.call(devs[2], ifaceDevice+".Connect").Err, "org.bluez.Error.Failed")
	// Powering off drops connections.
	w.connect(devs[1])
	w.mustCall("/org/bluez/hci0", ifaceProps+".Set", ifaceAdapter, "Powered", v(false))
	if w.objects()[devs[1]][ifaceDevice]["Connected"].Value() != false {
		t.Fatal("still connected after power off")
	}
	wantErr(t, w.call(devs[1], ifaceDevice+".Connect").Err, "org.bluez.Error.NotReady")
}

func TestConnectLatency(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{ConnectLatency: 50 * time.Millisecond})
	if err := e.AddLock(w.lock(30).l, "C0:FF:EE:00:00:30", LockOptions{}); err != nil {
		t.Fatal(err)
	}
	w.discover()
	dev := e.DevicePath("C0:FF:EE:00:00:30")
	waitFor(t, "device", func() bool { _, ok := w.devices()[dev]; return ok })
	start := time.Now()
	w.connect(dev)
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Fatalf("Connect took %v, latency 50ms", took)
	}
}
