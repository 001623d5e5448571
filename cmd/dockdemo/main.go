// Command dockdemo runs a dock's gateway side as far as it exists today,
// with real parts wherever they run here: a private system bus (a real
// dbus-daemon), the BlueZ emulator as bluetoothd, reference locks of a
// test fleet on its virtual radio, gatewayd's own BlueZ client and agent,
// and the command journal in a real bbolt file. It discovers the locks,
// bonds with one by its one-time passkey, carries operator-signed commands
// through the journal and the secure channel, refuses a replay, survives a
// bluetoothd crash in the middle of a command without running it twice,
// power-cycles a wedged adapter, reconciles bonds, and prints the metrics.
//
// It is the project's main demo (scripts/demo.sh) until the daemon with
// its MQTT side exists. It may import everything in the module.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
	"github.com/gatewayd/gatewayd/internal/ratelog"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dockdemo:", err)
		os.Exit(1)
	}
}

// fatal satisfies channeltest.TB outside a test: a fixture failure panics
// with an error, which run recovers and returns.
type fatal struct{}

func (fatal) Helper() {}
func (fatal) Fatalf(format string, a ...any) {
	panic(fmt.Errorf(format, a...))
}

// adapterAddr is the emulated adapter's address: the peer address the
// locks see, for which their bond windows are opened.
const adapterAddr = "0A:11:22:33:44:55"

// demo holds the running parts.
type demo struct {
	out   io.Writer
	ctx   context.Context
	emu   *emulator.Emulator
	conn  *dbus.Conn
	ad    *bluez.Adapter
	agent *bluez.Agent
	db    *bonds.DB
	fleet *channeltest.Fleet
	gw    channeltest.Party
	op    channeltest.Party
	locks []*hostedLock
	ctr   uint64 // the operator's per-signer counter
	// first is the number of the first step (-first); stepNo the next.
	first, stepNo int
}

type hostedLock struct {
	addr string
	l    *lock.Lock
	act  *locktest.Actuator
}

func (d *demo) say(format string, a ...any) { fmt.Fprintf(d.out, format+"\n", a...) }

// Steps is the number of steps the demo shows (-steps prints it), so
// that scripts/demo.sh numbers its parts' steps on.
const Steps = 8

// step starts the demo's next step: a blank line, then its number
// (counting on from -first) and title.
func (d *demo) step(format string, a ...any) {
	if d.stepNo > d.first {
		fmt.Fprintln(d.out)
	}
	d.say("== %d. "+format, append([]any{d.stepNo}, a...)...)
	d.stepNo++
}

func run(ctx context.Context, args []string, out io.Writer) (err error) {
	fs := flag.NewFlagSet("dockdemo", flag.ContinueOnError)
	fs.SetOutput(out)
	n := fs.Int("locks", 5, "reference locks on the virtual radio (1..200)")
	verbose := fs.Bool("v", false, "log the client's debug lines to stderr")
	first := fs.Int("first", 1, "the number of the first step (scripts/demo.sh numbers its three parts' steps on)")
	steps := fs.Bool("steps", false, "print the number of steps the demo shows, and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *steps {
		fmt.Fprintln(out, Steps)
		return nil
	}
	if *n < 2 || *n > 200 {
		return fmt.Errorf("-locks %d: want 2..200", *n)
	}
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(error)
			if !ok {
				panic(r)
			}
			err = e
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		// Repeats held back as the daemon's will be (an SD card wears out).
		log = slog.New(ratelog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}), ratelog.Options{}))
	}
	dir, err := os.MkdirTemp("", "dockdemo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	d := &demo{out: out, ctx: ctx, first: *first, stepNo: *first}
	d.step("a private system bus (dbus-daemon) and bluetoothd (the BlueZ 5.66 emulator)")
	bus, err := emulator.StartBus(ctx, dir)
	if err != nil {
		return err
	}
	defer bus.Close()
	d.emu, err = emulator.Start(ctx, emulator.Options{Addr: bus.Addr, Seed: 7, AdapterAddress: adapterAddr,
		RadioInterval: 100 * time.Millisecond, Logger: log.With("subsystem", "emulator")})
	if err != nil {
		return err
	}
	defer func() { _ = d.emu.Close() }()
	d.say("   bus %s; adapter hci0 %s", bus.Addr, adapterAddr)

	d.fleet = channeltest.NewFleet(fatal{}, "acme")
	d.gw = d.fleet.Gateway(fatal{}, "gw-dock-1")
	d.op = d.fleet.Operator(fatal{}, "otto", cred.RoleOperator)
	for i := range *n {
		lp := d.fleet.Lock(fatal{}, uint64(0x4c4b000000000001+i))
		act := &locktest.Actuator{}
		l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: d.fleet.Roots, Store: locktest.NewStore(),
			Actuator: act, RTC: func() time.Time { return d.fleet.Now }})
		if err != nil {
			return err
		}
		addr := fmt.Sprintf("C0:00:00:00:%02X:%02X", (i+1)/256, (i+1)%256)
		if err := d.emu.AddLock(l, addr, emulator.LockOptions{RSSI: int16(-50 - 5*(i%8))}); err != nil {
			return err
		}
		d.locks = append(d.locks, &hostedLock{addr: addr, l: l, act: act})
	}

	if d.conn, err = dbus.Connect(bus.Addr); err != nil {
		return err
	}
	defer d.conn.Close()
	if d.ad, err = bluez.Open(ctx, d.conn, bluez.Options{Logger: log.With("subsystem", "bluez"),
		// The demo shows a power cycle seconds after bluetoothd's restart,
		// which may itself have cost one: cycles may come closer than a
		// dock's minute.
		SweepEvery: 100 * time.Millisecond, WedgeConnectFailures: 3, MinPowerCycleInterval: 500 * time.Millisecond}); err != nil {
		return err
	}
	defer d.ad.Close()
	if d.agent, err = bluez.NewAgent(ctx, d.conn, bluez.AgentOptions{Dispatcher: d.ad.Dispatcher(),
		Logger: log.With("subsystem", "agent")}); err != nil {
		return err
	}
	defer d.agent.Close()
	if d.db, err = bonds.Open(filepath.Join(dir, "gatewayd.db"), bonds.Options{Logger: log.With("subsystem", "bonds")}); err != nil {
		return err
	}
	defer d.db.Close()

	for _, step := range []func() error{d.discover, d.bond, d.commands, d.crash, d.wedge, d.reconcile, d.metrics} {
		if err := step(); err != nil {
			return err
		}
	}
	d.say("\nall steps passed")
	return nil
}

// discover waits until every lock is seen and lists them.
func (d *demo) discover() error {
	d.step("LE discovery filtered on the lock service; advertisements parsed (docs/protocol.md §1.1)")
	var ls []bluez.LockInfo
	if err := d.until("every lock discovered", func() bool {
		ls = ls[:0]
		for _, li := range d.ad.Locks() {
			if li.Err == nil {
				ls = append(ls, li)
			}
		}
		return len(ls) == len(d.locks)
	}); err != nil {
		return err
	}
	for _, li := range ls {
		state := "unlocked"
		if li.Flags&bluez.FlagLocked != 0 {
			state = "locked"
		}
		d.say("   %s  lock %x  %-8s  battery %3d%%  RSSI %d dBm", li.Address, li.LockID, state, li.Battery, li.RSSI)
		id := bonds.LockID(li.LockID)
		if err := d.db.PutLock(d.ctx, bonds.Lock{ID: id, Address: li.Address, Bond: bonds.BondNone}); err != nil {
			return err
		}
	}
	return nil
}

// dial connects to the lock at addr and opens the secure channel.
func (d *demo) dial(addr string) (*bluez.Device, *lockclient.Client, error) {
	dev, err := d.ad.Connect(d.ctx, bluez.DeviceOptions{Path: d.emu.DevicePath(addr)})
	if err != nil {
		return nil, nil, err
	}
	start := time.Now()
	ch, err := channel.Dial(d.ctx, channel.NewFragmentTransport(dev, fragment.Options{}), d.fleet.GatewayConfig(d.gw))
	if err != nil {
		_ = dev.Close()
		return nil, nil, err
	}
	d.say("   connected to %s, ATT MTU %d; EDHOC handshake (mutual, fleet credentials) in %v",
		addr, dev.MTU(), time.Since(start).Round(time.Millisecond))
	return dev, lockclient.New(ch), nil
}

// bond opens the first lock's bond window over the secure channel and
// pairs through our agent with the one-time passkey.
func (d *demo) bond() error {
	h := d.locks[0]
	d.step("bonding with %s by its one-time passkey", h.addr)
	dev, lc, err := d.dial(h.addr)
	if err != nil {
		return err
	}
	defer dev.Close()
	r, err := lc.AllowBond(d.ctx, 30*time.Second)
	if err != nil || r.Status != command.StatusOK {
		return fmt.Errorf("allow-bond: %v %v", r, err)
	}
	win, err := r.BondWindow()
	if err != nil {
		return err
	}
	d.say("   allow-bond: the lock opened a bond window for %s; its passkey came in the protected result (never logged)", win.Peer)
	id := bonds.LockID(h.l.ID())
	if _, err := d.db.SetBond(d.ctx, id, bonds.BondBonding, h.addr); err != nil {
		return err
	}
	if err := bluez.Pair(d.ctx, d.conn, d.agent, d.emu.DevicePath(h.addr), win.Passkey); err != nil {
		return err
	}
	if _, err := d.db.SetBond(d.ctx, id, bonds.BondBonded, h.addr); err != nil {
		return err
	}
	d.say("   Device1.Pair: bluetoothd asked our agent (KeyboardOnly) for the passkey of exactly this device: bonded")
	other := d.locks[1].addr
	odev, err := d.ad.Connect(d.ctx, bluez.DeviceOptions{Path: d.emu.DevicePath(other)})
	if err != nil {
		return err
	}
	defer odev.Close()
	if err := bluez.Pair(d.ctx, d.conn, d.agent, d.emu.DevicePath(other), 123456); !errors.Is(err, bluez.ErrAuthentication) {
		return fmt.Errorf("a pairing without a bond window: %v", err)
	} else {
		d.say("   pairing with %s, which opened no bond window, with a guessed passkey: %s", other, short(err))
	}
	return nil
}

// sign makes an operator-signed command for lock h.
func (d *demo) sign(h *hostedLock, op command.Op, id bonds.CommandID) (command.Body, []byte) {
	d.ctr++
	b := command.Body{LockID: h.l.ID(), Op: op, CommandID: id, NotAfter: d.fleet.Now.Add(time.Hour), Counter: d.ctr}
	signed, err := command.Sign(d.op.Key, d.op.Cert.Raw, b)
	if err != nil {
		panic(err)
	}
	return b, signed
}

// accept journals a command durably: the point at which the MQTT side
// will acknowledge it to the broker.
func (d *demo) accept(h *hostedLock, op command.Op, id bonds.CommandID, signed []byte) error {
	_, err := d.db.Append(d.ctx, bonds.Command{ID: id, LockID: bonds.LockID(h.l.ID()), Operator: "otto",
		Operation: op.String(), NotAfter: d.fleet.Now.Add(time.Hour), Payload: signed})
	if err != nil {
		return err
	}
	_, err = d.db.Transition(d.ctx, id, bonds.StateQueued, nil)
	return err
}

// execute runs a journaled command on its lock and records the result.
func (d *demo) execute(h *hostedLock, op command.Op, id bonds.CommandID, signed []byte) (*command.Result, error) {
	if _, err := d.db.Transition(d.ctx, id, bonds.StateRunning, nil); err != nil {
		return nil, err
	}
	dev, lc, err := d.dial(h.addr)
	var r *command.Result
	if err == nil {
		r, err = lc.Signed(d.ctx, op, signed)
		_ = dev.Close()
	}
	if err != nil {
		if bluez.Retryable(err) {
			if _, terr := d.db.Transition(d.ctx, id, bonds.StateQueued, nil); terr != nil {
				return nil, terr
			}
		}
		return nil, err
	}
	status := r.Status
	if status == command.StatusDuplicateCommand {
		status, _ = r.Duplicate() // the lock ran it before: its first answer
	}
	final := bonds.StateSucceeded
	if status != command.StatusOK {
		final = bonds.StateFailed
	}
	_, err = d.db.Transition(d.ctx, id, final, func(e *bonds.Entry) {
		e.Result = &bonds.Result{Status: status.String()}
	})
	return r, err
}

func (d *demo) commands() error {
	h := d.locks[0]
	d.step("operator-signed commands through the journal and the secure channel")
	id := bonds.CommandID{0xc0, 0x01}
	_, signed := d.sign(h, command.OpUnlock, id)
	if err := d.accept(h, command.OpUnlock, id, signed); err != nil {
		return err
	}
	d.say("   unlock %s from otto: journaled and fsynced (now it may be acknowledged to the broker)", id)
	r, err := d.execute(h, command.OpUnlock, id, signed)
	if err != nil {
		return err
	}
	d.say("   result: %s; bolt moves: %d", r.Status, h.act.Moves())
	ob, err := d.db.Outbox(d.ctx)
	if err != nil || len(ob) != 1 {
		return fmt.Errorf("outbox %v %v", ob, err)
	}
	d.say("   outbox: %s %s → %s (kept until the broker acknowledges it)", ob[0].Operation, ob[0].CommandID, ob[0].State)
	if err := d.db.Ack(d.ctx, id); err != nil {
		return err
	}

	d.say("   the same command again (a replay on MQTT):")
	if err := d.accept(h, command.OpUnlock, id, signed); !errors.Is(err, bonds.ErrDuplicate) {
		return fmt.Errorf("replayed command accepted: %v", err)
	} else {
		d.say("     refused by the journal: %v", err)
	}
	dev, lc, err := d.dial(h.addr)
	if err != nil {
		return err
	}
	r, err = lc.Signed(d.ctx, command.OpUnlock, signed)
	_ = dev.Close()
	if err != nil || r.Status != command.StatusDuplicateCommand {
		return fmt.Errorf("replay to the lock: %v %v", r, err)
	}
	d.say("     and by the lock itself, had it got through: %s; bolt moves: %d", r.Status, h.act.Moves())
	return nil
}

// crash kills bluetoothd while a lock is moving its bolt.
func (d *demo) crash() error {
	h := d.locks[1]
	d.step("bluetoothd crashes while %s is unlocking", h.addr)
	id := bonds.CommandID{0xc0, 0x02}
	_, signed := d.sign(h, command.OpUnlock, id)
	if err := d.accept(h, command.OpUnlock, id, signed); err != nil {
		return err
	}
	moving, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h.act.SetBeforeMove(func(command.LockState) error {
		once.Do(func() { close(moving) })
		<-release // the crash takes the link first; then the bolt moves
		return nil
	})
	errc := make(chan error, 1)
	go func() {
		_, err := d.execute(h, command.OpUnlock, id, signed)
		errc <- err
	}()
	<-moving
	restarted := make(chan error, 1)
	go func() {
		e2, err := d.emu.Restart(d.ctx)
		if err == nil {
			d.emu = e2
		}
		restarted <- err
	}()
	err := <-errc
	if !bluez.Retryable(err) {
		return fmt.Errorf("command during the crash: %v, want a retryable error", err)
	}
	close(release)
	if err := <-restarted; err != nil {
		return err
	}
	e, _ := d.db.Entry(d.ctx, id)
	d.say("   the command failed as retryable (%s); journal: %s, attempt %d", short(err), e.State, e.Attempts)
	if err := d.until("the client to recover", func() bool {
		return d.ad.Restarts() == 1 && d.ad.Ready() && d.agent.Registrations() == 2 && len(d.ad.Locks()) == len(d.locks)
	}); err != nil {
		return err
	}
	d.say("   recovered without restarting: discovery started again, agent registered again, %d locks seen", len(d.ad.Locks()))
	// As the scheduler does: a retryable link error (the lock's side of
	// the old link can still be closing, as on real BlueZ) is tried again.
	var r *command.Result
	for attempt := 1; ; attempt++ {
		r, err = d.execute(h, command.OpUnlock, id, signed)
		if err == nil {
			break
		}
		if !bluez.Retryable(err) || attempt == 5 {
			return err
		}
		d.say("   retry %d failed as retryable (%s); trying again", attempt, short(err))
		select {
		case <-d.ctx.Done():
			return d.ctx.Err()
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
	e, _ = d.db.Entry(d.ctx, id)
	d.say("   retry: the lock answers %s (it had unlocked before the crash); journal: %s after %d attempts; bolt moves: %d",
		r.Status, e.State, e.Attempts, h.act.Moves())
	if h.act.Moves() != 1 {
		return fmt.Errorf("the bolt moved %d times", h.act.Moves())
	}
	return d.db.Ack(d.ctx, id)
}

// wedge wedges the adapter: connects fail until it is power-cycled.
func (d *demo) wedge() error {
	h := d.locks[2]
	d.step("the adapter wedges (every connect aborts)")
	// The unlock retried after bluetoothd's restart may have cost a cycle
	// already (connects failing in a row while the lock's old link
	// closed; the restart itself costs none since issue 13): the one to
	// wait for is the next.
	cycles := d.ad.PowerCycles()
	if err := d.emu.Wedge(); err != nil {
		return err
	}
	// Connects abort until the client power-cycles the adapter (after
	// consecutive aborts); from then on they find it not ready, and once
	// the cycle is over they may succeed, so the demo stops trying at the
	// first "not ready".
	for range 3 {
		dev, err := d.ad.Connect(d.ctx, bluez.DeviceOptions{Path: d.emu.DevicePath(h.addr)})
		if err == nil {
			_ = dev.Close()
			if d.ad.PowerCycles() > cycles {
				break // the client's cycle (for discovery stuck) came first
			}
			return errors.New("connected through a wedged adapter")
		}
		d.say("   connect %s: %s", h.addr, short(err))
		if errors.Is(err, bluez.ErrNotReady) {
			break
		}
	}
	if err := d.until("the power cycle", func() bool { return d.ad.PowerCycles() > cycles && d.ad.Ready() }); err != nil {
		return err
	}
	d.say("   the client power-cycled the adapter (gatewayd_bluez_adapter_power_cycles_total %d)", d.ad.PowerCycles())
	if err := d.until("the lock seen again", func() bool { return len(d.ad.Locks()) == len(d.locks) }); err != nil {
		return err
	}
	// A connect right after the cycle can still abort while the
	// controller settles (the emulator re-adds the devices as discovery
	// finds them again); the scheduler retries a retryable error after its
	// backoff, and so does the demo.
	var (
		dev *bluez.Device
		lc  *lockclient.Client
		err error
	)
	for attempt := 1; ; attempt++ {
		dev, lc, err = d.dial(h.addr)
		if err == nil || !bluez.Retryable(err) || attempt == 30 {
			break
		}
		d.say("   connect %s: %s; retrying", h.addr, short(err))
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	defer dev.Close()
	r, err := lc.Status(d.ctx)
	if err != nil {
		return err
	}
	d.say("   status of %s: %s", h.addr, r.Status)
	return nil
}

func (d *demo) reconcile() error {
	d.step("bonds: the database against bluetoothd")
	rep, err := d.db.Reconcile(d.ctx, d.ad, bonds.Policy{})
	if err != nil {
		return err
	}
	paired, err := d.ad.PairedDevices(d.ctx)
	if err != nil {
		return err
	}
	d.say("   BlueZ holds bonds with %v; lost %d, adopted %d, removed %d", paired, len(rep.Lost), len(rep.Adopted), len(rep.Removed))
	if err := d.db.Check(d.ctx); err != nil {
		return err
	}
	d.say("   db check: bbolt's check and the schema's invariants pass")
	return nil
}

func (d *demo) metrics() error {
	d.step("metrics (Prometheus text format)")
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(bluez.NewCollector(d.ad)); err != nil {
		return err
	}
	mfs, err := reg.Gather()
	if err != nil {
		return err
	}
	var b strings.Builder
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if !strings.HasPrefix(line, "#") {
			d.say("   %s", line)
		}
	}
	return nil
}

// until polls cond every 10 ms for up to 20 s.
func (d *demo) until(what string, cond func() bool) error {
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) || d.ctx.Err() != nil {
			return fmt.Errorf("timed out waiting for %s", what)
		}
	}
	return nil
}

// short is an error's last part: the reason, without the call chain.
func short(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "bluez: "); i > 0 {
		s = s[i:]
	}
	return s
}
