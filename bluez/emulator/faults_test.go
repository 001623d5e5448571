package emulator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// mark is the number of signals received so far.
func (w *sigWatch) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.sigs)
}

// since returns the signals received after mark.
func (w *sigWatch) since(mark int) []*dbus.Signal {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.sigs[mark:])
}

// objectSignals renders the InterfacesAdded and InterfacesRemoved signals
// among sigs as "+path" and "-path", and Device1 Connected changes as
// "path Connected=v".
func objectSignals(sigs []*dbus.Signal) []string {
	var out []string
	for _, s := range sigs {
		switch {
		case s.Name == ifaceOM+".InterfacesAdded":
			out = append(out, fmt.Sprintf("+%s", s.Body[0]))
		case s.Name == ifaceOM+".InterfacesRemoved":
			out = append(out, fmt.Sprintf("-%s", s.Body[0]))
		case isPropsChanged(s, s.Path, ifaceDevice, "Connected"):
			out = append(out, fmt.Sprintf("%s Connected=%v", s.Path, s.Body[1].(map[string]dbus.Variant)["Connected"].Value()))
		}
	}
	return out
}

// hostAndDiscover hosts one lock per address and waits for their devices.
func hostAndDiscover(t *testing.T, w *world, e *Emulator, addrs ...string) {
	t.Helper()
	for i, a := range addrs {
		if err := e.AddLock(w.lock(uint64(100+i)).l, a, LockOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	w.discover(ServiceUUID)
	waitFor(t, "devices", func() bool {
		ds := w.devices()
		for _, a := range addrs {
			if _, ok := ds[e.DevicePath(a)]; !ok {
				return false
			}
		}
		return true
	})
}

func connected(w *world, dev dbus.ObjectPath) bool {
	return w.objects()[dev][ifaceDevice]["Connected"].Value() == true
}

// handshake runs EDHOC and a status request over GATT.
func handshake(t *testing.T, w *world, gl channel.Link) error {
	t.Helper()
	ctx := ctxT(t)
	conn, err := channel.Dial(ctx, channel.NewFragmentTransport(gl, fragment.Options{}), w.fleet.GatewayConfig(w.fleet.Gateway(t, "gw-1")))
	if err != nil {
		return err
	}
	_, err = lockclient.New(conn).Status(ctx)
	return err
}

func TestCCCDescriptor(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{})
	const addr = "C0:FF:EE:00:00:50"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	m := w.sigs.mark()
	w.connect(dev)
	svc := dev + "/service000a"
	outbox, ccc := svc+"/char000d", svc+"/char000d/desc000f"
	w.sigs.wait(t, "ServicesResolved", func(s *dbus.Signal) bool { return isPropsChanged(s, dev, ifaceDevice, "ServicesResolved") })
	// Exported as src/gatt-client.c export_service does: the service,
	// then each characteristic followed by its descriptors.
	want := []string{string(dev) + " Connected=true", "+" + string(svc), "+" + string(svc) + "/char000b", "+" + string(outbox),
		"+" + string(ccc), "+" + string(svc) + "/char0010"}
	if got := objectSignals(w.sigs.since(m)); !slices.Equal(got, want) {
		t.Fatalf("connect signals\n%q\nwant\n%q", got, want)
	}

	read := func() []byte {
		t.Helper()
		var b []byte
		if err := w.call(ccc, ifaceDesc+".ReadValue", map[string]dbus.Variant{}).Store(&b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	if b := read(); !slices.Equal(b, []byte{0, 0}) {
		t.Fatalf("CCC before StartNotify % x", b)
	}
	w.mustCall(outbox, ifaceChar+".StartNotify")
	if b := read(); !slices.Equal(b, []byte{1, 0}) {
		t.Fatalf("CCC after StartNotify % x", b)
	}
	var val []byte
	if err := w.call(ccc, ifaceProps+".Get", ifaceDesc, "Value").Store(&val); err != nil || !slices.Equal(val, []byte{1, 0}) {
		t.Fatalf("Value after ReadValue % x %v", val, err)
	}
	var tail []byte
	if err := w.call(ccc, ifaceDesc+".ReadValue", map[string]dbus.Variant{"Offset": v(uint16(1))}).Store(&tail); err != nil ||
		!slices.Equal(tail, []byte{0}) {
		t.Fatalf("ReadValue at offset 1: % x %v", tail, err)
	}
	wantErr(t, w.call(ccc, ifaceDesc+".ReadValue", map[string]dbus.Variant{"offset": v(uint32(1))}).Err, "org.bluez.Error.InvalidArguments")
	wantErr(t, w.call(ccc, ifaceDesc+".ReadValue", map[string]dbus.Variant{"offset": v(uint16(3))}).Err, "org.bluez.Error.InvalidOffset")
	err := w.call(ccc, ifaceDesc+".WriteValue", []byte{1, 0}, map[string]dbus.Variant{}).Err
	wantErr(t, err, "org.bluez.Error.NotPermitted")
	if de, ok := err.(dbus.Error); !ok || len(de.Body) != 1 || de.Body[0] != "Write not permitted" {
		t.Fatalf("WriteValue error %#v", err)
	}
	wantErr(t, w.call(svc+"/char000b", ifaceChar+".AcquireWrite", map[string]dbus.Variant{}).Err, "org.bluez.Error.NotSupported")

	var xml string
	if err := w.call(ccc, ifaceIntro+".Introspect").Store(&xml); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`<interface name="org.bluez.GattDescriptor1"><method name="ReadValue">`, `<method name="WriteValue">`,
		`<property name="Characteristic" type="o" access="read">`, `<property name="Value" type="ay" access="read">`} {
		if !strings.Contains(xml, s) {
			t.Errorf("descriptor introspection lacks %s", s)
		}
	}
	if err := w.call(outbox, ifaceIntro+".Introspect").Store(&xml); err != nil || !strings.Contains(xml, `<node name="desc000f"/>`) ||
		!strings.Contains(xml, `<method name="AcquireNotify">`) {
		t.Fatalf("Outbox introspection %v: %s", err, xml)
	}

	// Kept on disconnect (BlueZ 5.66, Cache = always): the cached Value
	// stays, and calls fail "Not connected" before any other check
	// (src/gatt-client.c descriptor_read_value, descriptor_write_value).
	m = w.sigs.mark()
	w.mustCall(dev, ifaceDevice+".Disconnect")
	w.sigs.wait(t, "Connected false", func(s *dbus.Signal) bool {
		return isPropsChanged(s, dev, ifaceDevice, "Connected") && s.Body[1].(map[string]dbus.Variant)["Connected"].Value() == false
	})
	want = []string{string(dev) + " Connected=false"}
	if got := objectSignals(w.sigs.since(m)); !slices.Equal(got, want) {
		t.Fatalf("disconnect signals\n%q\nwant\n%q", got, want)
	}
	if err := w.call(ccc, ifaceProps+".Get", ifaceDesc, "Value").Store(&val); err != nil || !slices.Equal(val, []byte{1, 0}) {
		t.Fatalf("cached Value after Disconnect % x %v", val, err)
	}
	wantNotConnected(t, w.call(ccc, ifaceDesc+".ReadValue", map[string]dbus.Variant{}).Err)
	wantNotConnected(t, w.call(ccc, ifaceDesc+".ReadValue", map[string]dbus.Variant{"offset": v(uint32(1))}).Err)
	wantNotConnected(t, w.call(ccc, ifaceDesc+".WriteValue", []byte{1, 0}, map[string]dbus.Variant{}).Err)
	wantNotConnected(t, w.call(svc+"/char000b", ifaceChar+".AcquireWrite", map[string]dbus.Variant{}).Err)
	wantNotConnected(t, w.call(outbox, ifaceChar+".AcquireNotify", map[string]dbus.Variant{}).Err)

	// The next connection registers the kept notify session again: the
	// lock's CCC reads 01 00 without a new StartNotify.
	w.connect(dev)
	if b := read(); !slices.Equal(b, []byte{1, 0}) {
		t.Fatalf("CCC after reconnecting % x", b)
	}
	w.mustCall(outbox, ifaceChar+".StopNotify")
	if b := read(); !slices.Equal(b, []byte{0, 0}) {
		t.Fatalf("CCC after StopNotify % x", b)
	}
}

func TestExchangeLatencyDelaysEveryWriteAndNotification(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{ExchangeLatency: time.Millisecond})
	var delayed sync.Map // kind → *atomic.Int64
	count := func(kind string) *atomic.Int64 {
		c, _ := delayed.LoadOrStore(kind, new(atomic.Int64))
		return c.(*atomic.Int64)
	}
	e.mu.Lock()
	e.exchangeHook = func(kind string) { count(kind).Add(1) }
	e.mu.Unlock()
	const addr = "C0:FF:EE:00:00:51"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	w.connect(dev)
	gl := &countingLink{gattLink: newGATTLink(t, w, dev, DefaultLockMTU)}
	if err := handshake(t, w, gl); err != nil {
		t.Fatal(err)
	}
	writes, notes := count("write").Load(), count("notify").Load()
	if writes == 0 || writes != gl.writes.Load() || notes != gl.reads.Load() {
		t.Fatalf("delayed %d writes and %d notifications; the gateway wrote %d and received %d",
			writes, notes, gl.writes.Load(), gl.reads.Load())
	}
}

type countingLink struct {
	*gattLink
	writes, reads atomic.Int64
}

func (l *countingLink) WritePacket(ctx context.Context, p []byte) error {
	err := l.gattLink.WritePacket(ctx, p)
	if err == nil {
		l.writes.Add(1)
	}
	return err
}

func (l *countingLink) ReadPacket(ctx context.Context) ([]byte, error) {
	p, err := l.gattLink.ReadPacket(ctx)
	if err == nil {
		l.reads.Add(1)
	}
	return p, err
}

func TestCloseEndsADelayedWrite(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{ExchangeLatency: time.Hour})
	entered := make(chan string, 16)
	e.mu.Lock()
	e.exchangeHook = func(kind string) { entered <- kind }
	e.mu.Unlock()
	const addr = "C0:FF:EE:00:00:52"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	w.connect(dev)
	res := make(chan error, 1)
	go func() {
		res <- w.call(dev+"/service000a/char000b", ifaceChar+".WriteValue", []byte{1, 2, 3}, map[string]dbus.Variant{}).Err
	}()
	if k := <-entered; k != "write" {
		t.Fatalf("delayed %s", k)
	}
	select {
	case err := <-res:
		t.Fatalf("WriteValue returned during its hour of latency: %v", err)
	default:
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err == nil {
		t.Fatal("a write cut short by Close succeeded")
	}
}

func TestInjectedConnectAbortsAndValidation(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{})
	const addr = "C0:FF:EE:00:00:53"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	if err := e.InjectFaults("c0:ff", Faults{}); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("bad address: %v", err)
	}
	if err := e.InjectFaults(addr, Faults{PairFail: -1}); !errors.Is(err, ErrBadFaults) {
		t.Fatalf("negative count: %v", err)
	}
	if err := e.InjectFaults(addr, Faults{ConnectAbort: 2}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		err := w.call(dev, ifaceDevice+".Connect").Err
		wantErr(t, err, "org.bluez.Error.Failed")
		if de := err.(dbus.Error); len(de.Body) != 1 || de.Body[0] != "le-connection-abort-by-local" {
			t.Fatalf("message %v", de.Body)
		}
	}
	w.connect(dev)
	if !connected(w, dev) {
		t.Fatal("third Connect did not connect")
	}
	// Clearing faults: a DropAfterWrites set then cleared never fires.
	if err := e.InjectFaults(addr, Faults{DropAfterWrites: 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.InjectFaults(addr, Faults{}); err != nil {
		t.Fatal(err)
	}
	w.mustCall(dev+"/service000a/char000b", ifaceChar+".WriteValue", []byte{0}, map[string]dbus.Variant{})
	if !connected(w, dev) {
		t.Fatal("a cleared fault dropped the connection")
	}
}

func TestDropAfterWritesMidExchange(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{})
	const addr = "C0:FF:EE:00:00:54"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	w.connect(dev)
	e.mu.Lock()
	c := e.devices[addr].conn
	e.mu.Unlock()
	inbox := dev + "/service000a/char000b"
	if err := e.InjectFaults(addr, Faults{DropAfterWrites: 2}); err != nil {
		t.Fatal(err)
	}
	w.mustCall(inbox, ifaceChar+".WriteValue", []byte{0}, map[string]dbus.Variant{})
	if !connected(w, dev) {
		t.Fatal("dropped after the first of two writes")
	}
	m := w.sigs.mark()
	// The second write is acknowledged, then the link goes silent.
	w.mustCall(inbox, ifaceChar+".WriteValue", []byte{0}, map[string]dbus.Variant{})
	w.sigs.wait(t, "Connected false", func(s *dbus.Signal) bool {
		return isPropsChanged(s, dev, ifaceDevice, "Connected") && s.Body[1].(map[string]dbus.Variant)["Connected"].Value() == false
	})
	var resolved []any
	for _, s := range w.sigs.since(m) {
		if isPropsChanged(s, dev, ifaceDevice, "ServicesResolved") {
			resolved = append(resolved, s.Body[1].(map[string]dbus.Variant)["ServicesResolved"].Value())
		}
	}
	if !slices.Equal(resolved, []any{false}) {
		t.Fatalf("ServicesResolved changes %v", resolved)
	}
	// The GATT objects stay (BlueZ 5.66, Cache = always).
	if got := objectSignals(w.sigs.since(m)); !slices.Equal(got, []string{string(dev) + " Connected=false"}) {
		t.Fatalf("drop signals %q", got)
	}
	select {
	case <-c.done: // the lock's Serve context is cancelled with it
	default:
		t.Fatal("connection not stopped")
	}
	wantNotConnected(t, w.call(inbox, ifaceChar+".WriteValue", []byte{0}, map[string]dbus.Variant{}).Err)
	// The fault is spent: a new connection, on the same objects, carries
	// a whole exchange.
	m = w.sigs.mark()
	w.connect(dev)
	waitFor(t, "ServicesResolved", func() bool {
		return slices.ContainsFunc(w.sigs.since(m), func(s *dbus.Signal) bool { return isPropsChanged(s, dev, ifaceDevice, "ServicesResolved") })
	})
	if got := objectSignals(w.sigs.since(m)); !slices.Equal(got, []string{string(dev) + " Connected=true"}) {
		t.Fatalf("reconnect signals %q", got)
	}
	if err := handshake(t, w, newGATTLink(t, w, dev, DefaultLockMTU)); err != nil {
		t.Fatal(err)
	}
}

func TestRandomFaultsAreSeeded(t *testing.T) {
	draws := func(seed uint64) []bool {
		w := newWorld(t)
		e := w.start(Options{Seed: seed, DropRate: 0.5, RadioInterval: time.Hour})
		e.mu.Lock()
		defer e.mu.Unlock()
		var out []bool
		for range 200 {
			out = append(out, e.dropAfterWriteLocked("C0:00:00:00:00:01"))
		}
		return out
	}
	a, b, c := draws(3), draws(3), draws(4)
	if !slices.Equal(a, b) || slices.Equal(a, c) {
		t.Fatal("drops are not a function of the seed")
	}
	n := 0
	for _, d := range a {
		if d {
			n++
		}
	}
	if n < 60 || n > 140 {
		t.Fatalf("%d drops in 200 writes at rate 0.5", n)
	}

	for _, o := range []Options{{DropRate: 1.5}, {AbortRate: -0.1}, {ExchangeLatency: -1}} {
		o.Addr = "unix:path=/nonexistent"
		if _, err := Start(context.Background(), o); !errors.Is(err, ErrBadOptions) {
			t.Errorf("Start(%+v): %v", o, err)
		}
	}

	// Rate 1: every Connect aborts; every first write drops.
	w := newWorld(t)
	e := w.start(Options{AbortRate: 1})
	const addr = "C0:FF:EE:00:00:55"
	hostAndDiscover(t, w, e, addr)
	wantErr(t, w.call(e.DevicePath(addr), ifaceDevice+".Connect").Err, "org.bluez.Error.Failed")
	w2 := newWorld(t)
	e2 := w2.start(Options{DropRate: 1})
	hostAndDiscover(t, w2, e2, addr)
	dev := e2.DevicePath(addr)
	w2.connect(dev)
	w2.mustCall(dev+"/service000a/char000b", ifaceChar+".WriteValue", []byte{0}, map[string]dbus.Variant{})
	waitFor(t, "drop", func() bool { return !connected(w2, dev) })
}

func TestInjectedPairFailure(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{PairFailureStall: 200 * time.Millisecond})
	const addr = "C0:FF:EE:00:00:56"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	agent := &testAgent{released: make(chan struct{})}
	if err := w.client.Export(agent, "/test/agent", ifaceAgent); err != nil {
		t.Fatal(err)
	}
	w.mustCall("/org/bluez", ifaceAgentMgr+".RegisterAgent", dbus.ObjectPath("/test/agent"), "KeyboardDisplay")
	w.connect(dev)
	if err := e.InjectFaults(addr, Faults{PairFail: 1}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, w.call(dev, ifaceDevice+".Pair").Err, "org.bluez.Error.AuthenticationFailed")
	if agent.asked.Load() != 0 {
		t.Fatalf("an SMP failure asked the agent (%d)", agent.asked.Load())
	}
	// As any failed pairing, it dropped the link.
	waitFor(t, "link down", func() bool { return !connected(w, dev) })
	// Spent: the next Pair reaches the agent (and the lock, which has no
	// bond window open, refuses the passkey).
	w.connect(dev)
	wantErr(t, w.call(dev, ifaceDevice+".Pair").Err, "org.bluez.Error.AuthenticationFailed")
	if agent.asked.Load() != 1 {
		t.Fatalf("agent asked %d times", agent.asked.Load())
	}
}

func TestLeaveAndEnterRange(t *testing.T) {
	w := newWorld(t)
	const conn, temp, bonded = "C0:FF:EE:00:00:57", "C0:FF:EE:00:00:58", "C0:FF:EE:00:00:59"
	e := w.start(Options{Bonds: []string{bonded}, AwayTimeout: time.Minute})
	hostAndDiscover(t, w, e, conn, temp, bonded)
	w.connect(e.DevicePath(conn))
	for _, a := range []string{conn, temp, bonded} {
		if err := e.LeaveRange(a); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.LeaveRange("C0:FF:EE:00:00:00"); !errors.Is(err, ErrNoSuchLock) {
		t.Fatalf("unknown lock: %v", err)
	}
	if connected(w, e.DevicePath(conn)) {
		t.Fatal("still connected out of range")
	}
	wantErr(t, w.call(e.DevicePath(conn), ifaceDevice+".Connect").Err, "org.bluez.Error.Failed")
	// Out of range, nothing advertises: a tick long after AwayTimeout
	// removes the temporary device only (src/device.c: Connect and
	// bonding make a device permanent).
	e.tick(time.Now().Add(time.Hour))
	ds := w.devices()
	if _, ok := ds[e.DevicePath(temp)]; ok {
		t.Fatal("temporary device kept out of range")
	}
	for _, a := range []string{conn, bonded} {
		if _, ok := ds[e.DevicePath(a)]; !ok {
			t.Fatalf("%s removed out of range", a)
		}
	}
	// Back in range: advertised (the temporary one re-appears) and
	// connectable again.
	for _, a := range []string{conn, temp} {
		if err := e.EnterRange(a); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "device back", func() bool { _, ok := w.devices()[e.DevicePath(temp)]; return ok })
	w.connect(e.DevicePath(conn))
}

func TestRemoveAndAddAdapter(t *testing.T) {
	w := newWorld(t)
	const bonded, conn, temp = "C0:FF:EE:00:00:60", "C0:FF:EE:00:00:61", "C0:FF:EE:00:00:62"
	e := w.start(Options{Bonds: []string{bonded}})
	hostAndDiscover(t, w, e, bonded, conn, temp)
	cdev := e.DevicePath(conn)
	w.connect(cdev)
	e.mu.Lock()
	c := e.devices[conn].conn
	e.mu.Unlock()
	const ad = dbus.ObjectPath("/org/bluez/hci0")
	// The watcher is another connection: let the connection's signals
	// (ServicesResolved is the last) reach it before marking.
	w.sigs.wait(t, "services resolved", func(s *dbus.Signal) bool {
		return isPropsChanged(s, cdev, ifaceDevice, "ServicesResolved")
	})
	m := w.sigs.mark()
	if err := e.RemoveAdapter(); err != nil {
		t.Fatal(err)
	}
	w.sigs.wait(t, "adapter removed", func(s *dbus.Signal) bool {
		return s.Name == ifaceOM+".InterfacesRemoved" && s.Body[0] == ad
	})
	// Devices in creation order (discovered in address order), each after
	// its GATT objects, no property changes, the adapter last.
	svc := string(cdev) + "/service000a"
	want := []string{"-" + string(e.DevicePath(bonded)), "-" + svc + "/char000b", "-" + svc + "/char000d/desc000f",
		"-" + svc + "/char000d", "-" + svc + "/char0010", "-" + svc, "-" + string(cdev), "-" + string(e.DevicePath(temp)), "-" + string(ad)}
	if got := objectSignals(w.sigs.since(m)); !slices.Equal(got, want) {
		t.Fatalf("removal signals\n%q\nwant\n%q", got, want)
	}
	select {
	case <-c.done:
	default:
		t.Fatal("connection survived the adapter")
	}
	for _, call := range []*dbus.Call{w.call(ad, ifaceAdapter+".StartDiscovery"), w.call(ad, ifaceProps+".Get", ifaceAdapter, "Powered"),
		w.call(cdev, ifaceDevice+".Connect")} {
		wantErr(t, call.Err, "org.freedesktop.DBus.Error.UnknownObject")
	}
	if objs := w.objects(); len(objs) != 1 {
		t.Fatalf("objects without the adapter: %v", slices.Collect(func(yield func(dbus.ObjectPath) bool) {
			for p := range objs {
				yield(p)
			}
		}))
	}
	e.tick(time.Now()) // no radio without an adapter
	if err := e.RemoveAdapter(); !errors.Is(err, ErrNoAdapter) {
		t.Fatalf("second RemoveAdapter: %v", err)
	}
	if err := e.Wedge(); !errors.Is(err, ErrNoAdapter) {
		t.Fatalf("Wedge without adapter: %v", err)
	}

	m = w.sigs.mark()
	if err := e.AddAdapter(); err != nil {
		t.Fatal(err)
	}
	if err := e.AddAdapter(); !errors.Is(err, ErrAdapterPresent) {
		t.Fatalf("second AddAdapter: %v", err)
	}
	// The adapter first, then the devices BlueZ loads from storage: the
	// bonded one and the one a client connected; not the temporary one.
	want = []string{"+" + string(ad), "+" + string(e.DevicePath(bonded)), "+" + string(cdev)}
	waitFor(t, "stored devices", func() bool { return len(objectSignals(w.sigs.since(m))) >= len(want) })
	if got := objectSignals(w.sigs.since(m)); !slices.Equal(got, want) {
		t.Fatalf("re-plug signals\n%q\nwant\n%q", got, want)
	}
	objs := w.objects()
	a := objs[ad][ifaceAdapter]
	if a["Powered"].Value() != true || a["Discovering"].Value() != false {
		t.Fatalf("adapter after AddAdapter %v", a)
	}
	b := objs[e.DevicePath(bonded)][ifaceDevice]
	if b["Paired"].Value() != true || b["Connected"].Value() != false {
		t.Fatalf("stored device %v", b)
	}
	if _, ok := b["RSSI"]; ok {
		t.Fatal("a device loaded from storage has an RSSI")
	}
	// Discovery brings the rest back, and RSSI to the stored ones.
	w.discover(ServiceUUID)
	waitFor(t, "temporary device", func() bool { _, ok := w.devices()[e.DevicePath(temp)]; return ok })
	waitFor(t, "RSSI", func() bool { _, ok := w.devices()[e.DevicePath(bonded)]["RSSI"]; return ok })
	w.connect(cdev)
}

func TestWedgedAdapterUntilPowerCycle(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{})
	const addr = "C0:FF:EE:00:00:63"
	hostAndDiscover(t, w, e, addr)
	dev := e.DevicePath(addr)
	const ad = dbus.ObjectPath("/org/bluez/hci0")
	w.mustCall(ad, ifaceAdapter+".StopDiscovery")
	if err := e.Wedge(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		wantErr(t, w.call(ad, ifaceAdapter+".StartDiscovery").Err, "org.bluez.Error.InProgress")
		wantErr(t, w.call(dev, ifaceDevice+".Connect").Err, "org.bluez.Error.Failed")
	}
	w.mustCall(ad, ifaceProps+".Set", ifaceAdapter, "Powered", v(true)) // no cycle
	if n := e.PowerCycles(); n != 0 {
		t.Fatalf("%d power cycles", n)
	}
	w.mustCall(ad, ifaceProps+".Set", ifaceAdapter, "Powered", v(false))
	if n := e.PowerCycles(); n != 0 {
		t.Fatalf("%d power cycles after off", n)
	}
	wantErr(t, w.call(ad, ifaceAdapter+".StartDiscovery").Err, "org.bluez.Error.NotReady")
	w.mustCall(ad, ifaceProps+".Set", ifaceAdapter, "Powered", v(true))
	if n := e.PowerCycles(); n != 1 {
		t.Fatalf("%d power cycles after off, on", n)
	}
	w.mustCall(ad, ifaceAdapter+".StartDiscovery")
	w.connect(dev)
}
