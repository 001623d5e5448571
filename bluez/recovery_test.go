package bluez_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// waitFor polls cond every 10 ms until it holds, failing the test after
// 20 s (a generous bound: nothing here depends on the machine's speed).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// lockInfo waits until the adapter lists the lock at addr with a valid
// advertisement.
func (w *pairWorld) lockInfo(addr string) bluez.LockInfo {
	w.t.Helper()
	var info bluez.LockInfo
	waitFor(w.t, "lock "+addr+" discovered", func() bool {
		for _, li := range w.ad.Locks() {
			if li.Address == addr && li.Err == nil {
				info = li
				return true
			}
		}
		return false
	})
	return info
}

// dial connects to addr through the adapter and runs the handshake.
func (w *pairWorld) dial(addr string) (*bluez.Device, *lockclient.Client) {
	w.t.Helper()
	info := w.lockInfo(addr)
	dev, err := w.ad.Connect(w.ctx, bluez.DeviceOptions{Path: info.Path})
	if err != nil {
		w.t.Fatalf("connect %s: %v", addr, err)
	}
	w.t.Cleanup(func() { _ = dev.Close() })
	w.t.Logf("connected to %s (MTU %d); handshake", addr, dev.MTU())
	ch, err := channel.Dial(w.ctx, channel.NewFragmentTransport(dev, fragment.Options{}), w.fleet.GatewayConfig(w.gw))
	if err != nil {
		w.t.Fatalf("handshake with %s: %v", addr, err)
	}
	return dev, lockclient.New(ch)
}

// TestRestartMidCommand: bluetoothd crashes while the lock is executing
// a signed unlock. The command in flight fails as retryable (ErrBusGone),
// the client recovers without being restarted (discovery on the new
// bluetoothd, the agent registered again), and retrying the same signed
// command does not move the bolt a second time: the lock answers
// duplicate-command with the first attempt's status.
func TestRestartMidCommand(t *testing.T) {
	const addr = "C0:00:00:00:01:01"
	w := newPairWorld(t, addr)
	agent, err := bluez.NewAgent(w.ctx, w.conn, bluez.AgentOptions{Dispatcher: w.ad.Dispatcher(), RetryMin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Close() })
	if n := agent.Registrations(); n != 1 {
		t.Fatalf("registrations %d, want 1", n)
	}

	act := w.acts[addr]
	moving, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	act.SetBeforeMove(func(command.LockState) error {
		once.Do(func() { close(moving) })
		select { // the crash takes the link; then the bolt moves
		case <-release:
		case <-time.After(30 * time.Second):
		}
		return nil
	})
	_, lc := w.dial(addr)
	op := w.fleet.Operator(t, "otto", cred.RoleOperator)
	signed, err := command.Sign(op.Key, op.Cert.Raw, command.Body{LockID: w.locks[addr].ID(), Op: command.OpUnlock,
		CommandID: [16]byte{0xc0, 0xff, 0xee}, NotAfter: w.fleet.Now.Add(time.Hour), Counter: 1})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		r, err := lc.Signed(w.ctx, command.OpUnlock, signed)
		if err == nil {
			err = errors.New("the unlock returned a result: " + r.Status.String())
		}
		errc <- err
	}()
	<-moving
	restarted := make(chan *emulator.Emulator, 1)
	go func() {
		e2, err := w.emu.Restart(w.ctx)
		if err != nil {
			t.Error(err)
		}
		restarted <- e2
	}()
	err = <-errc
	if !errors.Is(err, bluez.ErrBusGone) || !bluez.Retryable(err) {
		t.Fatalf("command in flight: %v, want a retryable ErrBusGone", err)
	}
	close(release)
	e2 := <-restarted
	if e2 == nil {
		t.FailNow()
	}
	w.emu = e2
	t.Cleanup(func() { _ = e2.Close() })

	waitFor(t, "the adapter to recover", func() bool { return w.ad.Restarts() == 1 && w.ad.Ready() })
	waitFor(t, "the agent to register again", func() bool { return agent.Registrations() == 2 })

	_, lc = w.dial(addr)
	r, err := lc.Signed(w.ctx, command.OpUnlock, signed)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != command.StatusDuplicateCommand {
		t.Fatalf("retry: status %v, want duplicate-command", r.Status)
	}
	if orig, err := r.Duplicate(); err != nil || orig != command.StatusOK {
		t.Fatalf("retry: first attempt's status %v, %v; want ok", orig, err)
	}
	if n := act.Moves(); n != 1 {
		t.Fatalf("bolt moved %d times, want 1", n)
	}

	// The agent answers for the new bluetoothd: pairing works.
	br, err := lc.AllowBond(w.ctx, 30*time.Second)
	if err != nil || br.Status != command.StatusOK {
		t.Fatalf("allow-bond %v %v", br, err)
	}
	win, err := br.BondWindow()
	if err != nil {
		t.Fatal(err)
	}
	if err := bluez.Pair(w.ctx, w.conn, agent, w.emu.DevicePath(addr), win.Passkey); err != nil {
		t.Fatalf("pairing through the re-registered agent: %v", err)
	}
}

// TestAdapterRemovedAndAdded: the adapter disappears (a USB controller
// unplugged, a kernel driver reset): its locks are reported gone and the
// adapter not ready; when it returns, discovery starts again by itself
// and a connection works.
func TestAdapterRemovedAndAdded(t *testing.T) {
	const addr = "C0:00:00:00:02:01"
	w := newPairWorld(t, addr)
	w.lockInfo(addr)
	if err := w.emu.RemoveAdapter(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the adapter removal", func() bool {
		return !w.ad.Ready() && w.ad.Removals() == 1 && len(w.ad.Locks()) == 0
	})
	if err := w.emu.AddAdapter(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the adapter back", func() bool { return w.ad.Ready() })
	_, lc := w.dial(addr)
	if r, err := lc.Status(w.ctx); err != nil || r.Status != command.StatusOK {
		t.Fatalf("status after the adapter returned: %v %v", r, err)
	}
}

// TestWedgedAdapterPowerCycled: connects fail again and again
// (le-connection-abort-by-local); after WedgeConnectFailures in a row the
// adapter is power-cycled, once, counted in the metric, and then a
// connection works.
func TestWedgedAdapterPowerCycled(t *testing.T) {
	const addr = "C0:00:00:00:03:01"
	w := newPairWorld(t, addr)
	ad, err := bluez.Open(w.ctx, w.conn, bluez.Options{Dispatcher: w.ad.Dispatcher(), CallTimeout: 5 * time.Second,
		SweepEvery: 20 * time.Millisecond, WedgeConnectFailures: 3, MinPowerCycleInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ad.Close() })
	col := bluez.NewCollector(ad)
	if problems, err := testutil.CollectAndLint(col); err != nil || len(problems) > 0 {
		t.Fatalf("metric lint: %v %v", problems, err)
	}
	info := w.lockInfo(addr)
	if err := w.emu.Wedge(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_, err := ad.Connect(w.ctx, bluez.DeviceOptions{Path: info.Path})
		if !errors.Is(err, bluez.ErrConnectionAborted) || !bluez.Retryable(err) {
			t.Fatalf("connect %d on a wedged adapter: %v", i, err)
		}
	}
	waitFor(t, "the power cycle", func() bool { return w.emu.PowerCycles() == 1 && ad.PowerCycles() == 1 && ad.Ready() })
	const want = `
# HELP gatewayd_bluez_adapter_power_cycles_total Power cycles of a wedged adapter (discovery stuck or connects failing in a row).
# TYPE gatewayd_bluez_adapter_power_cycles_total counter
gatewayd_bluez_adapter_power_cycles_total{adapter="hci0"} 1
# HELP gatewayd_bluez_connect_failures_total Connection attempts to locks that failed with a link error.
# TYPE gatewayd_bluez_connect_failures_total counter
gatewayd_bluez_connect_failures_total{adapter="hci0"} 3
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want),
		"gatewayd_bluez_adapter_power_cycles_total", "gatewayd_bluez_connect_failures_total"); err != nil {
		t.Fatal(err)
	}
	info = w.lockInfo(addr)
	dev, err := ad.Connect(w.ctx, bluez.DeviceOptions{Path: info.Path})
	if err != nil {
		t.Fatalf("connect after the power cycle: %v", err)
	}
	_ = dev.Close()
}

// TestStuckDiscoveryPowerCycled: the controller stops scanning while
// bluetoothd still holds our discovery session (Discovering false,
// StartDiscovery answers InProgress). The health check counts the
// strikes, power-cycles the adapter once and discovery works again.
func TestStuckDiscoveryPowerCycled(t *testing.T) {
	const addr = "C0:00:00:00:04:01"
	w := newPairWorld(t, addr)
	ad, err := bluez.Open(w.ctx, w.conn, bluez.Options{Dispatcher: w.ad.Dispatcher(), CallTimeout: 5 * time.Second,
		SweepEvery: 20 * time.Millisecond, WedgeDiscoveryStrikes: 3, WedgeConnectFailures: -1, MinPowerCycleInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ad.Close() })
	if err := w.emu.Wedge(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the power cycle", func() bool { return w.emu.PowerCycles() == 1 && ad.PowerCycles() == 1 })
	// MinPowerCycleInterval holds back a second one; discovery runs again
	// and the lock is seen (advertisements arrive again) and connectable.
	cycled := time.Now()
	waitFor(t, "fresh advertisements", func() bool {
		for _, li := range ad.Locks() {
			if li.Address == addr && li.LastSeen.After(cycled) {
				return true
			}
		}
		return false
	})
	dev, err := ad.Connect(w.ctx, bluez.DeviceOptions{Path: w.emu.DevicePath(addr)})
	if err != nil {
		t.Fatalf("connect after the power cycle: %v", err)
	}
	_ = dev.Close()
	if n := ad.PowerCycles(); n != 1 {
		t.Fatalf("%d power cycles, want 1", n)
	}
}

// TestLinkFaultsAreRetryable: each fault of the radio reaches the caller
// as a retryable error of the right kind, and the next attempt works.
func TestLinkFaultsAreRetryable(t *testing.T) {
	const addr = "C0:00:00:00:05:01"
	w := newPairWorld(t, addr)
	info := w.lockInfo(addr)

	// le-connection-abort-by-local on Connect.
	if err := w.emu.InjectFaults(addr, emulator.Faults{ConnectAbort: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.ad.Connect(w.ctx, bluez.DeviceOptions{Path: info.Path}); !errors.Is(err, bluez.ErrConnectionAborted) || !bluez.Retryable(err) {
		t.Fatalf("aborted connect: %v", err)
	}

	// The link drops mid-handshake (after message_1's first fragment).
	if err := w.emu.InjectFaults(addr, emulator.Faults{DropAfterWrites: 1}); err != nil {
		t.Fatal(err)
	}
	dev, err := w.ad.Connect(w.ctx, bluez.DeviceOptions{Path: info.Path})
	if err != nil {
		t.Fatal(err)
	}
	_, err = channel.Dial(w.ctx, channel.NewFragmentTransport(dev, fragment.Options{}), w.fleet.GatewayConfig(w.gw))
	if !errors.Is(err, bluez.ErrNotConnected) || !bluez.Retryable(err) {
		t.Fatalf("handshake over a dropped link: %v", err)
	}
	_ = dev.Close()

	// The lock leaves range in the middle of a session.
	dev, lc := w.dial(addr)
	if err := w.emu.LeaveRange(addr); err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Status(w.ctx); !errors.Is(err, bluez.ErrNotConnected) || !bluez.Retryable(err) {
		t.Fatalf("status after the lock left range: %v", err)
	}
	_ = dev.Close()
	if err := w.emu.EnterRange(addr); err != nil {
		t.Fatal(err)
	}

	// Pairing fails on the link; the next pairing works.
	agent := newAgent(t, w.ctx, w.conn)
	_, lc = w.dial(addr)
	br, err := lc.AllowBond(w.ctx, 30*time.Second)
	if err != nil || br.Status != command.StatusOK {
		t.Fatalf("allow-bond %v %v", br, err)
	}
	win, err := br.BondWindow()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.emu.InjectFaults(addr, emulator.Faults{PairFail: 1}); err != nil {
		t.Fatal(err)
	}
	if err := bluez.Pair(w.ctx, w.conn, agent, info.Path, win.Passkey); !errors.Is(err, bluez.ErrAuthentication) {
		t.Fatalf("pairing over a failing link: %v", err)
	}
	// As on real BlueZ, the failed pairing dropped the link: connect
	// again (the window stays open) and pair.
	dev, _ = w.dial(addr)
	defer dev.Close()
	if err := bluez.Pair(w.ctx, w.conn, agent, info.Path, win.Passkey); err != nil {
		t.Fatalf("pairing again: %v", err)
	}
}

// TestCharacteristicsRememberedPerDevice: BlueZ keeps a device's GATT
// objects across connections, so the client reads the object tree
// (GetManagedObjects, whose size grows with every device nearby) only on
// the first connection to a device, and again once the device was
// removed. The calls are counted by a monitor on the bus.
func TestCharacteristicsRememberedPerDevice(t *testing.T) {
	const addr = "C0:00:00:00:07:01"
	w := newPairWorld(t, addr)
	mon := w.bus.Conn(t)
	if err := mon.BusObject().CallWithContext(w.ctx, "org.freedesktop.DBus.Monitoring.BecomeMonitor", 0,
		[]string{"type='method_call',member='GetManagedObjects',sender='" + w.conn.Names()[0] + "'",
			"type='method_call',member='Ping',sender='" + w.conn.Names()[0] + "'"}, uint32(0)).Err; err != nil {
		t.Fatal(err)
	}
	seen := make(chan *dbus.Message, 64)
	mon.Eavesdrop(seen)
	total := 0
	count := func() int {
		// A Ping from the client is a barrier: the monitor gets one
		// sender's messages in order, so every earlier call is counted
		// once it sees the Ping.
		t.Helper()
		if err := w.conn.Object(bluez.BusName, "/").CallWithContext(w.ctx, "org.freedesktop.DBus.Peer.Ping", 0).Err; err != nil {
			t.Fatal(err)
		}
		for {
			select {
			case m := <-seen:
				switch member, _ := m.Headers[dbus.FieldMember].Value().(string); {
				case m.Type != dbus.TypeMethodCall:
					// The monitor's own NameLost, for one.
				case member == "Ping":
					return total
				case member == "GetManagedObjects":
					total++
				}
			case <-w.ctx.Done():
				t.Fatal("the monitor saw no Ping")
			}
		}
	}
	cycle := func() {
		t.Helper()
		info := w.lockInfo(addr)
		dev, err := w.ad.Connect(w.ctx, bluez.DeviceOptions{Path: info.Path})
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cycle()
	if n := count(); n != 1 {
		t.Fatalf("first connection: %d GetManagedObjects, want 1", n)
	}
	cycle()
	cycle()
	if n := count(); n != 1 {
		t.Fatalf("two more connections: %d GetManagedObjects in all, want still 1", n)
	}
	// Out of range (no advertisement brings it back at once), removed,
	// then back.
	if err := w.emu.LeaveRange(addr); err != nil {
		t.Fatal(err)
	}
	if err := w.ad.RemoveBond(w.ctx, addr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the device removed", func() bool { return len(w.ad.Locks()) == 0 })
	if err := w.emu.EnterRange(addr); err != nil {
		t.Fatal(err)
	}
	cycle()
	if n := count(); n != 2 {
		t.Fatalf("after the device was removed: %d GetManagedObjects in all, want 2", n)
	}
}

// TestRestartsCostNoPowerCycle (issues 12, 13): bluetoothd is restarted
// 20 times, every lock stored (connected to once), so that each new
// bluetoothd loads them and signals InterfacesAdded for each as it
// starts. Each time, the client starts discovery again, hears every lock
// advertise again, and through more health checks than it needs strikes
// (one) never power-cycles the adapter: its own discovery session's
// InProgress is no wedge, and restarting drops no signal. On a godbus
// connection and on DialBus's (advertisements taken in the reader).
func TestRestartsCostNoPowerCycle(t *testing.T) {
	for _, tap := range []bool{false, true} {
		name := "godbus"
		if tap {
			name = "DialBus"
		}
		t.Run(name, func(t *testing.T) { testRestartsCostNoPowerCycle(t, tap) })
	}
}

func testRestartsCostNoPowerCycle(t *testing.T, tap bool) {
	const restarts = 20
	addrs := []string{"C0:00:00:00:06:01", "C0:00:00:00:06:02", "C0:00:00:00:06:03",
		"C0:00:00:00:06:04", "C0:00:00:00:06:05", "C0:00:00:00:06:06"}
	w := newPairWorld(t, addrs...)
	conn := w.bus.Conn(t)
	if tap {
		conn = dialTap(t, w.bus)
	}
	// One strike is enough to power-cycle, and no cycle is held back:
	// a single misjudged health check would be counted.
	ad, err := bluez.Open(w.ctx, conn, bluez.Options{CallTimeout: 5 * time.Second, SweepEvery: 20 * time.Millisecond,
		WedgeDiscoveryStrikes: 1, WedgeConnectFailures: -1, MinPowerCycleInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ad.Close() })
	// Stored: bluetoothd keeps a device a client connected to.
	for _, addr := range addrs {
		w.lockInfo(addr)
		dev, err := ad.Connect(w.ctx, bluez.DeviceOptions{Path: w.emu.DevicePath(addr)})
		if err != nil {
			t.Fatalf("connect %s: %v", addr, err)
		}
		_ = dev.Close()
	}
	emu := w.emu
	t.Cleanup(func() { _ = emu.Close() })
	var emuCycles uint64
	for i := uint64(1); i <= restarts; i++ {
		emuCycles += emu.PowerCycles()
		decoded := ad.DecodedAdverts()
		n, err := emu.Restart(w.ctx)
		if err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		emu = n
		waitFor(t, fmt.Sprintf("restart %d noticed", i), func() bool { return ad.Restarts() == i })
		// A health check completed after Restarts counted this one ran
		// after the recovery (the adapter's goroutine does both).
		h := ad.HealthChecks()
		waitFor(t, "a health check after the recovery", func() bool { return ad.HealthChecks() > h })
		recovered := time.Now()
		waitFor(t, fmt.Sprintf("every lock advertising after restart %d", i), func() bool {
			seen := 0
			for _, li := range ad.Locks() {
				if li.Err == nil && li.LastSeen.After(recovered) {
					seen++
				}
			}
			return seen == len(addrs) && ad.Ready()
		})
		h = ad.HealthChecks()
		waitFor(t, "three more health checks", func() bool { return ad.HealthChecks() >= h+3 })
		disc, err := conn.Object(bluez.BusName, ad.Path()).GetProperty(bluez.IfaceAdapter + ".Discovering")
		if err != nil || disc.Value() != true {
			t.Fatalf("restart %d: Discovering %v %v", i, disc, err)
		}
		if c, e := ad.PowerCycles(), emuCycles+emu.PowerCycles(); c != 0 || e != 0 {
			t.Fatalf("restart %d: %d power cycles counted by the client, %d by bluetoothd; want 0", i, c, e)
		}
		if tap && ad.DecodedAdverts() == decoded {
			t.Fatalf("restart %d: no advertisement decoded by the tap", i)
		}
	}
	if r := ad.Resyncs(); r != 0 {
		t.Fatalf("%d resyncs: signals were dropped", r)
	}
	if d := ad.DroppedEvents(); d != 0 {
		t.Fatalf("%d events dropped", d)
	}
}
