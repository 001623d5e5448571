package realbluez

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// Fixed identities of the tier: btvirt gives hci0 and hci1 these
// addresses, and the emulator run uses the same ones, so results compare.
const (
	GatewayAddress = "00:AA:01:00:00:00" // hci0, the gateway
	LockAddress    = "00:AA:01:01:00:01" // hci1, the lock
	LockNumber     = 0x4c4b0000000000c1
	FleetName      = "acme"
)

// Result is one step of one scenario: a JSON line of the results file.
type Result struct {
	Mode     string         `json:"mode"` // "emulator", "bluez-eatt", "bluez-att"
	Scenario string         `json:"scenario"`
	Step     string         `json:"step"`
	OK       bool           `json:"ok"`
	Kind     string         `json:"kind,omitempty"` // error class (Classify) or result status
	Error    string         `json:"error,omitempty"`
	Facts    map[string]any `json:"facts,omitempty"`
	Millis   int64          `json:"ms"`
}

// Key is what the differential test compares: the step and its outcome.
func (r Result) Key() string {
	return fmt.Sprintf("%s/%s ok=%v kind=%s", r.Scenario, r.Step, r.OK, r.Kind)
}

// Env is where scenarios run: a gateway connection to a bluetoothd (real
// or emulated) that can reach the lock.
type Env struct {
	Mode    string
	Conn    *dbus.Conn // the gateway's bus connection
	Adapter string     // the gateway's adapter, "hci0"
	Lock    *lock.Lock // the lock under test, hosted by the other side
	Bolt    *locktest.Actuator
	Fleet   *channeltest.Fleet
	// Restart restarts bluetoothd (or the emulator).
	Restart func(ctx context.Context) error
	// LockAgentCalls counts the Agent1 calls bluetoothd made for the lock
	// side (nil: not observable, the emulator).
	LockAgentCalls func() uint64
	// Out receives every result.
	Out func(Result)
}

// Fixture is the fleet and lock both sides of a run build the same way.
type Fixture struct {
	Fleet *channeltest.Fleet
	Lock  *lock.Lock
	Bolt  *locktest.Actuator
}

// NewFixture makes the test fleet and the lock under test. Its clock
// starts at the fleet's time and runs; lockouts are off (pairing
// failures would otherwise lock the gateway out of the next scenario's
// handshake; the lockout has its own tests in firmware/lock).
func NewFixture(tb channeltest.TB) Fixture {
	fleet := channeltest.NewFleet(tb, FleetName)
	p := fleet.Lock(tb, LockNumber)
	act := &locktest.Actuator{}
	start := time.Now()
	l, err := lock.New(lock.Options{Cert: p.Cert, Key: p.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
		Actuator: act, RTC: func() time.Time { return fleet.Now.Add(time.Since(start)) },
		Lockout: lock.LockoutPolicy{Free: 1 << 20, GlobalFailures: 1 << 20}})
	if err != nil {
		tb.Fatalf("lock: %v", err)
	}
	return Fixture{Fleet: fleet, Lock: l, Bolt: act}
}

// Scenario is one named scenario.
type Scenario struct {
	Name string
	Run  func(ctx context.Context, r *Run) error
}

// Scenarios are every scenario, in the order they run: each may rely on
// the state the earlier ones left (bond before reconnect, and so on).
// Adding a scenario is adding a line here and its function.
var Scenarios = []Scenario{
	{"discover", scenarioDiscover},
	{"handshake", scenarioHandshake},
	{"badsig", scenarioBadSignature},
	{"wrongpasskey", scenarioWrongPasskey},
	// restart before bond: the first reconnection of a bonded pair after
	// bluetoothd restarted oopses Debian's 6.1 kernel (hci_chan_del;
	// docs/real-bluez.md), and bond then pairs through the agents the
	// new bluetoothd was given.
	{"restart", scenarioRestart},
	{"bond", scenarioBond},
	{"advertise", scenarioAdvertise},
}

// Run is the state of one run of scenarios.
type Run struct {
	env     Env
	ad      *bluez.Adapter
	agent   *bluez.Agent
	dev     dbus.ObjectPath // the lock's device on the gateway's adapter
	gw, op  channeltest.Party
	counter atomic.Uint64
	failed  bool
	// windowEnd is when the last bond window opened closes (ensureConnected
	// tries until then).
	windowEnd time.Time
}

// RunAll opens the gateway's adapter client and agent on env and runs
// the named scenarios (all when names is empty). It returns false when a
// step failed; the results went to env.Out.
func RunAll(ctx context.Context, env Env, agent *bluez.Agent, names []string) bool {
	r := &Run{env: env, agent: agent}
	r.gw = env.Fleet.Gateway(fatalTB{}, "gw-dock-1")
	r.op = env.Fleet.Operator(fatalTB{}, "otto", cred.RoleOperator)
	defer func() {
		if r.ad != nil {
			_ = r.ad.Close()
		}
	}()
	for _, s := range Scenarios {
		if len(names) > 0 && !slices.Contains(names, s.Name) {
			continue
		}
		start := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		err := s.Run(sctx, r)
		cancel()
		res := Result{Scenario: s.Name, Step: "done", OK: err == nil, Millis: time.Since(start).Milliseconds()}
		if err != nil {
			res.Kind, res.Error = Classify(err), err.Error()
		}
		r.emit(res)
	}
	return !r.failed
}

func (r *Run) emit(res Result) {
	res.Mode = r.env.Mode
	if !res.OK && res.Step != "done" {
		r.failed = true
	}
	if res.Step == "done" && !res.OK {
		r.failed = true
	}
	r.env.Out(res)
}

// step runs f as one step and reports it. Its error is returned so the
// scenario can stop; expectFail steps report ok when f fails as wanted.
func (r *Run) step(scenario, name string, f func() (map[string]any, error)) error {
	start := time.Now()
	facts, err := f()
	res := Result{Scenario: scenario, Step: name, OK: err == nil, Facts: facts, Millis: time.Since(start).Milliseconds()}
	if err != nil {
		res.Kind, res.Error = Classify(err), err.Error()
	}
	r.emit(res)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// expect reports a step whose outcome is a refusal: it is ok when f's
// error or status is the one wanted, and Kind names what happened.
func (r *Run) expect(scenario, name, wantKind string, f func() (map[string]any, string, error)) error {
	start := time.Now()
	facts, kind, err := f()
	if err != nil && kind == "" {
		kind = Classify(err)
	}
	res := Result{Scenario: scenario, Step: name, OK: kind == wantKind, Kind: kind, Facts: facts,
		Millis: time.Since(start).Milliseconds()}
	if err != nil {
		res.Error = err.Error()
	}
	if !res.OK && res.Error == "" {
		res.Error = fmt.Sprintf("got %s, want %s", kind, wantKind)
	}
	r.emit(res)
	if !res.OK {
		return fmt.Errorf("%s: %s", name, res.Error)
	}
	return nil
}

// Classify names an error's class: the bluez sentinel it wraps, a
// context error, or "error".
func Classify(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{
		{bluez.ErrAuthentication, "ErrAuthentication"}, {bluez.ErrAlreadyExists, "ErrAlreadyExists"},
		{bluez.ErrNotConnected, "ErrNotConnected"}, {bluez.ErrConnectionFailed, "ErrConnectionFailed"},
		{bluez.ErrConnectionAborted, "ErrConnectionAborted"}, {bluez.ErrInProgress, "ErrInProgress"},
		{bluez.ErrDoesNotExist, "ErrDoesNotExist"}, {bluez.ErrFailed, "ErrFailed"},
		{bluez.ErrNotPermitted, "ErrNotPermitted"}, {bluez.ErrNotSupported, "ErrNotSupported"},
		{bluez.ErrBusGone, "ErrBusGone"}, {bluez.ErrInvalidArguments, "ErrInvalidArguments"},
		{context.DeadlineExceeded, "timeout"}, {context.Canceled, "canceled"},
	} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "error"
}

type fatalTB struct{}

func (fatalTB) Helper() {}
func (fatalTB) Fatalf(format string, a ...any) {
	panic(fmt.Errorf(format, a...))
}

// countingLink counts the packets of a channel.Link and their largest
// size: the fragments at the real MTU.
type countingLink struct {
	channel.Link
	out, in, maxOut, maxIn atomic.Int64
}

func (c *countingLink) WritePacket(ctx context.Context, p []byte) error {
	c.out.Add(1)
	if n := int64(len(p)); n > c.maxOut.Load() {
		c.maxOut.Store(n)
	}
	return c.Link.WritePacket(ctx, p)
}

func (c *countingLink) ReadPacket(ctx context.Context) ([]byte, error) {
	p, err := c.Link.ReadPacket(ctx)
	if err == nil {
		c.in.Add(1)
		if n := int64(len(p)); n > c.maxIn.Load() {
			c.maxIn.Store(n)
		}
	}
	return p, err
}

func (c *countingLink) facts(f map[string]any) map[string]any {
	f["packets_out"], f["packets_in"] = c.out.Load(), c.in.Load()
	f["max_packet_out"], f["max_packet_in"] = c.maxOut.Load(), c.maxIn.Load()
	return f
}

// session is one connection with an open secure channel.
type session struct {
	dev    *bluez.Device
	link   *countingLink
	client *lockclient.Client
}

func (s *session) close() {
	if s != nil && s.dev != nil {
		_ = s.dev.Close()
	}
}

// connect connects to the lock and runs the handshake, as two steps.
func (r *Run) connect(ctx context.Context, scenario string) (*session, error) {
	s := &session{}
	err := r.step(scenario, "connect", func() (map[string]any, error) {
		// A failed connection is tried again, as the fleet layer does:
		// with two BlueZ ends both open EATT channels at once, and
		// bluetoothd 5.66 can queue a request (StartNotify's CCC write) on
		// a channel the peer is closing, which then never answers
		// (docs/real-bluez.md). The attempts are a fact of the step.
		var err error
		// The signals the client waits on, and where Connect's reply
		// came among them (TestDifferential compares the order).
		rec := r.record()
		defer rec.stop()
		for attempt := 1; attempt <= 3; attempt++ {
			var d *bluez.Device
			// Each attempt, the Connect call and the wait for
			// ServicesResolved together, is bounded below the scenario's
			// 90 s: a request lost on an EATT channel during the GATT
			// cache restore holds ServicesResolved for ATT's 30 s and
			// more on a loaded guest, and only a new link ends it.
			actx, cancel := context.WithTimeout(ctx, 25*time.Second)
			call := r.env.Conn.Object(bluez.BusName, r.dev).CallWithContext(actx, bluez.IfaceDevice+".Connect", 0)
			rec.reply(call, "reply")
			if err = bluez.MapError(call.Err); err == nil {
				d, err = bluez.Connect(actx, r.env.Conn, bluez.DeviceOptions{Path: r.dev, Dispatcher: r.ad.Dispatcher()})
			}
			cancel()
			if err == nil {
				s.dev = d
				rec.stop()
				return rec.facts(map[string]any{"mtu": d.MTU(), "attempts": attempt}), nil
			}
			if ctx.Err() != nil || (!bluez.Retryable(err) && !errors.Is(err, context.DeadlineExceeded)) {
				break
			}
			_ = r.env.Conn.Object(bluez.BusName, r.dev).CallWithContext(ctx, bluez.IfaceDevice+".Disconnect", 0).Err
			if werr := r.waitDisconnected(ctx); werr != nil {
				break
			}
		}
		return nil, err
	})
	if err != nil {
		return nil, err
	}
	s.link = &countingLink{Link: s.dev}
	err = r.step(scenario, "handshake", func() (map[string]any, error) {
		ch, err := channel.Dial(ctx, channel.NewFragmentTransport(s.link, fragment.Options{}), r.env.Fleet.GatewayConfig(r.gw))
		if err != nil {
			return nil, err
		}
		s.client = lockclient.New(ch)
		return s.link.facts(map[string]any{"mtu": s.dev.MTU()}), nil
	})
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// statusStep runs a status command that must succeed.
func (r *Run) statusStep(ctx context.Context, scenario string, s *session) error {
	return r.step(scenario, "status", func() (map[string]any, error) {
		res, err := s.client.Status(ctx)
		if err != nil {
			return nil, err
		}
		if res.Status != command.StatusOK {
			return nil, fmt.Errorf("status %v", res.Status)
		}
		return map[string]any{"bolt": res.LockState.String()}, nil
	})
}

func (r *Run) signed(op command.Op, key channeltest.Party) ([]byte, error) {
	n := r.counter.Add(1)
	var id [16]byte
	id[15], id[14] = byte(n), 0x7e
	return command.Sign(key.Key, key.Cert.Raw, command.Body{LockID: r.env.Lock.ID(), Op: op, CommandID: id,
		NotAfter: r.env.Fleet.Now.Add(time.Hour), Counter: n})
}

func scenarioDiscover(ctx context.Context, r *Run) error {
	if err := r.step("discover", "open", func() (map[string]any, error) {
		ad, err := bluez.Open(ctx, r.env.Conn, bluez.Options{Adapter: r.env.Adapter})
		if err != nil {
			return nil, err
		}
		r.ad = ad
		return map[string]any{"adapter": string(ad.Path())}, nil
	}); err != nil {
		return err
	}
	return r.step("discover", "lock-seen", func() (map[string]any, error) {
		info, err := r.waitLock(ctx)
		if err != nil {
			return nil, err
		}
		r.dev = info.Path
		return map[string]any{"address": info.Address, "lock_id": fmt.Sprintf("%x", info.LockID[:]),
			"flags": info.Flags, "battery": info.Battery}, nil
	})
}

// waitLock waits until the adapter lists the lock under test, parsed.
func (r *Run) waitLock(ctx context.Context) (bluez.LockInfo, error) {
	want := r.env.Lock.ID()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		for _, li := range r.ad.Locks() {
			if li.Err == nil && li.LockID == want {
				return li, nil
			}
		}
		select {
		case <-ctx.Done():
			return bluez.LockInfo{}, fmt.Errorf("lock %x not discovered: %w (locks %v)", want, ctx.Err(), r.ad.Locks())
		case <-t.C:
		}
	}
}

func scenarioHandshake(ctx context.Context, r *Run) error {
	s, err := r.connect(ctx, "handshake")
	if err != nil {
		return err
	}
	defer s.close()
	if err := r.statusStep(ctx, "handshake", s); err != nil {
		return err
	}
	if err := r.step("handshake", "unlock", func() (map[string]any, error) {
		signed, err := r.signed(command.OpUnlock, r.op)
		if err != nil {
			return nil, err
		}
		before := r.env.Bolt.Moves()
		res, err := s.client.Signed(ctx, command.OpUnlock, signed)
		if err != nil {
			return nil, err
		}
		if res.Status != command.StatusOK || r.env.Bolt.Moves() != before+1 {
			return nil, fmt.Errorf("unlock: status %v, bolt moved %d times", res.Status, r.env.Bolt.Moves()-before)
		}
		return s.link.facts(map[string]any{"bolt": res.LockState.String()}), nil
	}); err != nil {
		return err
	}
	return r.step("handshake", "properties", func() (map[string]any, error) {
		f, err := r.properties(ctx)
		if err != nil {
			return nil, err
		}
		return f, r.valueFacts(ctx, f)
	})
}

func scenarioBadSignature(ctx context.Context, r *Run) error {
	s, err := r.connect(ctx, "badsig")
	if err != nil {
		return err
	}
	defer s.close()
	refused := func(req command.Request) (map[string]any, string, error) {
		before := r.env.Bolt.Moves()
		res, err := s.client.Do(ctx, req)
		if err != nil {
			return nil, "", err
		}
		facts := map[string]any{"bolt_moves": r.env.Bolt.Moves() - before}
		if r.env.Bolt.Moves() != before {
			return facts, "moved", nil
		}
		return facts, res.Status.String(), nil
	}
	want := command.StatusSignerRejected.String()
	if err := r.expect("badsig", "unsigned-unlock", wantUnsigned, func() (map[string]any, string, error) {
		return refused(command.Request{Op: command.OpUnlock})
	}); err != nil {
		return err
	}
	return r.expect("badsig", "forged-unlock", want, func() (map[string]any, string, error) {
		// Signed by an operator of another fleet: a key the lock's roots
		// never certified.
		other := channeltest.NewFleet(fatalTB{}, "mallory")
		signed, err := r.signed(command.OpUnlock, other.Operator(fatalTB{}, "otto", cred.RoleOperator))
		if err != nil {
			return nil, "", err
		}
		return refused(command.Request{Op: command.OpUnlock, Signed: signed})
	})
}

// wantUnsigned is the status an unsigned unlock gets from a gateway's
// session.
var wantUnsigned = command.StatusForbidden.String()

// ensureConnected connects the device again if a failed pairing dropped
// the link. After a failed pairing real BlueZ drops the link and the
// device turns temporary while bluetoothd resumes discovery, so one
// Connect can fail or stall for several seconds: it is tried again, each
// attempt bounded, until the bond window closes (r.windowEnd) or ctx ends.
func (r *Run) ensureConnected(ctx context.Context) error {
	obj := r.env.Conn.Object(bluez.BusName, r.dev)
	deadline := r.windowEnd
	if deadline.IsZero() {
		deadline = time.Now().Add(30 * time.Second)
	}
	var err error
	for attempt := 1; ; attempt++ {
		err = func() error {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			var v dbus.Variant
			if err := obj.CallWithContext(cctx, "org.freedesktop.DBus.Properties.Get", 0, bluez.IfaceDevice, "Connected").Store(&v); err != nil {
				return bluez.MapError(err)
			}
			if c, _ := v.Value().(bool); c {
				return nil
			}
			if err := obj.CallWithContext(cctx, bluez.IfaceDevice+".Connect", 0).Err; err != nil {
				return fmt.Errorf("reconnecting (attempt %d): %w", attempt, bluez.MapError(err))
			}
			return nil
		}()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (r *Run) allowBond(ctx context.Context, scenario string, s *session) (uint32, error) {
	var pk uint32
	err := r.step(scenario, "allow-bond", func() (map[string]any, error) {
		res, err := s.client.AllowBond(ctx, 30*time.Second)
		if err != nil {
			return nil, err
		}
		if res.Status != command.StatusOK {
			return nil, fmt.Errorf("allow-bond: status %v", res.Status)
		}
		w, err := res.BondWindow()
		if err != nil {
			return nil, err
		}
		pk = w.Passkey
		r.windowEnd = time.Now().Add(time.Duration(w.WindowSeconds) * time.Second)
		return map[string]any{"window_s": w.WindowSeconds, "peer": w.Peer}, nil
	})
	return pk, err
}

func scenarioWrongPasskey(ctx context.Context, r *Run) error {
	s, err := r.connect(ctx, "wrongpasskey")
	if err != nil {
		return err
	}
	defer s.close()
	pk, err := r.allowBond(ctx, "wrongpasskey", s)
	if err != nil {
		return err
	}
	for i := 1; i <= lock.MaxPairingFailures; i++ {
		if err := r.expect("wrongpasskey", fmt.Sprintf("pair-wrong-%d", i), "ErrAuthentication", func() (map[string]any, string, error) {
			if err := r.ensureConnected(ctx); err != nil {
				return nil, "", err
			}
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			err := bluez.Pair(pctx, r.env.Conn, r.agent, r.dev, (pk+uint32(i))%1000000)
			if err == nil {
				return nil, "paired", nil
			}
			// What BlueZ answered, and whether it dropped the link.
			return map[string]any{"error_name": ErrorName(err), "link_dropped": r.linkDropped(ctx)}, "", err
		}); err != nil {
			return err
		}
	}
	return r.expect("wrongpasskey", "pair-right-after-window-closed", "ErrAuthentication", func() (map[string]any, string, error) {
		if err := r.ensureConnected(ctx); err != nil {
			return nil, "", err
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := bluez.Pair(pctx, r.env.Conn, r.agent, r.dev, pk)
		facts := map[string]any{"lock_bonded": r.env.Lock.Bonded(GatewayAddress), "error_name": ErrorName(err)}
		if err == nil {
			return facts, "paired", nil
		}
		return facts, "", err
	})
}

func scenarioBond(ctx context.Context, r *Run) error {
	s, err := r.connect(ctx, "bond")
	if err != nil {
		return err
	}
	pk, err := r.allowBond(ctx, "bond", s)
	if err != nil {
		s.close()
		return err
	}
	var agentBefore uint64
	err = r.step("bond", "pair", func() (map[string]any, error) {
		if err := r.ensureConnected(ctx); err != nil {
			return nil, err
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		rec := r.record()
		defer rec.stop()
		if err := bluez.Pair(pctx, r.env.Conn, r.agent, r.dev, pk); err != nil {
			return nil, err
		}
		facts, err := r.deviceFacts(ctx, "Paired", "Bonded", "Trusted", "LegacyPairing")
		if err != nil {
			return nil, err
		}
		rec.stop()
		rec.facts(facts)
		// The lock records the bond when bluetoothd reports it paired.
		for deadline := time.Now().Add(5 * time.Second); !r.env.Lock.Bonded(GatewayAddress) && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		facts["lock_bonded"] = r.env.Lock.Bonded(GatewayAddress)
		if facts["Paired"] != true || facts["Bonded"] != true || facts["lock_bonded"] != true {
			return facts, fmt.Errorf("not bonded: %v", facts)
		}
		if r.env.LockAgentCalls != nil {
			agentBefore = r.env.LockAgentCalls()
			facts["lock_agent_calls"] = agentBefore
		}
		return facts, nil
	})
	if err != nil {
		s.close()
		return err
	}
	if err := r.statusStep(ctx, "bond", s); err != nil {
		s.close()
		return err
	}
	if err := r.step("bond", "disconnect", func() (map[string]any, error) {
		if err := s.dev.Close(); err != nil {
			return nil, err
		}
		// Reconnecting at once, while bluetoothd still tears the old ATT
		// channels down, crashed Debian's 6.1 kernel in hci_chan_del
		// (docs/real-bluez.md); wait until the device is disconnected.
		return nil, r.waitDisconnected(ctx)
	}); err != nil {
		return err
	}
	s2, err := r.connect(ctx, "bond")
	if err != nil {
		return err
	}
	defer s2.close()
	if err := r.statusStep(ctx, "bond", s2); err != nil {
		return err
	}
	return r.step("bond", "no-agent-on-reconnect", func() (map[string]any, error) {
		facts, err := r.deviceFacts(ctx, "Paired", "Bonded")
		if err != nil {
			return nil, err
		}
		if r.env.LockAgentCalls != nil {
			n := r.env.LockAgentCalls()
			facts["lock_agent_calls"] = n
			if n != agentBefore {
				return facts, fmt.Errorf("the lock's agent was called %d times on reconnect", n-agentBefore)
			}
		}
		if facts["Paired"] != true {
			return facts, errors.New("bond lost on reconnect")
		}
		return facts, r.valueFacts(ctx, facts)
	})
}

func scenarioRestart(ctx context.Context, r *Run) error {
	// The previous scenario's link must be down first: killing
	// bluetoothd under a link being torn down feeds the 6.1 kernel's
	// hci_chan_del bug (docs/real-bluez.md).
	if err := r.waitDisconnected(ctx); err != nil {
		return err
	}
	before := r.ad.Restarts()
	if err := r.step("restart", "restart-bluetoothd", func() (map[string]any, error) {
		if err := r.env.Restart(ctx); err != nil {
			return nil, err
		}
		// Loaded from storage? Not after a failed pairing made the
		// device temporary again.
		stored, err := r.storedDevice(ctx)
		return map[string]any{"stored_device": stored}, err
	}); err != nil {
		return err
	}
	if err := r.step("restart", "client-recovered", func() (map[string]any, error) {
		for r.ad.Restarts() == before {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("the client did not notice the restart: %w", ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
		info, err := r.waitLock(ctx)
		if err != nil {
			return nil, err
		}
		r.dev = info.Path
		return map[string]any{"restarts": r.ad.Restarts() - before}, nil
	}); err != nil {
		return err
	}
	s, err := r.connect(ctx, "restart")
	if err != nil {
		return err
	}
	defer s.close()
	return r.statusStep(ctx, "restart", s)
}

// waitDisconnected waits until the lock's device reports Connected
// false, then a little more.
func (r *Run) waitDisconnected(ctx context.Context) error {
	for {
		f, err := r.deviceFacts(ctx, "Connected")
		if err != nil {
			return err
		}
		if f["Connected"] == false {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still connected: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(500 * time.Millisecond):
		return nil
	}
}

// deviceFacts reads Device1 properties of the lock's device.
func (r *Run) deviceFacts(ctx context.Context, names ...string) (map[string]any, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var props map[string]dbus.Variant
	if err := r.env.Conn.Object(bluez.BusName, r.dev).CallWithContext(cctx, "org.freedesktop.DBus.Properties.GetAll", 0,
		bluez.IfaceDevice).Store(&props); err != nil {
		return nil, bluez.MapError(err)
	}
	f := map[string]any{}
	for _, n := range names {
		if v, ok := props[n]; ok {
			f[n] = v.Value()
		}
	}
	return f, nil
}

// Interfaces whose property names and types the differential test
// compares.
var Interfaces = []string{bluez.IfaceAdapter, bluez.IfaceDevice, bluez.IfaceGattService,
	bluez.IfaceGattCharacteristic, "org.bluez.GattDescriptor1"}

// properties records, for the objects the client uses (the adapter, the
// lock's device, and the lock service with its characteristics and
// descriptors), each interface's property names and D-Bus signatures:
// facts "Iface" -> "Name:sig,Name:sig" (sorted, merged over objects).
func (r *Run) properties(ctx context.Context) (map[string]any, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	if err := r.env.Conn.Object(bluez.BusName, "/").CallWithContext(cctx, "org.freedesktop.DBus.ObjectManager.GetManagedObjects", 0).Store(&objs); err != nil {
		return nil, bluez.MapError(err)
	}
	var svc dbus.ObjectPath
	for p, ifs := range objs {
		if s, ok := ifs[bluez.IfaceGattService]; ok && strings.HasPrefix(string(p), string(r.dev)+"/") {
			if u, _ := s["UUID"].Value().(string); strings.EqualFold(u, bluez.LockServiceUUID) {
				svc = p
			}
		}
	}
	if svc == "" {
		return nil, errors.New("lock service not in the object tree")
	}
	sigs := map[string]map[string]string{}
	for p, ifs := range objs {
		if p != r.ad.Path() && p != r.dev && p != svc && !strings.HasPrefix(string(p), string(svc)+"/") {
			continue
		}
		for iface, props := range ifs {
			if !slices.Contains(Interfaces, iface) {
				continue
			}
			if sigs[iface] == nil {
				sigs[iface] = map[string]string{}
			}
			for n, val := range props {
				sigs[iface][n] = val.Signature().String()
			}
		}
	}
	facts := map[string]any{}
	for iface, m := range sigs {
		var parts []string
		for n, s := range m {
			parts = append(parts, n+":"+s)
		}
		sort.Strings(parts)
		facts[iface] = strings.Join(parts, ",")
	}
	return facts, nil
}
