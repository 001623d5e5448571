package daemon

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/deploy/mosquitto"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// e2eCommands is how many unlocks each iteration of BenchmarkEndToEnd
// times (and as many floors, interleaved).
const e2eCommands = 300

// BenchmarkEndToEnd (issue 14) times the whole path of a signed unlock
// through the real processes: the operator's client publishes it (QoS 1)
// to mosquitto (run with the shipped limits, set_tcp_nodelay true
// included), gatewayd (Run in this process, log level info) verifies,
// journals and queues it, connects through a private dbus-daemon to the
// BlueZ emulator (zero link latency) and its reference lock, runs EDHOC,
// carries the command and publishes the result, which the operator's
// client receives. One sample: publish called → result received.
//
// Each sample is interleaved (order alternating) with one sample of its
// floor, the work no implementation can avoid, on the same broker, bus,
// emulator and file system:
//   - one MQTT echo: publish QoS 1 from the operator's client and receive
//     it on the same client's subscription;
//   - the D-Bus round trips of a one-command session, as bare
//     Properties.Get calls to the emulated bluetoothd: Connect,
//     Get(ServicesResolved), Get(MTU), StartNotify, StopNotify and
//     Disconnect, one WriteValue per fragment written (message_1,
//     message_3, the command frame) and half a round trip per fragment
//     notified (message_2, message_4, the result frame), the way bluez's BenchmarkLinkCycleInterleaved
//     counts a cycle; e2eRoundTrips counts them on the bus during 10
//     unlocks (about 15 here: 12 calls, 6 of them writes, and the values
//     notified);
//   - one fdatasync of a 4 KiB write in the database's directory;
//   - the public-key work: the operator's signature and credential
//     verified at intake (2 Ed25519 verifications), EDHOC (2 X25519 key
//     pairs and shared secrets, 2 credential verifications, Signature_2
//     and Signature_3 each signed and verified), the lock's check of the
//     command (2 verifications) and its signature on the result (1 sign).
//
// It reports p50 and p99 of both, in ms, and their ratios (p50/floor,
// p99/floor: the goals are 1.3 and 1.8), which scripts/bench.sh takes
// the median of over several runs. Run it with
//
//	go test -run '^$' -bench BenchmarkEndToEnd -benchtime 1x ./internal/daemon
//
// One iteration is 300 commands and 300 floors (some 6 to 10 s here).
//
// Measured when it was added (2 shared cores, other work running), 14
// runs: p50 11 to 20 ms against a floor of 5.2 to 8.7 ms, p50/floor 1.6
// to 2.9 (scripts/bench.sh with COUNT=3: median 1.61, goal missed);
// p99/floor 1.55 to 4.1 (bench.sh's median 1.61, at the goal on a quiet
// minute, far over it on a busy one). Where the rest goes: the
// process is waiting, not computing (CPU about a third of wall time);
// gatewayd makes 10 fdatasyncs per command (strace -c), 2 per bbolt
// commit of 5 journal writes: intake's append, queued, running,
// succeeded and the outbox's acknowledgement, the first four before the
// result is published, against the floor's one; the command and its
// result cross the broker twice against the echo's once. In the daemon's
// debug log, journaled → connected takes 5 to 6 ms (two commits and the
// connection), connected → finished 6 to 7 ms (EDHOC and the command),
// finished → published 1 to 4 ms (a commit and the publication).
//
// After issue 14's "fewer commits" (two commits before the result: the
// append and the outcome; docs/database.md, "Durability") and "verify
// once" (no second verification in the bookkeeping), on the same machine
// under heavy load from other work (load average 11 to 21 on 2 cores),
// binaries of both alternating: p50/floor 1.80 to 2.09 (median of 6
// runs 1.87) against 1.61 to 3.00 before (median 2.52); e2e p50 15.3 to
// 17.7 ms against 14.2 to 23.7; p99/floor noise either way (1.08 to 2.79;
// the floor's own p99 swung from 18 to 114 ms). scripts/bench.sh with
// ONLY=EndToEnd COUNT=3: p50/floor 1.92, p99/floor 1.56 (the commit
// before: 2.65 and 3.06 a few minutes later). In the debug log, publish →
// journaled 1.5 to 4 ms (MQTT, verification, the append's fsync), once
// 12 ms (the previous command's outbox acknowledgement commit and session
// close run then too, on a loaded machine), journaled → connected 1.3 to
// 3.3 ms, connected → finished 4 to 11 ms (EDHOC and the command), result
// received about 1 ms after. CPU is still a third of wall time. What is
// left over the floor: the append's fsync (the floor has one fsync, the
// command two), the previous result's acknowledgement commit, which can
// sit in front of the next append, and the second crossing of the broker.
// Then: connect and run EDHOC while the append commits (the intake hands
// the command to the scheduler as its batch's append begins, and the
// command is sent only once durable: in the debug log "connected" now
// comes before "command journaled"), and results' removals from the
// outbox written a second after their PUBACK, one write for that second
// (OutboxOptions.AckDelay), out of the next command's way. Measured by
// alternating test binaries of the commit before (base), with only the
// lazy removals (b) and with both (c), one iteration each, in rounds, on
// the same machine (load average 16 falling to 5 on 2 cores): in 14
// rounds base against c, p50/floor median 1.90 (1.38 to 2.15) against
// 1.74 (1.31 to 2.02), p99/floor 1.96 against 1.76; per round c/base
// median 0.90 for p50/floor (c lower in 12 of 14), 0.86 for p99/floor (11
// of 14), 0.89 for e2e p50 (12 of 14). The lazy removals alone: per round
// b/base median 0.94 (10 rounds, lower in 7). scripts/bench.sh with
// ONLY=EndToEnd COUNT=3, trees alternating as the load fell: c 1.60 and
// 2.08 (p50/floor, p99/floor), base 1.61 and 2.16, c 1.38 and 1.73, base
// 1.58 and 1.67, c 1.37 and 1.54. The noise between runs (a floor p50 of
// 5.6 to 9.3 ms) is as large as the gain, hence the pairing; the goal
// (1.3, 1.8) is met for p99 on a quiet minute and missed for p50. What is
// left over the floor (whose D-Bus round trips are most of it: dbus-ms 6
// to 8 of a 7 to 9 ms floor p50): a bbolt commit
// is two fdatasyncs (the floor counts one) and the outcome's commit must
// precede the result's publication; the result's second crossing of the
// broker; gatewayd's CPU (D-Bus messages and signals, Ed25519).
func BenchmarkEndToEnd(b *testing.B) {
	limits := mosquitto.Limits()
	if !slices.Contains(limits, "set_tcp_nodelay true") {
		b.Fatalf("the shipped mosquitto.conf lost set_tcp_nodelay true: %q", limits)
	}
	d := newDockBroker(b, 1, emulator.Options{}, mosquittotest.Options{Extra: limits})
	level := new(slog.LevelVar)
	level.Set(slog.LevelInfo)
	d.run(func(o *Options) { o.LogLevel = level })
	oc := d.client
	oc.until("status online and the lock heard", func() bool {
		return len(oc.status) > 0 && strings.Contains(oc.status[len(oc.status)-1], `"online"`) &&
			len(oc.locks) > 0 && len(oc.locks[len(oc.locks)-1].Locks) == 1
	})
	fl := newE2EFloor(b, d)

	// Warm up: the first connection resolves the lock's services and
	// bonds; those are not the steady state.
	for range 5 {
		d.e2eUnlock(b)
	}

	var e2e, floor []time.Duration
	for b.Loop() {
		for i := range e2eCommands {
			if i%2 == 0 {
				e2e = append(e2e, d.e2eUnlock(b))
				floor = append(floor, fl.run())
			} else {
				floor = append(floor, fl.run())
				e2e = append(e2e, d.e2eUnlock(b))
			}
		}
	}
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	e50, e99 := percentile(e2e, 50), percentile(e2e, 99)
	f50, f99 := percentile(floor, 50), percentile(floor, 99)
	b.ReportMetric(ms(e50), "e2e-p50-ms")
	b.ReportMetric(ms(e99), "e2e-p99-ms")
	b.ReportMetric(ms(f50), "floor-p50-ms")
	b.ReportMetric(ms(f99), "floor-p99-ms")
	b.ReportMetric(float64(e50)/float64(f50), "p50/floor")
	b.ReportMetric(float64(e99)/float64(f99), "p99/floor")
	b.ReportMetric(fl.rt, "roundtrips")
	b.ReportMetric(ms(fl.part[0]/time.Duration(len(floor))), "echo-ms")
	b.ReportMetric(ms(fl.part[1]/time.Duration(len(floor))), "dbus-ms")
	b.ReportMetric(ms(fl.part[2]/time.Duration(len(floor))), "fsync-ms")
	b.ReportMetric(ms(fl.part[3]/time.Duration(len(floor))), "crypto-ms")
}

// e2eUnlock publishes a signed unlock for the dock's lock 0 and returns
// the time until its result arrived; it fails unless the unlock succeeded.
func (d *dock) e2eUnlock(b *testing.B) time.Duration {
	body, s := d.sign(0, command.OpUnlock, command.Args{})
	oc := d.client
	t0 := time.Now()
	oc.publish(s)
	oc.until("the unlock's result", func() bool { return len(oc.resultsFor(body.CommandID)) > 0 })
	el := time.Since(t0)
	oc.mu.Lock()
	r := oc.resultsFor(body.CommandID)[0]
	oc.results = oc.results[:0] // keep resultsFor's scan short
	oc.mu.Unlock()
	if r.State != bonds.StateSucceeded {
		b.Fatalf("unlock result %+v", r)
	}
	return el
}

// percentile is the p-th percentile (nearest rank) of xs.
func percentile(xs []time.Duration, p float64) time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// e2eFloor is BenchmarkEndToEnd's floor: see there.
type e2eFloor struct {
	b     *testing.B
	echo  chan struct{}
	pub   mqtt.Client
	obj   dbus.BusObject
	rt    float64 // D-Bus round trips per command
	sync  *os.File
	page  []byte
	pub1  ed25519.PublicKey
	key1  ed25519.PrivateKey
	msg   []byte
	sig   []byte
	n     int
	part  [4]time.Duration // echo, D-Bus, fdatasync, cryptography
	topic string
}

func newE2EFloor(b *testing.B, d *dock) *e2eFloor {
	f := &e2eFloor{b: b, echo: make(chan struct{}, 1), pub: d.client.c, topic: "bench/echo", rt: e2eRoundTrips(b, d)}
	if tok := f.pub.Subscribe(f.topic, 1, func(mqtt.Client, mqtt.Message) { f.echo <- struct{}{} }); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		b.Fatalf("subscribe: %v", tok.Error())
	}
	conn, err := dbus.Connect(d.bus.Addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	f.obj = conn.Object("org.bluez", d.emu.AdapterPath())
	if f.sync, err = os.Create(filepath.Join(d.dir, "state", "fsync-floor")); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = f.sync.Close() })
	f.page = make([]byte, 4096)
	if f.pub1, f.key1, err = ed25519.GenerateKey(rand.Reader); err != nil {
		b.Fatal(err)
	}
	f.msg = make([]byte, 256)
	f.sig = ed25519.Sign(f.key1, f.msg)
	return f
}

// e2eRoundTrips counts the D-Bus round trips of a one-command session:
// it watches the bus (a monitor connection) while the dock runs
// e2eCounted unlocks, and counts each method call to bluetoothd as one
// and each characteristic value notified as half. It returns when every
// counted session has disconnected.
func e2eRoundTrips(b *testing.B, d *dock) float64 {
	const e2eCounted = 10
	mon, err := dbus.Connect(d.bus.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = mon.Close() }()
	if err := mon.BusObject().Call("org.freedesktop.DBus.Monitoring.BecomeMonitor", 0, []string{}, uint32(0)).Err; err != nil {
		b.Fatalf("BecomeMonitor: %v", err)
	}
	msgs := make(chan *dbus.Message, 1024)
	mon.Eavesdrop(msgs)
	var calls, notified, disconnects int
	count := func(m *dbus.Message) {
		switch m.Type {
		case dbus.TypeMethodCall:
			if dst, _ := m.Headers[dbus.FieldDestination].Value().(string); dst == "org.bluez" {
				calls++
				if mb, _ := m.Headers[dbus.FieldMember].Value().(string); mb == "Disconnect" {
					disconnects++
				}
			}
		case dbus.TypeSignal:
			if len(m.Body) < 2 {
				return
			}
			iface, _ := m.Body[0].(string)
			changed, _ := m.Body[1].(map[string]dbus.Variant)
			if _, ok := changed["Value"]; ok && iface == "org.bluez.GattCharacteristic1" {
				notified++
			}
		}
	}
	stop := make(chan struct{})
	counted := make(chan struct{})
	go func() {
		defer close(counted)
		for {
			select {
			case m := <-msgs:
				count(m)
			case <-stop:
				for deadline := time.After(30 * time.Second); disconnects < e2eCounted; {
					select {
					case m := <-msgs:
						count(m)
					case <-deadline:
						return
					}
				}
				return
			}
		}
	}()
	for range e2eCounted {
		d.e2eUnlock(b)
	}
	close(stop)
	<-counted
	if disconnects != e2eCounted {
		b.Fatalf("%d sessions disconnected of %d", disconnects, e2eCounted)
	}
	return (float64(calls) + float64(notified)/2) / e2eCounted
}

// run does one floor and returns its time.
func (f *e2eFloor) run() time.Duration {
	var el [4]time.Duration
	// One MQTT echo.
	t0 := time.Now()
	if tok := f.pub.Publish(f.topic, 1, false, []byte("echo")); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		f.b.Fatalf("echo publish: %v", tok.Error())
	}
	select {
	case <-f.echo:
	case <-time.After(30 * time.Second):
		f.b.Fatal("echo not received within 30 s")
	}
	el[0] = time.Since(t0)

	// The session's D-Bus round trips, fractions spread over the floors.
	t0 = time.Now()
	n := int(math.Round(float64(f.n+1)*f.rt) - math.Round(float64(f.n)*f.rt))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	for range n {
		var v dbus.Variant
		if err := f.obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, "org.bluez.Adapter1", "Powered").Store(&v); err != nil {
			f.b.Fatal(err)
		}
	}
	cancel()
	el[1] = time.Since(t0)

	// One fdatasync on the database's file system.
	t0 = time.Now()
	f.page[0] = byte(f.n)
	if _, err := f.sync.WriteAt(f.page, 0); err != nil {
		f.b.Fatal(err)
	}
	if err := syscall.Fdatasync(int(f.sync.Fd())); err != nil {
		f.b.Fatal(err)
	}
	el[2] = time.Since(t0)

	// The public-key work.
	t0 = time.Now()
	verify := func(k int) {
		for range k {
			if !ed25519.Verify(f.pub1, f.msg, f.sig) {
				f.b.Fatal("verify")
			}
		}
	}
	verify(2) // intake: the operator's credential and signature
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		f.b.Fatal(err)
	}
	y, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		f.b.Fatal(err)
	}
	if _, err := x.ECDH(y.PublicKey()); err != nil {
		f.b.Fatal(err)
	}
	if _, err := y.ECDH(x.PublicKey()); err != nil {
		f.b.Fatal(err)
	}
	verify(2)     // EDHOC: each credential
	for range 2 { // EDHOC: Signature_2 and Signature_3
		f.msg[0]++
		if !ed25519.Verify(f.pub1, f.msg, ed25519.Sign(f.key1, f.msg)) {
			f.b.Fatal("signature")
		}
	}
	f.msg[0] = 0
	verify(2)                       // the lock: the operator's credential and signature
	_ = ed25519.Sign(f.key1, f.msg) // the lock signs the result
	el[3] = time.Since(t0)

	f.n++
	var sum time.Duration
	for i, e := range el {
		f.part[i] += e
		sum += e
	}
	return sum
}
