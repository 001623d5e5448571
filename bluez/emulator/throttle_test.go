package emulator

import (
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// TestAttackThrottleLetsBondedGatewayIn (issue 11, docs/protocol.md
// §13.8): an attacker floods the lock with refused handshakes from
// rotating addresses and trips its global throttle, then takes the
// handshake slot. The dock's gateway, bonded with the lock, connects
// through the emulator, which encrypts the link with the bond as
// bluetoothd does: its handshake gets in at once, and a command runs.
// The same gateway once BlueZ has forgotten the bond (the link is not
// encrypted, though the lock still holds a bond with its address) is
// refused with "locked out for", and gets in at the next slot.
func TestAttackThrottleLetsBondedGatewayIn(t *testing.T) {
	w := newWorld(t)
	e := w.start(Options{})
	var now atomic.Int64 // the lock's clock, moved by the test
	now.Store(w.fleet.Now.UnixNano())
	p := w.fleet.Lock(t, 30)
	lk, err := lock.New(lock.Options{Cert: p.Cert, Key: p.Key, Roots: w.fleet.Roots, Store: locktest.NewStore(),
		Actuator: &locktest.Actuator{}, RTC: func() time.Time { return time.Unix(0, now.Load()).UTC() }, Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	const addr = "C0:FF:EE:00:00:30"
	if err := e.AddLock(lk, addr, LockOptions{}); err != nil {
		t.Fatal(err)
	}
	agent := &testAgent{released: make(chan struct{})}
	const agentPath = dbus.ObjectPath("/test/agent")
	if err := w.client.Export(agent, agentPath, ifaceAgent); err != nil {
		t.Fatal(err)
	}
	w.mustCall("/org/bluez", ifaceAgentMgr+".RegisterAgent", agentPath, "KeyboardDisplay")
	w.mustCall("/org/bluez", ifaceAgentMgr+".RequestDefaultAgent", agentPath)
	w.discover(ServiceUUID)
	dev := e.DevicePath(addr)
	waitFor(t, "device", func() bool { _, ok := w.devices()[dev]; return ok })
	gwCfg := w.fleet.GatewayConfig(w.fleet.Gateway(t, "gw-1"))
	ctx := ctxT(t)

	// handshake connects the gateway through the emulator and runs the
	// handshake; the connection ends with the test or at disconnect.
	handshake := func() (*lockclient.Client, error) {
		t.Helper()
		w.connect(dev)
		conn, err := channel.Dial(ctx, channel.NewFragmentTransport(newGATTLink(t, w, dev, DefaultLockMTU), fragment.Options{}), gwCfg)
		if err != nil {
			return nil, err
		}
		return lockclient.New(conn), nil
	}
	disconnect := func() {
		t.Helper()
		w.mustCall(dev, ifaceDevice+".Disconnect")
		waitFor(t, "disconnected", func() bool { return w.devices()[dev]["Connected"].Value() == false })
	}

	// The gateway bonds with the lock (allow-bond, then passkey pairing).
	c, err := handshake()
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.AllowBond(ctx, 30*time.Second)
	if err != nil || r.Status != command.StatusOK {
		t.Fatalf("allow-bond %+v %v", r, err)
	}
	win, err := r.BondWindow()
	if err != nil {
		t.Fatal(err)
	}
	agent.passkey.Store(win.Passkey)
	w.mustCall(dev, ifaceDevice+".Pair")
	if !lk.Bonded(gwAddr) {
		t.Fatal("the lock holds no bond with the gateway")
	}
	disconnect()

	// The attacker: refused handshakes from fresh addresses, straight at
	// the lock (another radio in range), with another fleet's credential.
	rogue := channeltest.NewFleet(t, "rogue").Gateway(t, "gw-evil")
	attack := func(i int) error {
		t.Helper()
		a, b := channeltest.Pipe(DefaultLockMTU, channeltest.Faults{})
		var wg sync.WaitGroup
		wg.Go(func() {
			_ = lk.Serve(ctx, channel.NewFragmentTransport(b, fragment.Options{}),
				lock.Peer{Address: fmt.Sprintf("66:66:66:00:%02X:%02X", i>>8&0xff, i&0xff)})
		})
		_, err := channel.Dial(ctx, channel.NewFragmentTransport(a, fragment.Options{}), w.fleet.GatewayConfig(rogue))
		if err == nil {
			t.Fatalf("attacker handshake %d accepted", i)
		}
		// The lock records the failure after it answered; once the link
		// is down its Serve returns, with the failure recorded.
		a.Close()
		wg.Wait()
		return err
	}
	throttled := func(err error) bool { return err != nil && strings.Contains(err.Error(), "locked out for") }
	for i := range 21 {
		if err := attack(i); throttled(err) {
			t.Fatalf("attacker handshake %d throttled before the cap", i)
		}
	}
	if err := attack(100); throttled(err) {
		t.Fatalf("the attacker's handshake after the cap did not get the slot: %v", err)
	}
	if err := attack(101); !throttled(err) {
		t.Fatalf("no throttle after the flood: %v", err)
	}

	// The bonded gateway: its encrypted link gets in at once.
	c, err = handshake()
	if err != nil {
		t.Fatalf("bonded gateway during the throttle: %v", err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Status != command.StatusOK {
		t.Fatalf("status through the bonded gateway: %+v %v", st, err)
	}
	disconnect()

	// BlueZ forgets the bond: the next link is not encrypted, and the
	// lock's bond with the address alone does not let it through.
	w.mustCall("/org/bluez/hci0", ifaceAdapter+".RemoveDevice", dev)
	waitFor(t, "device again", func() bool { _, ok := w.devices()[dev]; return ok })
	if _, err := handshake(); !throttled(err) {
		t.Fatalf("unencrypted link during the throttle: %v, want locked out", err)
	}
	disconnect()
	now.Add(int64(5 * time.Second)) // the next slot
	if _, err := handshake(); err != nil {
		t.Fatalf("unencrypted link at the next slot: %v", err)
	}
}
