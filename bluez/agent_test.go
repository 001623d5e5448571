package bluez_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bluez/internal/dbustest"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// adapterAddr is the emulated adapter's address: the peer address the
// locks see, on the secure channel (lock.Serve) and when pairing
// (lock.Pair), so the bond window opened over the channel is for it.
const adapterAddr = "0A:11:22:33:44:55"

type pairWorld struct {
	t     *testing.T
	ctx   context.Context
	bus   *dbustest.Bus
	emu   *emulator.Emulator
	conn  *dbus.Conn
	ad    *bluez.Adapter
	fleet *channeltest.Fleet
	gw    channeltest.Party
	locks map[string]*lock.Lock // by address
	acts  map[string]*locktest.Actuator
}

func newPairWorld(t *testing.T, addrs ...string) *pairWorld {
	t.Helper()
	w := &pairWorld{t: t, bus: dbustest.Start(t), locks: map[string]*lock.Lock{}, acts: map[string]*locktest.Actuator{}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	w.ctx = ctx
	var err error
	w.emu, err = emulator.Start(ctx, emulator.Options{Addr: w.bus.Addr, Seed: 1, RadioInterval: 20 * time.Millisecond, AdapterAddress: adapterAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.emu.Close() })
	w.fleet = channeltest.NewFleet(t, "acme")
	w.gw = w.fleet.Gateway(t, "gw-dock-1")
	for i, addr := range addrs {
		lp := w.fleet.Lock(t, uint64(0x4c4b000000000100+i))
		act := &locktest.Actuator{}
		l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: w.fleet.Roots, Store: locktest.NewStore(),
			Actuator: act, RTC: func() time.Time { return w.fleet.Now }})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.emu.AddLock(l, addr, emulator.LockOptions{}); err != nil {
			t.Fatal(err)
		}
		w.locks[addr] = l
		w.acts[addr] = act
	}
	w.conn = w.bus.Conn(t)
	w.ad, err = bluez.Open(ctx, w.conn, bluez.Options{CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.ad.Close() })
	for deadline := time.Now().Add(20 * time.Second); ; {
		found := 0
		for _, li := range w.ad.Locks() {
			if li.Err == nil {
				found++
			}
		}
		if found == len(addrs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("discovered %d of %d locks", found, len(addrs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return w
}

// connect connects to the lock at addr; the caller closes the device.
func (w *pairWorld) connect(addr string) *bluez.Device {
	w.t.Helper()
	dev, err := bluez.Connect(w.ctx, w.conn, bluez.DeviceOptions{Path: w.emu.DevicePath(addr), Dispatcher: w.ad.Dispatcher()})
	if err != nil {
		w.t.Fatalf("connect %s: %v", addr, err)
	}
	return dev
}

// allowBond opens a bond window on the lock over the secure channel and
// returns its passkey.
func (w *pairWorld) allowBond(dev *bluez.Device) uint32 {
	w.t.Helper()
	ch, err := channel.Dial(w.ctx, channel.NewFragmentTransport(dev, fragment.Options{}), w.fleet.GatewayConfig(w.gw))
	if err != nil {
		w.t.Fatal(err)
	}
	r, err := lockclient.New(ch).AllowBond(w.ctx, 30*time.Second)
	if err != nil || r.Status != command.StatusOK {
		w.t.Fatalf("allow-bond %+v %v", r, err)
	}
	win, err := r.BondWindow()
	if err != nil {
		w.t.Fatal(err)
	}
	if win.Peer != adapterAddr {
		w.t.Fatalf("bond window for %q, want the adapter %q", win.Peer, adapterAddr)
	}
	return win.Passkey
}

func (w *pairWorld) deviceProp(path dbus.ObjectPath, name string) (any, error) {
	ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
	defer cancel()
	var v dbus.Variant
	err := w.conn.Object(bluez.BusName, path).CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, bluez.IfaceDevice, name).Store(&v)
	return v.Value(), err
}

func newAgent(t *testing.T, ctx context.Context, conn *dbus.Conn) *bluez.Agent {
	t.Helper()
	a, err := bluez.NewAgent(ctx, conn, bluez.AgentOptions{CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func wantDBusErr(t *testing.T, err error, name string) {
	t.Helper()
	var de dbus.Error
	if !errors.As(err, &de) || de.Name != name {
		t.Fatalf("error %v, want %s", err, name)
	}
}

// wantNotExported checks the error of a call on an Agent1 that is not
// exported (godbus answers UnknownInterface for a path it served before).
func wantNotExported(t *testing.T, err error) {
	t.Helper()
	var de dbus.Error
	if !errors.As(err, &de) || !slices.Contains([]string{"org.freedesktop.DBus.Error.UnknownInterface",
		"org.freedesktop.DBus.Error.NoSuchObject", "org.freedesktop.DBus.Error.UnknownObject"}, de.Name) {
		t.Fatalf("error %v, want the agent not exported", err)
	}
}

// TestPairThroughAgent pairs with reference locks through the client's
// agent against the emulator: the right passkey bonds, a wrong one fails
// authentication, a device without a registered passkey is rejected, and
// RemoveBond unbonds.
func TestPairThroughAgent(t *testing.T) {
	const good, wrong, unexpected = "C0:00:00:00:01:01", "C0:00:00:00:01:02", "C0:00:00:00:01:03"
	w := newPairWorld(t, good, wrong, unexpected)
	agent := newAgent(t, w.ctx, w.conn)
	if agent.Path() != bluez.DefaultAgentPath {
		t.Fatalf("agent at %s", agent.Path())
	}

	// The right passkey bonds.
	goodPath := w.emu.DevicePath(good)
	dev := w.connect(good)
	pk := w.allowBond(dev)
	pctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	if err := bluez.Pair(pctx, w.conn, agent, goodPath, pk); err != nil {
		t.Fatalf("Pair: %v", err)
	}
	cancel()
	for _, p := range []string{"Paired", "Bonded"} {
		if v, err := w.deviceProp(goodPath, p); err != nil || v != true {
			t.Fatalf("%s after Pair: %v %v", p, v, err)
		}
	}
	if !w.locks[good].Bonded(adapterAddr) || !slices.Equal(w.emu.Bonds(), []string{good}) {
		t.Fatalf("lock bonded %v, emulator bonds %v", w.locks[good].Bonded(adapterAddr), w.emu.Bonds())
	}
	// Pairing again: the bond exists.
	if err := bluez.Pair(w.ctx, w.conn, agent, goodPath, pk); !errors.Is(err, bluez.ErrAlreadyExists) {
		t.Fatalf("second Pair: %v", err)
	}
	_ = dev.Close()

	// A wrong passkey inside an open window fails authentication.
	wrongPath := w.emu.DevicePath(wrong)
	dev = w.connect(wrong)
	pk = w.allowBond(dev)
	err := bluez.Pair(w.ctx, w.conn, agent, wrongPath, (pk+1)%1000000)
	if !errors.Is(err, bluez.ErrAuthentication) || bluez.Retryable(err) {
		t.Fatalf("Pair with a wrong passkey: %v", err)
	}
	var be *bluez.Error
	if !errors.As(err, &be) || be.Name != "org.bluez.Error.AuthenticationFailed" {
		t.Fatalf("Pair with a wrong passkey: %v", err)
	}
	if v, err := w.deviceProp(wrongPath, "Paired"); err != nil || v != false {
		t.Fatalf("Paired after a wrong passkey: %v %v", v, err)
	}
	if w.locks[wrong].Bonded(adapterAddr) {
		t.Fatal("lock bonded with a wrong passkey")
	}
	_ = dev.Close()

	// No passkey registered for the device: the agent rejects
	// RequestPasskey and pairing fails, although the lock's window is
	// open. A passkey registered for another device does not leak.
	unexpectedPath := w.emu.DevicePath(unexpected)
	dev = w.connect(unexpected)
	pk = w.allowBond(dev)
	release := agent.Expect(goodPath, pk)
	pctx, cancel = context.WithTimeout(w.ctx, 10*time.Second)
	err = bluez.MapError(w.conn.Object(bluez.BusName, unexpectedPath).CallWithContext(pctx, bluez.IfaceDevice+".Pair", 0).Err)
	cancel()
	release()
	if !errors.Is(err, bluez.ErrAuthentication) {
		t.Fatalf("Pair without a registered passkey: %v", err)
	}
	if w.locks[unexpected].Bonded(adapterAddr) {
		t.Fatal("lock bonded without a registered passkey")
	}
	// The window is still open: with the passkey registered, it bonds,
	// on a new connection (the failed pairing dropped the link, as on
	// real BlueZ).
	_ = dev.Close()
	dev = w.connect(unexpected)
	if err := bluez.Pair(w.ctx, w.conn, agent, unexpectedPath, pk); err != nil {
		t.Fatalf("Pair after the rejection: %v", err)
	}
	_ = dev.Close()

	// RemoveBond unbonds and removes the device.
	if err := bluez.RemoveBond(w.ctx, w.conn, w.emu.AdapterPath(), goodPath); err != nil {
		t.Fatalf("RemoveBond: %v", err)
	}
	if !slices.Equal(w.emu.Bonds(), []string{unexpected}) {
		t.Fatalf("bonds after RemoveBond %v", w.emu.Bonds())
	}
	// The device object goes; while discovery runs the radio may show the
	// lock again at once (as BlueZ would on its next advertisement), but
	// never as paired.
	if v, err := w.deviceProp(goodPath, "Paired"); err == nil && v != false {
		t.Fatalf("device still paired after RemoveBond: %v", v)
	}
}

// TestAgentAnswers calls the agent's methods as bluetoothd would: the
// passkey goes to exactly the registered device, once; everything else is
// Rejected; the passkey can be released unused.
func TestAgentAnswers(t *testing.T) {
	w := newPairWorld(t)
	agent := newAgent(t, w.ctx, w.conn)
	other := w.bus.Conn(t)
	obj := other.Object(w.conn.Names()[0], agent.Path())
	call := func(method string, args ...any) *dbus.Call {
		ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
		defer cancel()
		return obj.CallWithContext(ctx, bluez.IfaceAgent+"."+method, 0, args...)
	}
	const devA, devB = dbus.ObjectPath("/org/bluez/hci0/dev_C0_00_00_00_00_0A"), dbus.ObjectPath("/org/bluez/hci0/dev_C0_00_00_00_00_0B")

	wantDBusErr(t, call("RequestPasskey", devA).Err, "org.bluez.Error.Rejected")
	release := agent.Expect(devA, 42)
	wantDBusErr(t, call("RequestPasskey", devB).Err, "org.bluez.Error.Rejected")
	var pk uint32
	if err := call("RequestPasskey", devA).Store(&pk); err != nil || pk != 42 {
		t.Fatalf("RequestPasskey: %d %v", pk, err)
	}
	wantDBusErr(t, call("RequestPasskey", devA).Err, "org.bluez.Error.Rejected")
	release()

	// A stale release does not drop a newer passkey.
	release = agent.Expect(devB, 7)
	agent.Expect(devB, 8)
	release()
	if err := call("RequestPasskey", devB).Store(&pk); err != nil || pk != 8 {
		t.Fatalf("RequestPasskey after a stale release: %d %v", pk, err)
	}
	release = agent.Expect(devB, 9)
	release()
	release()
	wantDBusErr(t, call("RequestPasskey", devB).Err, "org.bluez.Error.Rejected")

	wantDBusErr(t, call("RequestPinCode", devA).Err, "org.bluez.Error.Rejected")
	wantDBusErr(t, call("DisplayPinCode", devA, "0000").Err, "org.bluez.Error.Rejected")
	wantDBusErr(t, call("RequestConfirmation", devA, uint32(1)).Err, "org.bluez.Error.Rejected")
	wantDBusErr(t, call("RequestAuthorization", devA).Err, "org.bluez.Error.Rejected")
	wantDBusErr(t, call("AuthorizeService", devA, "0000180f-0000-1000-8000-00805f9b34fb").Err, "org.bluez.Error.Rejected")
	for _, c := range []*dbus.Call{call("DisplayPasskey", devA, uint32(1), uint16(0)), call("Cancel"), call("Release")} {
		if c.Err != nil {
			t.Fatalf("%s: %v", c.Method, c.Err)
		}
	}
	// Expect and Close are not reachable over the bus.
	wantDBusErr(t, call("Close").Err, "org.freedesktop.DBus.Error.UnknownMethod")
}

// TestAgentRegistration: a second agent on the same connection is refused
// (bluetoothd allows one per client) without leaving anything exported;
// Close unregisters and unexports, leaves no goroutine, and is idempotent.
func TestAgentRegistration(t *testing.T) {
	w := newPairWorld(t)
	other := w.bus.Conn(t)
	mgr := func(method string, args ...any) error {
		ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
		defer cancel()
		return w.conn.Object(bluez.BusName, bluez.AgentManagerPath).CallWithContext(ctx, bluez.IfaceAgentManager+"."+method, 0, args...).Err
	}
	agentCall := func(path dbus.ObjectPath) error {
		ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
		defer cancel()
		return other.Object(w.conn.Names()[0], path).CallWithContext(ctx, bluez.IfaceAgent+".Cancel", 0).Err
	}

	settle := func() int {
		var g int
		for range 20 {
			runtime.GC()
			g = runtime.NumGoroutine()
			time.Sleep(10 * time.Millisecond)
		}
		return g
	}
	g0 := settle()
	for range 20 {
		a, err := bluez.NewAgent(w.ctx, w.conn, bluez.AgentOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bluez.NewAgent(w.ctx, w.conn, bluez.AgentOptions{Path: "/org/gatewayd/agent2"}); !errors.Is(err, bluez.ErrAlreadyExists) {
			t.Fatalf("second agent: %v", err)
		}
		wantNotExported(t, agentCall("/org/gatewayd/agent2"))
		// Nor at the same path: the first agent keeps answering.
		if _, err := bluez.NewAgent(w.ctx, w.conn, bluez.AgentOptions{}); !errors.Is(err, bluez.ErrAlreadyExists) {
			t.Fatalf("second agent at the same path: %v", err)
		}
		if err := agentCall(bluez.DefaultAgentPath); err != nil {
			t.Fatalf("first agent after a refused second one: %v", err)
		}
		a.Expect("/org/bluez/hci0/dev_C0_00_00_00_00_0A", 1)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		// Unregistered: bluetoothd no longer knows it; unexported.
		wantDBusErr(t, mgr("RequestDefaultAgent", bluez.DefaultAgentPath), "org.bluez.Error.DoesNotExist")
		wantNotExported(t, agentCall(bluez.DefaultAgentPath))
	}
	if g1 := settle(); g1 > g0+2 {
		t.Fatalf("goroutines: %d before, %d after", g0, g1)
	}

	// An agent bluetoothd forgot (it restarted) closes without error.
	a := newAgent(t, w.ctx, w.conn)
	if err := mgr("UnregisterAgent", a.Path()); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close after bluetoothd forgot the agent: %v", err)
	}
}

// stallAgent is a raw Agent1 whose RequestPasskey blocks until the test
// ends, as a user who never types the passkey.
type stallAgent struct {
	asked   chan struct{}
	done    chan struct{}
	cancels chan struct{}
}

func (a *stallAgent) RequestPasskey(dbus.ObjectPath) (uint32, *dbus.Error) {
	a.asked <- struct{}{}
	<-a.done
	return 0, dbus.NewError("org.bluez.Error.Canceled", nil)
}

func (a *stallAgent) Cancel() *dbus.Error { a.cancels <- struct{}{}; return nil }

// TestPairTimeoutCancelsPairing: when Pair's deadline expires while
// bluetoothd waits for the passkey, Pair calls CancelPairing (bluetoothd
// then cancels its agent request) and returns a retryable deadline error.
func TestPairTimeoutCancelsPairing(t *testing.T) {
	const addr = "C0:00:00:00:01:04"
	w := newPairWorld(t, addr)
	agent := newAgent(t, w.ctx, w.conn)

	// A stalling agent on another connection becomes the default agent;
	// Pair is called from a connection without its own agent, so
	// bluetoothd asks the stalling one.
	stall := &stallAgent{asked: make(chan struct{}, 1), done: make(chan struct{}), cancels: make(chan struct{}, 1)}
	defer close(stall.done)
	sconn := w.bus.Conn(t)
	const stallPath = dbus.ObjectPath("/test/stall")
	if err := sconn.Export(stall, stallPath, bluez.IfaceAgent); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		m    string
		args []any
	}{{"RegisterAgent", []any{stallPath, "KeyboardOnly"}}, {"RequestDefaultAgent", []any{stallPath}}} {
		if err := sconn.Object(bluez.BusName, bluez.AgentManagerPath).CallWithContext(w.ctx, bluez.IfaceAgentManager+"."+c.m, 0, c.args...).Err; err != nil {
			t.Fatal(err)
		}
	}
	dev := w.connect(addr)
	defer dev.Close()
	caller := w.bus.Conn(t)
	path := w.emu.DevicePath(addr)
	pctx, cancel := context.WithTimeout(w.ctx, 300*time.Millisecond)
	defer cancel()
	err := bluez.Pair(pctx, caller, agent, path, 123456)
	if !errors.Is(err, context.DeadlineExceeded) || !bluez.Retryable(err) {
		t.Fatalf("Pair past its deadline: %v", err)
	}
	select {
	case <-stall.asked:
	default:
		t.Fatal("the stalling agent was not asked")
	}
	// CancelPairing reached bluetoothd: it cancels the agent's request
	// (without it, the emulator would wait 25 s).
	select {
	case <-stall.cancels:
	case <-time.After(5 * time.Second):
		t.Fatal("Agent1.Cancel not called: CancelPairing did not reach bluetoothd")
	}
	// The passkey did not outlive Pair.
	ctx, cancel2 := context.WithTimeout(w.ctx, 5*time.Second)
	defer cancel2()
	err = w.bus.Conn(t).Object(w.conn.Names()[0], agent.Path()).CallWithContext(ctx, bluez.IfaceAgent+".RequestPasskey", 0, path).Err
	wantDBusErr(t, err, "org.bluez.Error.Rejected")
}

// TestAgentNotDefault: an agent registered with NotDefault answers the
// pairings its own connection starts, and nothing else: a pairing started
// by another client (bluetoothd then asks the default agent) does not
// reach it, even for a device it has a passkey for.
func TestAgentNotDefault(t *testing.T) {
	const addr = "C0:00:00:00:01:11"
	w := newPairWorld(t, addr)
	agent, err := bluez.NewAgent(w.ctx, w.conn, bluez.AgentOptions{NotDefault: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Close() })
	path := w.emu.DevicePath(addr)
	dev := w.connect(addr)
	defer dev.Close()
	pk := w.allowBond(dev)

	release := agent.Expect(path, pk)
	other := w.bus.Conn(t)
	err = other.Object(bluez.BusName, path).CallWithContext(w.ctx, bluez.IfaceDevice+".Pair", 0).Err
	release()
	wantDBusErr(t, err, "org.bluez.Error.AuthenticationRejected")

	if err := bluez.Pair(w.ctx, w.conn, agent, path, pk); err != nil {
		t.Fatalf("the agent's own connection's pairing: %v", err)
	}
}
