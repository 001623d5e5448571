package daemon

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
	"github.com/gatewayd/gatewayd/firmware/lock/flash"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/fleet/operator"
	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// dock is a whole dock with real parts: mosquitto, a private dbus-daemon
// with the BlueZ emulator hosting reference locks, gatewayd's key files
// and configuration, and an operator's MQTT client.
type dock struct {
	t      testing.TB
	dir    string
	broker *mosquittotest.Broker
	bus    *emulator.Bus
	emu    *emulator.Emulator
	fleet  *channeltest.Fleet
	op     channeltest.Party
	locks  []*refLock
	cfg    *config.Config
	topics operator.Topics
	start  time.Time
	client *opClient

	mu  sync.Mutex
	ctr uint64

	withAudit bool // the locks keep audit logs (withAudit)
}

type refLock struct {
	id    bonds.LockID
	addr  string
	act   *locktest.Actuator
	lock  *lock.Lock
	audit *audit.Log // with withAudit
}

// withAudit is an option of newDock: its locks keep audit logs
// (firmware/lock/audit, in memory).
func withAudit(d *dock) { d.withAudit = true }

// now is the dock's clock: the test fleet's, moving in real time.
func (d *dock) now() time.Time { return d.fleet.Now.Add(time.Since(d.start)) }

func newDock(t testing.TB, nLocks int, emuOpts emulator.Options, opts ...func(*dock)) *dock {
	t.Helper()
	return newDockBroker(t, nLocks, emuOpts, mosquittotest.Options{}, opts...)
}

// newDockBroker is newDock with a broker run with brokerOpts.
func newDockBroker(t testing.TB, nLocks int, emuOpts emulator.Options, brokerOpts mosquittotest.Options, opts ...func(*dock)) *dock {
	t.Helper()
	d := &dock{t: t, dir: t.TempDir(), fleet: channeltest.NewFleet(t, "acme"), start: time.Now()}
	for _, o := range opts {
		o(d)
	}
	d.broker = mosquittotest.Start(t, brokerOpts)
	ctx := t.Context()
	var err error
	if d.bus, err = emulator.StartBus(ctx, d.dir); err != nil {
		t.Fatalf("%v (the BlueZ emulator needs dbus-daemon: run scripts/deps.sh)", err)
	}
	t.Cleanup(func() { d.bus.Close() })
	emuOpts.Addr, emuOpts.Seed = d.bus.Addr, 3
	if emuOpts.RadioInterval == 0 {
		emuOpts.RadioInterval = 50 * time.Millisecond
	}
	if d.emu, err = emulator.Start(ctx, emuOpts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.emu.Close() })
	d.op = d.fleet.Operator(t, "otto", cred.RoleAdmin)
	for i := range nLocks {
		lp := d.fleet.Lock(t, uint64(0x4c4b000000000001+i))
		act := &locktest.Actuator{}
		lo := lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: d.fleet.Roots, Store: locktest.NewStore(),
			Actuator: act, RTC: d.now}
		var alog *audit.Log
		if d.withAudit {
			if alog, err = audit.Open(flash.NewMem(), audit.Options{LockID: lp.Cert.KID, Now: d.now}); err != nil {
				t.Fatal(err)
			}
			lo.Audit = lock.AuditLog(alog)
		}
		l, err := lock.New(lo)
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("C0:00:00:00:00:%02X", i+1)
		if err := d.emu.AddLock(l, addr, emulator.LockOptions{}); err != nil {
			t.Fatal(err)
		}
		d.locks = append(d.locks, &refLock{id: bonds.LockID(l.ID()), addr: addr, act: act, lock: l, audit: alog})
	}

	// Key files, as an installer writes them.
	gw := d.fleet.Gateway(t, "dock-1")
	p := func(n string) string { return filepath.Join(d.dir, n) }
	must(t, config.WritePublicKey(p("fleet-root.pem"), d.fleet.Root.Public().(ed25519.PublicKey)))
	must(t, config.WritePrivateKey(p("gateway.key"), gw.Key))
	must(t, config.WriteFile(p("gateway.cwt"), gw.Cert.Raw, 0o644))
	// The state directory as systemd's StateDirectory= makes it: empty,
	// so the first start creates the database.
	must(t, os.Mkdir(p("state"), 0o700))
	toml := fmt.Sprintf(`gateway_id = "dock-1"
[keys]
credential = %q
private_key = %q
fleet_roots = [%q]
[database]
path = %q
[mqtt]
brokers = [%q]
keepalive = "5s"
[bluetooth]
away_after = "5s"
[metrics]
listen = "127.0.0.1:0"
[admin]
socket = %q
[log]
level = "debug"
`, p("gateway.cwt"), p("gateway.key"), p("fleet-root.pem"), p("state/gatewayd.db"), d.broker.URL(), p("run/admin.sock"))
	must(t, os.WriteFile(p("gatewayd.toml"), []byte(toml), 0o644))
	if d.cfg, err = config.Load(p("gatewayd.toml")); err != nil {
		t.Fatal(err)
	}
	if d.topics, err = operator.NewTopics(d.cfg.MQTT.TopicPrefix, d.cfg.GatewayID); err != nil {
		t.Fatal(err)
	}
	d.client = newOpClient(t, d.broker.URL(), d.topics)
	return d
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// diskFull is bonds.Open on a disk that is full while full is set: every
// commit fails with ENOSPC, counted in failed (if not nil).
func diskFull(full *atomic.Bool, failed *atomic.Int64) func(string, bonds.Options) (*bonds.DB, error) {
	return func(path string, o bonds.Options) (*bonds.DB, error) {
		o.FailCommit = func() error {
			if full.Load() {
				if failed != nil {
					failed.Add(1)
				}
				return syscall.ENOSPC
			}
			return nil
		}
		return bonds.Open(path, o)
	}
}

// running is a daemon run in this process.
type running struct {
	conn    *dbus.Conn // the daemon's system bus connection
	cancel  context.CancelFunc
	done    chan error
	metrics string
	logs    *logBuf // the daemon's log
}

// run starts the daemon and waits until it is ready; mods change its
// options (with LogLevel set, the log honours it).
func (d *dock) run(mods ...func(*Options)) *running {
	d.t.Helper()
	ready := make(chan string, 1)
	onReady := func(o *Options) { o.OnReady = func(addr string) { ready <- addr } }
	r := d.launch(append([]func(*Options){onReady}, mods...)...)
	select {
	case r.metrics = <-ready:
	case err := <-r.done:
		r.cancel()
		r.cancel = nil
		d.t.Fatalf("daemon stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		r.cancel()
		r.cancel = nil
		d.t.Fatal("daemon not ready within 60 s")
	}
	return r
}

// launch starts the daemon without waiting until it is ready; mods change
// its options (with LogLevel set, the log honours it). The test's cleanup
// stops it (running.stop).
func (d *dock) launch(mods ...func(*Options)) *running {
	d.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := dbus.Connect(d.bus.Addr)
	if err != nil {
		cancel()
		d.t.Fatal(err)
	}
	logger, logs := testLogBuf(d.t)
	r := &running{cancel: cancel, done: make(chan error, 1), conn: conn, logs: logs}
	o := Options{Config: d.cfg, Bus: conn, Now: d.now, Logger: logger}
	for _, m := range mods {
		m(&o)
	}
	if o.LogLevel != nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: o.LogLevel}))
	}
	go func() {
		defer conn.Close()
		r.done <- Run(ctx, o)
	}()
	d.t.Cleanup(func() { r.stop(d.t) })
	return r
}

// stop cancels the daemon and checks it stopped cleanly.
func (r *running) stop(t testing.TB) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("daemon stopped with %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Error("daemon did not stop within 60 s")
	}
}

// sign makes an operator-signed command for lock i.
func (d *dock) sign(i int, op command.Op, args command.Args) (command.Body, []byte) {
	d.t.Helper()
	d.mu.Lock()
	d.ctr++
	ctr := d.ctr
	d.mu.Unlock()
	b := command.Body{LockID: d.locks[i].id, Op: op, Args: args, NotAfter: d.now().Add(time.Hour).Truncate(time.Second), Counter: ctr}
	b.CommandID = [16]byte{0xd0, byte(ctr >> 8), byte(ctr), byte(i)}
	s, err := command.Sign(d.op.Key, d.op.Cert.Raw, b)
	if err != nil {
		d.t.Fatal(err)
	}
	return b, s
}

// opClient is an operator's MQTT client: it publishes commands and
// collects results, rejection notices and status messages.
type opClient struct {
	t      testing.TB
	c      mqtt.Client
	topics operator.Topics

	mu       sync.Mutex
	results  []operator.ResultMessage
	rejected []operator.Rejected
	status   []string
	locks    []operator.LocksMessage
	events   []operator.AuditMessage
	changed  chan struct{}
}

func newOpClient(t testing.TB, url string, topics operator.Topics) *opClient {
	t.Helper()
	oc := &opClient{t: t, topics: topics, changed: make(chan struct{}, 1)}
	// A persistent session, as docs/mqtt.md asks of a backend: results
	// published while it reconnects (after a broker restart, say) are
	// queued for it by the broker instead of lost.
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID("operator-" + strings.ReplaceAll(t.Name(), "/", "-")).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
		SetOnConnectHandler(func(c mqtt.Client) {
			c.SubscribeMultiple(map[string]byte{topics.Result: 1, topics.Rejected: 1, topics.Status: 1, topics.Locks: 1, topics.Events: 1}, oc.onMessage)
		})
	oc.c = mqtt.NewClient(o)
	tok := oc.c.Connect()
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("operator client: %v", tok.Error())
	}
	t.Cleanup(func() { oc.c.Disconnect(100) })
	return oc
}

func (oc *opClient) onMessage(_ mqtt.Client, m mqtt.Message) {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	switch m.Topic() {
	case oc.topics.Result:
		var r operator.ResultMessage
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			oc.t.Errorf("result is not JSON: %v: %s", err, m.Payload())
			return
		}
		oc.results = append(oc.results, r)
	case oc.topics.Rejected:
		var r operator.Rejected
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			oc.t.Errorf("notice is not JSON: %v: %s", err, m.Payload())
			return
		}
		oc.rejected = append(oc.rejected, r)
	case oc.topics.Status:
		oc.status = append(oc.status, string(m.Payload()))
	case oc.topics.Locks:
		var l operator.LocksMessage
		if err := json.Unmarshal(m.Payload(), &l); err != nil {
			oc.t.Errorf("locks snapshot is not JSON: %v: %s", err, m.Payload())
			return
		}
		oc.locks = append(oc.locks, l)
	case oc.topics.Events:
		var a operator.AuditMessage
		if err := json.Unmarshal(m.Payload(), &a); err != nil {
			oc.t.Errorf("event is not JSON: %v: %s", err, m.Payload())
			return
		}
		oc.events = append(oc.events, a)
	}
	select {
	case oc.changed <- struct{}{}:
	default:
	}
}

// publish sends a command payload with QoS 1 and waits for the broker's
// PUBACK: from then on, the fleet may hold the gateway to it.
func (oc *opClient) publish(payload []byte) {
	oc.t.Helper()
	tok := oc.c.Publish(oc.topics.Cmd, 1, false, payload)
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		oc.t.Fatalf("publish: %v", tok.Error())
	}
}

// until waits (up to 90 s) for cond, evaluated under the client's lock.
func (oc *opClient) until(what string, cond func() bool) {
	oc.t.Helper()
	deadline := time.After(90 * time.Second)
	for {
		oc.mu.Lock()
		ok := cond()
		oc.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-oc.changed:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			oc.mu.Lock()
			defer oc.mu.Unlock()
			oc.t.Fatalf("waiting for %s: results %+v, rejected %+v, status %q", what, oc.results, oc.rejected, oc.status)
		}
	}
}

// resultsFor returns the results received for command id (call under mu).
func (oc *opClient) resultsFor(id [16]byte) []operator.ResultMessage {
	var out []operator.ResultMessage
	for _, r := range oc.results {
		if r.CommandID == bonds.CommandID(id) {
			out = append(out, r)
		}
	}
	return out
}

// logBuf keeps the daemon's log; a failed test prints its tail.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// testLogBuf is a debug logger into a buffer, whose tail a failed test
// prints.
func testLogBuf(t testing.TB) (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		lb.mu.Lock()
		defer lb.mu.Unlock()
		lines := strings.Split(lb.buf.String(), "\n")
		if len(lines) > 150 {
			lines = lines[len(lines)-150:]
		}
		t.Logf("daemon log (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// testLogger is testLogBuf's logger, for tests that do not read the log.
func testLogger(t testing.TB) *slog.Logger {
	l, _ := testLogBuf(t)
	return l
}
