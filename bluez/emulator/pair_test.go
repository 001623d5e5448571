package emulator

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// testAgent is an Agent1 that answers RequestPasskey with passkey, or
// blocks until cancelled when block is set.
type testAgent struct {
	passkey  atomic.Uint32
	block    atomic.Bool
	asked    atomic.Int32
	cancels  atomic.Int32
	released chan struct{}
}

func (a *testAgent) RequestPasskey(dev dbus.ObjectPath) (uint32, *dbus.Error) {
	a.asked.Add(1)
	if a.block.Load() {
		<-a.released
		return 0, dbus.NewError("org.bluez.Error.Canceled", nil)
	}
	return a.passkey.Load(), nil
}

func (a *testAgent) Cancel() *dbus.Error  { a.cancels.Add(1); return nil }
func (a *testAgent) Release() *dbus.Error { return nil }

func TestPairThroughAgentAndRestartKeepsBond(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{PairFailureStall: 200 * time.Millisecond})
	tl := w.lock(20)
	const addr = "C0:FF:EE:00:00:20"
	if err := e.AddLock(tl.l, addr, LockOptions{}); err != nil {
		t.Fatal(err)
	}
	agent := &testAgent{released: make(chan struct{})}
	const agentPath = dbus.ObjectPath("/test/agent")
	if err := w.client.Export(agent, agentPath, ifaceAgent); err != nil {
		t.Fatal(err)
	}
	w.mustCall("/org/bluez", ifaceAgentMgr+".RegisterAgent", agentPath, "KeyboardDisplay")
	wantErr(t, w.call("/org/bluez", ifaceAgentMgr+".RegisterAgent", agentPath, "KeyboardDisplay").Err, "org.bluez.Error.AlreadyExists")
	wantErr(t, w.call("/org/bluez", ifaceAgentMgr+".RegisterAgent", dbus.ObjectPath("/x"), "Telepathy").Err, "org.bluez.Error.InvalidArguments")
	w.mustCall("/org/bluez", ifaceAgentMgr+".RequestDefaultAgent", agentPath)

	w.discover(ServiceUUID)
	dev := e.DevicePath(addr)
	waitFor(t, "device", func() bool { _, ok := w.devices()[dev]; return ok })
	w.connect(dev)

	// No bond window: the lock refuses the passkey.
	agent.passkey.Store(123456)
	wantErr(t, w.call(dev, ifaceDevice+".Pair").Err, "org.bluez.Error.AuthenticationFailed")
	// The failed pairing dropped the link (TestFailedPairingDropsLink).
	w.connect(dev)

	// CancelPairing while the agent is asked.
	agent.block.Store(true)
	done := make(chan error, 1)
	go func() { done <- w.call(dev, ifaceDevice+".Pair").Err }()
	waitFor(t, "agent asked", func() bool { return agent.asked.Load() == 2 })
	w.mustCall(dev, ifaceDevice+".CancelPairing")
	wantErr(t, <-done, "org.bluez.Error.AuthenticationCanceled")
	close(agent.released)
	agent.block.Store(false)
	waitFor(t, "Agent1.Cancel", func() bool { return agent.cancels.Load() == 1 })
	wantErr(t, w.call(dev, ifaceDevice+".CancelPairing").Err, "org.bluez.Error.DoesNotExist")
	w.connect(dev)

	// The gateway opens a bond window over the secure channel; the agent
	// answers with its passkey.
	gl := newGATTLink(t, w, dev, DefaultLockMTU)
	ctx := ctxT(t)
	conn, err := channel.Dial(ctx, channel.NewFragmentTransport(gl, fragment.Options{}), w.fleet.GatewayConfig(w.fleet.Gateway(t, "gw-1")))
	if err != nil {
		t.Fatal(err)
	}
	r, err := lockclient.New(conn).AllowBond(ctx, 30*time.Second)
	if err != nil || r.Status != command.StatusOK {
		t.Fatalf("allow-bond %+v %v", r, err)
	}
	win, err := r.BondWindow()
	if err != nil || win.Peer != gwAddr {
		t.Fatalf("window %+v %v", win, err)
	}
	agent.passkey.Store(win.Passkey)
	w.mustCall(dev, ifaceDevice+".Pair")
	d := w.devices()[dev]
	if d["Paired"].Value() != true || d["Bonded"].Value() != true || !tl.l.Bonded(gwAddr) {
		t.Fatalf("after Pair: %v", d)
	}
	wantErr(t, w.call(dev, ifaceDevice+".Pair").Err, "org.bluez.Error.AlreadyExists")

	// bluetoothd crashes and restarts: the bond survives.
	e2, err := e.Restart(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e2.Close() })
	if !slices.Equal(e2.Bonds(), []string{addr}) {
		t.Fatalf("bonds after restart %v", e2.Bonds())
	}
	w.discover(ServiceUUID)
	waitFor(t, "device after restart", func() bool { _, ok := w.devices()[dev]; return ok })
	if w.devices()[dev]["Paired"].Value() != true {
		t.Fatal("device not paired after restart")
	}
	// RemoveDevice unbonds.
	w.mustCall("/org/bluez/hci0", ifaceAdapter+".RemoveDevice", dev)
	if len(e2.Bonds()) != 0 {
		t.Fatalf("bonds after RemoveDevice %v", e2.Bonds())
	}
	// Agents die with bluetoothd, as with the real one: without one,
	// pairing is rejected.
	wantErr(t, w.call("/org/bluez", ifaceAgentMgr+".UnregisterAgent", agentPath).Err, "org.bluez.Error.DoesNotExist")
	waitFor(t, "device again", func() bool { _, ok := w.devices()[dev]; return ok })
	w.connect(dev)
	wantErr(t, w.call(dev, ifaceDevice+".Pair").Err, "org.bluez.Error.AuthenticationRejected")
}
