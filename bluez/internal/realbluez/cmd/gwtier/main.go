// Command gwtier runs the gateway scenarios of the real-BlueZ tier inside
// the qemu guest (docs/real-bluez.md, "The gateway on real BlueZ"): the
// real product on real bluetoothd 5.66. It hosts five reference locks
// (firmware/lock) as bluez/peripheral on hci1..hci5, each on its own bus
// connection, sharing bluetoothd's one default agent (peripheral.Group);
// makes the fleet's keys with gatewayctl (keygen, issue) under the test
// fleet's root, which the locks trust; starts mosquitto and `gatewayd
// run` (central on hci0, its database on the guest's disk,
// bluetooth.default_agent = false) and drives it as an operator does,
// with gatewayctl send, watching every result with gatewayctl watch.
// Scenarios assert on the MQTT results (exactly one per command), the
// metrics, the locks' own state and the database (an online backup,
// exported); the host checks the btmon capture. Each step is one JSON
// line (realbluez.Result) in -results; logs go to stderr and to the files
// in -dir. It exits 1 when a step failed.
//
// It runs the product as processes and never links it: it may import the
// standard library, godbus, package bluez and its sub-packages, firmware/,
// config (the key files) and internal/fleetproc (processes, notify
// socket, scrapes).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/internal/realbluez"
	"github.com/gatewayd/gatewayd/bluez/peripheral"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/internal/fleetproc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, os.Args[1:], os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gwtier:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

type fatal struct{}

func (fatal) Helper() {}
func (fatal) Fatalf(format string, a ...any) {
	panic(fmt.Errorf(format, a...))
}

const (
	brokerURL   = "tcp://127.0.0.1:1883"
	metricsAddr = "127.0.0.1:9470"
)

// hosted is one lock of the tier and its peripheral.
type hosted struct {
	n       int // hci n
	id      string
	adapter string
	lock    *lock.Lock
	bolt    *locktest.Actuator
	conn    *dbus.Conn
	per     *peripheral.Peripheral
}

type tier struct {
	ctx     context.Context
	log     *slog.Logger
	dir     string // keys, configuration
	logs    string // the processes' logs
	db      string // the database
	mode    string
	restart string // restarts bluetoothd
	procs   fleetproc.Group
	daemon  *fleetproc.Proc
	group   peripheral.Group
	locks   []*hosted
	watch   *watcher
	maxConn int // bluetooth.max_connections

	outMu  sync.Mutex
	enc    *json.Encoder
	failed bool
}

func run(ctx context.Context, args []string, stderr io.Writer) (ok bool, err error) {
	fs := flag.NewFlagSet("gwtier", flag.ContinueOnError)
	fs.SetOutput(stderr)
	results := fs.String("results", "gw-results.jsonl", "results file (JSON lines, appended)")
	mode := fs.String("mode", "bluez", "mode label in the results")
	dir := fs.String("dir", "/tmp/gw", "directory for keys, configuration and logs")
	logs := fs.String("logs", "", "directory for the processes' logs (default -dir)")
	db := fs.String("db", "/var/lib/gatewayd/gatewayd.db", "gatewayd's database")
	scenarios := fs.String("scenarios", "", "comma-separated scenarios (default all)")
	restartCmd := fs.String("restart-cmd", "restart-bluetoothd kill", "command that SIGKILLs bluetoothd and starts it again")
	timeout := fs.Duration("timeout", 8*time.Minute, "whole run")
	// One link at a time by default: connection setups to several locks at
	// once on btvirt under TCG timed an ATT MTU exchange out, and
	// bluetoothd closing that ATT socket oopses Debian's 6.1 kernel
	// (hci_chan_del list corruption; docs/real-bluez.md).
	maxConn := fs.Int("max-connections", 1, "gatewayd's bluetooth.max_connections")
	verbose := fs.Bool("v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		return false, err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			e, isErr := r.(error)
			if !isErr {
				panic(r)
			}
			err = fmt.Errorf("fixture: %w", e)
		}
	}()
	out, err := os.OpenFile(*results, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	defer out.Close()
	for _, d := range []string{*dir, filepath.Dir(*db)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return false, err
		}
	}
	if *logs == "" {
		*logs = *dir
	}
	t := &tier{ctx: ctx, log: log, dir: *dir, logs: *logs, db: *db, mode: *mode, restart: *restartCmd, maxConn: *maxConn, enc: json.NewEncoder(out)}
	defer t.procs.StopAll()
	defer t.closeLocks()

	var names []string
	if *scenarios != "" {
		names = strings.Split(*scenarios, ",")
	}
	for _, s := range gwScenarios {
		if len(names) > 0 && !slices.Contains(names, s.name) {
			continue
		}
		start := time.Now()
		err := s.run(t)
		res := realbluez.Result{Scenario: s.name, Step: "done", OK: err == nil, Millis: time.Since(start).Milliseconds()}
		if err != nil {
			res.Kind, res.Error = "error", err.Error()
		}
		t.emit(res)
		if err != nil && s.required {
			break // the later scenarios need what this one sets up
		}
	}
	return !t.failed, nil
}

// gwScenarios run in this order; a required one that fails ends the run.
var gwScenarios = []struct {
	name     string
	required bool
	run      func(*tier) error
}{
	{"gw-setup", true, (*tier).setup},
	{"gw-first-contact", true, (*tier).firstContact},
	{"gw-commands", false, (*tier).commands},
	{"gw-burst", false, (*tier).burst},
	{"gw-bluetoothd-kill", false, (*tier).bluetoothdKill},
	{"gw-gatewayd-kill", false, (*tier).gatewaydKill},
	{"gw-lock-gone", false, (*tier).lockGone},
	{"gw-stop", false, (*tier).stop},
}

func (t *tier) emit(r realbluez.Result) {
	r.Mode = t.mode
	t.outMu.Lock()
	defer t.outMu.Unlock()
	if !r.OK {
		t.failed = true
	}
	_ = t.enc.Encode(r)
	t.log.Info("result", "scenario", r.Scenario, "step", r.Step, "ok", r.OK, "err", r.Error, "facts", r.Facts, "ms", r.Millis)
}

// step runs f as one step of scenario and reports it; its error is
// returned, naming the step.
func (t *tier) step(scenario, name string, f func() (map[string]any, error)) error {
	start := time.Now()
	facts, err := f()
	res := realbluez.Result{Scenario: scenario, Step: name, OK: err == nil, Facts: facts, Millis: time.Since(start).Milliseconds()}
	if err != nil {
		res.Kind, res.Error = "error", err.Error()
	}
	t.emit(res)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (t *tier) path(name string) string { return filepath.Join(t.dir, name) }

// ---- setup ----

func (t *tier) setup() error {
	const sc = "gw-setup"
	if err := t.step(sc, "adapters", func() (map[string]any, error) {
		return nil, waitAdapters(t.ctx, 6)
	}); err != nil {
		return err
	}
	fleet := channeltest.NewFleet(fatal{}, realbluez.FleetName)
	if err := t.step(sc, "locks", func() (map[string]any, error) {
		for n := 1; n <= realbluez.GatewayLocks; n++ {
			if err := t.startLock(fleet, n); err != nil {
				return nil, err
			}
		}
		return map[string]any{"locks": len(t.locks), "advertiser": t.locks[0].per.Stats().Advertiser}, nil
	}); err != nil {
		return err
	}
	if err := t.step(sc, "keys", func() (map[string]any, error) { return nil, t.keys(fleet) }); err != nil {
		return err
	}
	if err := t.step(sc, "mosquitto", func() (map[string]any, error) { return nil, t.broker() }); err != nil {
		return err
	}
	if err := t.step(sc, "watch", func() (map[string]any, error) {
		w, err := t.startWatch()
		t.watch = w
		return nil, err
	}); err != nil {
		return err
	}
	return t.step(sc, "gatewayd", func() (map[string]any, error) {
		if err := t.writeConfig(); err != nil {
			return nil, err
		}
		start := time.Now()
		// As systemd's Restart=on-failure does for the unit: a bluetoothd
		// too slow to answer at start (RegisterAgent timed out at load
		// 22) makes gatewayd exit 1, and it is started again.
		var errs []error
		for starts := 1; starts <= 3; starts++ {
			err := t.startDaemon(starts == 1)
			if err == nil {
				return map[string]any{"ready_ms": time.Since(start).Milliseconds(), "starts": starts}, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	})
}

// waitAdapters waits until bluetoothd lists hci0..hci(n-1), powered.
func waitAdapters(ctx context.Context, n int) error {
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		return err
	}
	defer conn.Close()
	for {
		var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := conn.Object(bluez.BusName, "/").CallWithContext(cctx, "org.freedesktop.DBus.ObjectManager.GetManagedObjects", 0).Store(&objs)
		cancel()
		if err == nil {
			found := 0
			for i := range n {
				// Powered too: a fresh bluetoothd powers its adapters on
				// (AutoEnable), and Powered set meanwhile answers Busy.
				if a, ok := objs[dbus.ObjectPath(fmt.Sprintf("/org/bluez/hci%d", i))][bluez.IfaceAdapter]; ok {
					if on, _ := a["Powered"].Value().(bool); on {
						found++
					}
				}
			}
			if found == n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("adapters hci0..hci%d not up", n-1), err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (t *tier) startLock(fleet *channeltest.Fleet, n int) error {
	l, bolt, err := realbluez.NewGatewayLock(fleet, uint64(realbluez.FirstGatewayLock+n-1))
	if err != nil {
		return err
	}
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return err
	}
	h := &hosted{n: n, id: realbluez.GatewayLockID(n), adapter: fmt.Sprintf("hci%d", n), lock: l, bolt: bolt, conn: conn}
	h.per, err = peripheral.Start(t.ctx, conn, peripheral.Options{Adapter: h.adapter, Lock: l, Group: &t.group,
		Logger: t.log.With("lock", h.id)})
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("lock %d on %s: %w", n, h.adapter, err)
	}
	t.locks = append(t.locks, h)
	return nil
}

func (t *tier) closeLocks() {
	for _, h := range t.locks {
		if h.per != nil {
			_ = h.per.Close()
		}
		_ = h.conn.Close()
	}
}

// keys runs the key ceremony with gatewayctl under the test fleet's root
// (the root the locks trust; in production it never leaves an offline
// machine).
func (t *tier) keys(fleet *channeltest.Fleet) error {
	if err := config.WritePrivateKey(t.path("fleet-root.key"), fleet.Root); err != nil {
		return err
	}
	if err := config.WritePublicKey(t.path("fleet-root.pem"), fleet.Root.Public().(ed25519.PublicKey)); err != nil {
		return err
	}
	for _, k := range []string{"gateway.key", "otto.key", "ada.key", "rider.key"} {
		if _, err := t.ctlOK("keygen", "-o", k); err != nil {
			return err
		}
	}
	for _, a := range [][]string{
		{"-kind", "gateway", "-subject", realbluez.GatewayID, "-pub", "gateway.key.pub", "-o", "gateway.cwt"},
		{"-kind", "operator", "-role", "operator", "-subject", "otto", "-pub", "otto.key.pub", "-o", "otto.cwt"},
		{"-kind", "operator", "-role", "admin", "-subject", "ada", "-pub", "ada.key.pub", "-o", "ada.cwt"},
	} {
		if _, err := t.ctlOK(append([]string{"issue", "-root", "fleet-root.key"}, a...)...); err != nil {
			return err
		}
	}
	return nil
}

// broker starts Debian's mosquitto on 127.0.0.1:1883, anonymous, as root
// (the guest has no mosquitto user). The broker's own configuration is
// tested in deploy/mosquitto; here it only carries messages.
func (t *tier) broker() error {
	conf := t.path("mosquitto.conf")
	c := "user root\nlistener 1883 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 10000\n"
	if err := os.WriteFile(conf, []byte(c), 0o600); err != nil {
		return err
	}
	w, logf, err := fleetproc.OpenLog(filepath.Join(t.logs, "mosquitto.log"), nil)
	if err != nil {
		return err
	}
	p, err := t.procs.Start("mosquitto", exec.Command("/usr/sbin/mosquitto", "-c", conf), w, logf)
	if err != nil {
		return err
	}
	return fleetproc.WaitTCP(t.ctx, "127.0.0.1:1883", p)
}

// writeConfig writes gatewayd.toml: a dock's configuration but for
// bluetooth.default_agent = false (the locks own the default agent),
// max_connections (see -max-connections) and a plain-TCP broker on
// loopback.
func (t *tier) writeConfig() error {
	c := fmt.Sprintf(`gateway_id = %q

[keys]
credential  = %q
private_key = %q
fleet_roots = [%q]

[database]
path = %q

[mqtt]
brokers   = [%q]
keepalive = "5s"

[bluetooth]
adapter         = "hci0"
default_agent   = false
max_connections = %d

[metrics]
listen = %q

[admin]
socket = %q

[log]
level = "debug"
`, realbluez.GatewayID, t.path("gateway.cwt"), t.path("gateway.key"), t.path("fleet-root.pem"), t.db, brokerURL,
		t.maxConn, metricsAddr, t.path("admin.sock"))
	return os.WriteFile(t.path("gatewayd.toml"), []byte(c), 0o644)
}

// startDaemon starts gatewayd run (with -init the first time) and waits
// for READY=1 on its notify socket, as systemd does.
func (t *tier) startDaemon(init bool) error {
	ns, err := fleetproc.ListenNotify(t.path("notify.sock"))
	if err != nil {
		return err
	}
	defer ns.Close()
	w, logf, err := fleetproc.OpenLog(filepath.Join(t.logs, "gatewayd.log"), nil)
	if err != nil {
		return err
	}
	args := []string{"run", "-config", t.path("gatewayd.toml")}
	if init {
		args = append(args, "-init")
	}
	cmd := exec.Command("gatewayd", args...)
	cmd.Dir = t.dir
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.Path)
	p, err := t.procs.Start("gatewayd", cmd, w, logf)
	if err != nil {
		return err
	}
	t.daemon = p
	_, err = ns.WaitReady(t.ctx, p, 3*time.Minute)
	return err
}

// ---- gatewayctl ----

// ctl runs gatewayctl in the tier's directory; it returns stdout, the
// exit code and an error only when it could not run.
func (t *tier) ctl(timeout time.Duration, args ...string) (string, string, int, error) {
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "gatewayctl", args...)
	cmd.Dir = t.dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ctx.Err() == nil {
		return out.String(), errOut.String(), ee.ExitCode(), nil
	}
	if err != nil {
		return out.String(), errOut.String(), -1, fmt.Errorf("gatewayctl %s: %w: %s", args[0], err, errOut.String())
	}
	return out.String(), errOut.String(), 0, nil
}

func (t *tier) ctlOK(args ...string) (string, error) {
	out, errOut, code, err := t.ctl(time.Minute, args...)
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", fmt.Errorf("gatewayctl %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out, nil
}

// result is the part of a result message the scenarios check.
type result struct {
	CommandID string `json:"command_id"`
	LockID    string `json:"lock_id"`
	Operation string `json:"operation"`
	State     string `json:"state"`
	Status    string `json:"status"`
	Reason    string `json:"reason"`
	Detail    string `json:"detail"`
	Attempts  int    `json:"attempts"`
	LockState string `json:"lock_state"`
	Users     []struct {
		ID string `json:"id"`
	} `json:"users"`
	raw string
}

// sendTimeout bounds one gatewayctl send: a first contact under TCG
// (discovery, connect, EDHOC, bonding) takes tens of seconds.
const sendTimeout = 4 * time.Minute

// send signs and sends a command as who to lock n with gatewayctl send
// and returns its one result as gatewayctl printed it. ready, if not nil,
// is closed once gatewayctl published the command.
func (t *tier) send(who string, n int, ready chan<- struct{}, op ...string) (result, error) {
	args := []string{"send", "-key", who + ".key", "-cred", who + ".cwt", "-broker", brokerURL, "-gateway", realbluez.GatewayID,
		"-lock", realbluez.GatewayLockID(n), "-root", "fleet-root.pem", "-timeout", sendTimeout.String()}
	return t.sendArgs(append(args, op...), ready)
}

func (t *tier) sendArgs(args []string, ready chan<- struct{}) (result, error) {
	ctx, cancel := context.WithTimeout(t.ctx, sendTimeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "gatewayctl", args...)
	cmd.Dir = t.dir
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return result{}, err
	}
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	var errOut strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		errOut.WriteString(sc.Text() + "\n")
		if ready != nil && strings.HasPrefix(sc.Text(), "sent command") {
			close(ready)
			ready = nil
		}
	}
	if ready != nil {
		close(ready)
	}
	err = cmd.Wait()
	var r result
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		return r, fmt.Errorf("gatewayctl send %v: no result (%v): %s", args[len(args)-1], err, strings.TrimSpace(errOut.String()))
	}
	r.raw = out.String()
	return r, nil
}

// ---- the watcher: every result on the broker ----

// watcher runs gatewayctl watch for the whole run and keeps every result
// and notice by command ID: "exactly one result" is checked against it,
// not against what gatewayctl send printed.
type watcher struct {
	mu       sync.Mutex
	results  map[string][]string // command ID -> payloads, in arrival order
	notices  int
	statuses []string
}

func (t *tier) startWatch() (*watcher, error) {
	w := &watcher{results: map[string][]string{}}
	cmd := exec.Command("gatewayctl", "watch", "-broker", brokerURL, "-gateway", realbluez.GatewayID)
	cmd.Dir = t.dir
	pr, pw := io.Pipe()
	logf, err := os.Create(filepath.Join(t.logs, "watch.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.MultiWriter(pw, logf)
	cmd.Stderr = logf
	p, err := t.procs.Start("gatewayctl watch", cmd, nil, logf)
	if err != nil {
		return nil, err
	}
	go func() {
		<-p.Done()
		_ = pw.Close()
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			topic, payload, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue
			}
			w.mu.Lock()
			switch {
			case strings.HasSuffix(topic, "/result"):
				var r result
				if json.Unmarshal([]byte(payload), &r) == nil && r.CommandID != "" {
					w.results[r.CommandID] = append(w.results[r.CommandID], payload)
				}
			case strings.HasSuffix(topic, "/rejected"):
				w.notices++
			case strings.HasSuffix(topic, "/status"):
				w.statuses = append(w.statuses, payload)
			}
			w.mu.Unlock()
		}
	}()
	// The watcher is subscribed once it has seen the retained status, or
	// after a moment when there is none yet (gatewayd not started).
	time.Sleep(2 * time.Second)
	return w, nil
}

// count is how many result messages carried command id, and how many
// distinct payloads (a result published again after a crash is the same
// message: at-least-once delivery, docs/mqtt.md).
func (w *watcher) count(id string) (messages, distinct int, states []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := map[string]bool{}
	for _, p := range w.results[id] {
		var r result
		_ = json.Unmarshal([]byte(p), &r)
		key := r.State + "/" + r.Status
		if !seen[key] {
			seen[key] = true
			states = append(states, key)
		}
	}
	return len(w.results[id]), len(seen), states
}

// exactlyOne checks that the watcher saw exactly one result for each of
// ids (duplicates of the same result are counted, not failed), waiting a
// moment for stragglers first.
func (t *tier) exactlyOne(ids []string) (map[string]any, error) {
	time.Sleep(time.Second)
	dup := 0
	var bad []string
	for _, id := range ids {
		msgs, distinct, states := t.watch.count(id)
		if distinct != 1 {
			bad = append(bad, fmt.Sprintf("%s: %d results %v", id, distinct, states))
		}
		dup += msgs - distinct
	}
	facts := map[string]any{"commands": len(ids), "redelivered": dup}
	if len(bad) > 0 {
		return facts, fmt.Errorf("not exactly one result: %s", strings.Join(bad, "; "))
	}
	return facts, nil
}

// ---- metrics and database ----

func (t *tier) scrape() (string, error) { return fleetproc.Scrape(t.ctx, metricsAddr, 10*time.Second) }

// metric sums the samples of name (any labels, or those matching label,
// e.g. `state="succeeded"`) in a scrape.
func metric(scrape, name, label string) float64 {
	var sum float64
	for _, l := range strings.Split(scrape, "\n") {
		if !strings.HasPrefix(l, name) || (len(l) > len(name) && l[len(name)] != ' ' && l[len(name)] != '{') {
			continue
		}
		if label != "" && !strings.Contains(l, label) {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// waitMetric waits until cond holds for the metric's value.
func (t *tier) waitMetric(name, label string, within time.Duration, cond func(float64) bool) (float64, error) {
	deadline := time.Now().Add(within)
	for {
		s, err := t.scrape()
		v := metric(s, name, label)
		if err == nil && cond(v) {
			return v, nil
		}
		if time.Now().After(deadline) || t.ctx.Err() != nil {
			return v, fmt.Errorf("%s{%s} = %v after %v (scrape: %v)", name, label, v, within, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// dbLock is a lock's record as gatewayd db export shows it.
type dbLock struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Bond    string `json:"bond"`
}

// exportDB takes an online backup through gatewayd's admin socket and
// exports it: what the database holds, read while gatewayd runs.
func (t *tier) exportDB() ([]dbLock, error) {
	bk := t.path("backup.db")
	_ = os.Remove(bk)
	ctx, cancel := context.WithTimeout(t.ctx, time.Minute)
	defer cancel()
	if b, err := exec.CommandContext(ctx, "gatewayd", "db", "backup", "-db", t.db, "-socket", t.path("admin.sock"), bk).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("gatewayd db backup: %w: %s", err, b)
	}
	out, err := exec.CommandContext(ctx, "gatewayd", "db", "export", "-db", bk).Output()
	if err != nil {
		return nil, fmt.Errorf("gatewayd db export: %w", err)
	}
	var x struct {
		Locks []dbLock `json:"locks"`
	}
	if err := json.Unmarshal(out, &x); err != nil {
		return nil, fmt.Errorf("gatewayd db export: %w", err)
	}
	return x.Locks, nil
}

// ---- scenarios ----

// firstContact: gatewayd discovers the five locks, and the first command
// to each (status) makes it bond with the lock by itself (allow-bond over
// the secure channel, Pair with the one-time passkey): exactly one result
// each, every lock bonded on both sides and in the database. The host
// checks the capture (LE SC passkey entry and encryption on every lock's
// controller).
func (t *tier) firstContact() error {
	const sc = "gw-first-contact"
	if err := t.step(sc, "discovered", func() (map[string]any, error) {
		v, err := t.waitMetric("gatewayd_bluez_locks_present", "", 2*time.Minute, func(v float64) bool { return v >= realbluez.GatewayLocks })
		return map[string]any{"locks_present": v}, err
	}); err != nil {
		return err
	}
	var ids []string
	if err := t.step(sc, "status-all", func() (map[string]any, error) {
		rs, err := t.parallel(realbluez.GatewayLocks, func(i int) (result, error) { return t.send("otto", i+1, nil, "status") })
		facts := map[string]any{}
		for i, r := range rs {
			ids = append(ids, r.CommandID)
			facts[fmt.Sprintf("lock%d", i+1)] = r.State + "/" + r.Status
			facts[fmt.Sprintf("attempts%d", i+1)] = r.Attempts
			if err == nil && r.State != "succeeded" {
				err = fmt.Errorf("lock %d: %s %s %s", i+1, r.State, r.Status, r.Detail)
			}
		}
		return facts, err
	}); err != nil {
		return err
	}
	if err := t.step(sc, "exactly-one-result", func() (map[string]any, error) { return t.exactlyOne(ids) }); err != nil {
		return err
	}
	if err := t.step(sc, "locks-bonded", func() (map[string]any, error) {
		facts := map[string]any{}
		var missing []string
		for _, h := range t.locks {
			// The lock records the bond when bluetoothd reports Paired.
			deadline := time.Now().Add(30 * time.Second)
			for !h.lock.Bonded(realbluez.GatewayAddress) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			st := h.per.Stats()
			facts[h.id] = fmt.Sprintf("bonded=%v passkeys=%d pairings_ok=%d failed=%d", h.lock.Bonded(realbluez.GatewayAddress),
				st.PasskeysGiven, st.PairingsOK, st.PairingsFailed)
			if !h.lock.Bonded(realbluez.GatewayAddress) {
				missing = append(missing, h.id)
			}
		}
		if len(missing) > 0 {
			return facts, fmt.Errorf("not bonded on the lock's side: %v", missing)
		}
		return facts, nil
	}); err != nil {
		return err
	}
	return t.step(sc, "bonds-in-database", func() (map[string]any, error) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			locks, err := t.exportDB()
			facts := map[string]any{}
			bonded := 0
			for _, l := range locks {
				facts[l.ID] = l.Bond + " " + l.Address
				if l.Bond == "bonded" {
					bonded++
				}
			}
			facts["bonded"] = bonded
			if err == nil && bonded == realbluez.GatewayLocks {
				return facts, nil
			}
			if time.Now().After(deadline) {
				return facts, errors.Join(fmt.Errorf("%d of %d locks bonded in the database", bonded, realbluez.GatewayLocks), err)
			}
			time.Sleep(time.Second)
		}
	})
}

// parallel runs f for 0..n-1 at once and returns the results in order,
// and the first error.
func (t *tier) parallel(n int, f func(i int) (result, error)) ([]result, error) {
	rs := make([]result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { rs[i], errs[i] = f(i) })
	}
	wg.Wait()
	return rs, errors.Join(errs...)
}

// commands: each operation an operator or admin has, through gatewayctl
// send; exactly one result each; the bolt moves once per lock/unlock.
func (t *tier) commands() error {
	const sc = "gw-commands"
	var ids []string
	do := func(name, who string, n int, wantMoves int, check func(result) error, op ...string) error {
		return t.step(sc, name, func() (map[string]any, error) {
			h := t.locks[n-1]
			before := h.bolt.Moves()
			r, err := t.send(who, n, nil, op...)
			if err != nil {
				return nil, err
			}
			ids = append(ids, r.CommandID)
			moves := h.bolt.Moves() - before
			facts := map[string]any{"state": r.State, "status": r.Status, "attempts": r.Attempts, "bolt_moves": moves, "lock_state": r.LockState}
			if r.State != "succeeded" {
				return facts, fmt.Errorf("%s: %s %s %s", op[0], r.State, r.Status, r.Detail)
			}
			if moves != wantMoves {
				return facts, fmt.Errorf("%s: the bolt moved %d times, want %d", op[0], moves, wantMoves)
			}
			if check != nil {
				return facts, check(r)
			}
			return facts, nil
		})
	}
	hasRider := func(want bool) func(result) error {
		return func(r result) error {
			has := strings.Contains(r.raw, `"rider-7"`)
			if has != want {
				return fmt.Errorf("list-users: rider-7 listed %v, want %v: %s", has, want, r.raw)
			}
			return nil
		}
	}
	steps := []func() error{
		func() error { return do("unlock", "otto", 1, 1, nil, "unlock") },
		func() error { return do("lock", "otto", 1, 1, nil, "lock") },
		func() error { return do("status", "otto", 2, 0, nil, "status") },
		func() error { return do("add-user", "ada", 3, 0, nil, "add-user", "rider-7", "rider.key.pub") },
		func() error { return do("list-users", "ada", 3, 0, hasRider(true), "list-users") },
		func() error { return do("remove-user", "ada", 3, 0, nil, "remove-user", "rider-7") },
		func() error { return do("list-users-after-remove", "ada", 3, 0, hasRider(false), "list-users") },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return t.step(sc, "exactly-one-result", func() (map[string]any, error) { return t.exactlyOne(ids) })
}

// burst: 50 commands over the five locks at once (per lock published in
// order, all in flight together): each gets exactly one result, and each
// lock's bolt moved exactly once per succeeded lock or unlock.
func (t *tier) burst() error {
	const sc = "gw-burst"
	const total = 50
	type job struct {
		n  int
		op string
	}
	var jobs []job
	for i := range total {
		ops := []string{"unlock", "lock", "status"}
		jobs = append(jobs, job{n: i%realbluez.GatewayLocks + 1, op: ops[(i/realbluez.GatewayLocks)%3]})
	}
	before := make([]int, len(t.locks))
	for i, h := range t.locks {
		before[i] = h.bolt.Moves()
	}
	rs := make([]result, total)
	errs := make([]error, total)
	start := time.Now()
	if err := t.step(sc, "send-50", func() (map[string]any, error) {
		// One sender per lock: the next command to a lock is published
		// once the previous one is (signers' counters stay in order per
		// lock); at most 10 gatewayctl processes at once (the guest's
		// memory and CPU: each is a Go process starting under TCG).
		sem := make(chan struct{}, 10)
		var wg sync.WaitGroup
		for n := 1; n <= realbluez.GatewayLocks; n++ {
			wg.Go(func() {
				var inner sync.WaitGroup
				for i, j := range jobs {
					if j.n != n {
						continue
					}
					sem <- struct{}{}
					ready := make(chan struct{})
					inner.Go(func() {
						defer func() { <-sem }()
						rs[i], errs[i] = t.send("otto", j.n, ready, j.op)
					})
					<-ready
				}
				inner.Wait()
			})
		}
		wg.Wait()
		facts := map[string]any{"wall_ms": time.Since(start).Milliseconds()}
		states := map[string]int{}
		for _, r := range rs {
			states[r.State]++
		}
		facts["states"] = states
		if err := errors.Join(errs...); err != nil {
			return facts, err
		}
		if states["succeeded"] != total {
			return facts, fmt.Errorf("%d of %d succeeded", states["succeeded"], total)
		}
		return facts, nil
	}); err != nil {
		return err
	}
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.CommandID)
	}
	if err := t.step(sc, "exactly-one-result", func() (map[string]any, error) { return t.exactlyOne(ids) }); err != nil {
		return err
	}
	return t.step(sc, "bolt-moves", func() (map[string]any, error) {
		facts := map[string]any{}
		var bad []string
		for i, h := range t.locks {
			want := 0
			for k, j := range jobs {
				if j.n == h.n && j.op != "status" && rs[k].State == "succeeded" {
					want++
				}
			}
			got := h.bolt.Moves() - before[i]
			facts[h.id] = got
			if got != want {
				bad = append(bad, fmt.Sprintf("lock %d moved %d times for %d lock/unlock results", h.n, got, want))
			}
		}
		if len(bad) > 0 {
			return facts, errors.New(strings.Join(bad, "; "))
		}
		return facts, nil
	})
}

// bluetoothdKill: bluetoothd is SIGKILLed while gatewayd holds a bonded
// link and an unlock is in flight; gatewayd recovers without a restart,
// the unlock gets exactly one result, and the bolt moved at most once.
func (t *tier) bluetoothdKill() error {
	const sc = "gw-bluetoothd-kill"
	h := t.locks[1]
	before := h.bolt.Moves()
	s0, _ := t.scrape()
	restarts0 := metric(s0, "gatewayd_bluez_bluetoothd_restarts_total", "")
	pid := t.daemon.Pid()
	var r result
	var sendErr error
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer close(done)
		r, sendErr = t.send("otto", h.n, ready, "unlock")
	}()
	if err := t.step(sc, "kill-during-command", func() (map[string]any, error) {
		<-ready
		// Wait for the lock to see the gateway connected (the command is
		// on its way over the link), then kill.
		deadline := time.Now().Add(2 * time.Minute)
		for h.per.Stats().Writes == 0 || !linked(h) {
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		f := strings.Fields(t.restart)
		ctx, cancel := context.WithTimeout(t.ctx, time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, f[0], f[1:]...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %s", t.restart, err, out)
		}
		return map[string]any{"lock_writes": h.per.Stats().Writes}, nil
	}); err != nil {
		<-done
		return err
	}
	if err := t.step(sc, "one-result", func() (map[string]any, error) {
		<-done
		if sendErr != nil {
			return nil, sendErr
		}
		facts, err := t.exactlyOne([]string{r.CommandID})
		moves := h.bolt.Moves() - before
		facts["state"], facts["status"], facts["attempts"], facts["bolt_moves"] = r.State, r.Status, r.Attempts, moves
		if err != nil {
			return facts, err
		}
		if moves > 1 {
			return facts, fmt.Errorf("the bolt moved %d times", moves)
		}
		if r.State == "succeeded" && moves != 1 {
			return facts, fmt.Errorf("succeeded with %d bolt moves", moves)
		}
		return facts, nil
	}); err != nil {
		return err
	}
	return t.step(sc, "recovered", func() (map[string]any, error) {
		if t.daemon.Exited() || t.daemon.Pid() != pid {
			return nil, errors.New("gatewayd exited")
		}
		v, err := t.waitMetric("gatewayd_bluez_bluetoothd_restarts_total", "", time.Minute, func(v float64) bool { return v > restarts0 })
		facts := map[string]any{"bluetoothd_restarts": v - restarts0}
		if err != nil {
			return facts, err
		}
		// A command after the restart, over the same daemon: the bonded
		// lock is reached again.
		r2, err := t.send("otto", h.n, nil, "status")
		if err != nil {
			return facts, err
		}
		facts["after"], facts["after_attempts"] = r2.State+"/"+r2.Status, r2.Attempts
		if r2.State != "succeeded" {
			return facts, fmt.Errorf("status after the restart: %s %s", r2.State, r2.Detail)
		}
		return facts, nil
	})
}

// linked reports whether the lock's peripheral has a connected peer.
func linked(h *hosted) bool {
	st := h.per.Stats()
	return st.Connections > st.Disconnections
}

// gatewaydKill: gatewayd is SIGKILLed with commands journaled and not yet
// run, and started again: each command gets exactly one result (the
// journal resumes), and the bolt moved once per succeeded lock/unlock.
func (t *tier) gatewaydKill() error {
	const sc = "gw-gatewayd-kill"
	h := t.locks[2]
	before := h.bolt.Moves()
	type sent struct {
		r   result
		err error
	}
	ch := make(chan sent, 2)
	readies := []chan struct{}{make(chan struct{}), make(chan struct{})}
	for i, op := range []string{"unlock", "lock"} {
		go func() {
			r, err := t.send("otto", h.n, readies[i], op)
			ch <- sent{r, err}
		}()
		<-readies[i]
	}
	if err := t.step(sc, "kill", func() (map[string]any, error) {
		// Killed mid-session: once the lock has a connected gateway and
		// has taken a write since the commands were published (the
		// handshake or a command on its way).
		writes := h.per.Stats().Writes
		deadline := time.Now().Add(2 * time.Minute)
		for !linked(h) || h.per.Stats().Writes == writes {
			if time.Now().After(deadline) {
				return nil, errors.New("the gateway never reached the lock")
			}
			time.Sleep(10 * time.Millisecond)
		}
		facts := map[string]any{"lock_writes": h.per.Stats().Writes - writes}
		return facts, t.daemon.Stop(syscall.SIGKILL, 10*time.Second)
	}); err != nil {
		return err
	}
	if err := t.step(sc, "restart", func() (map[string]any, error) { return nil, t.startDaemon(false) }); err != nil {
		return err
	}
	return t.step(sc, "journal-resumed", func() (map[string]any, error) {
		var ids []string
		facts := map[string]any{}
		want := 0
		for i := range 2 {
			s := <-ch
			if s.err != nil {
				return facts, s.err
			}
			ids = append(ids, s.r.CommandID)
			facts[fmt.Sprintf("cmd%d", i)] = s.r.State + "/" + s.r.Status
			if s.r.State == "succeeded" {
				want++
			}
		}
		f, err := t.exactlyOne(ids)
		for k, v := range f {
			facts[k] = v
		}
		moves := h.bolt.Moves() - before
		facts["bolt_moves"] = moves
		if err != nil {
			return facts, err
		}
		if want != 2 {
			return facts, fmt.Errorf("%d of 2 succeeded", want)
		}
		if moves != want {
			return facts, fmt.Errorf("the bolt moved %d times for %d results", moves, want)
		}
		return facts, nil
	})
}

// lockGone: a lock stops advertising and goes away; a command queued for
// it ends expired at its not-after, with exactly one result.
func (t *tier) lockGone() error {
	const sc = "gw-lock-gone"
	h := t.locks[4]
	if err := t.step(sc, "lock-off", func() (map[string]any, error) {
		err := h.per.Close()
		h.per = nil
		return nil, err
	}); err != nil {
		return err
	}
	return t.step(sc, "expired", func() (map[string]any, error) {
		valid := 20 * time.Second
		start := time.Now()
		args := []string{"send", "-key", "otto.key", "-cred", "otto.cwt", "-broker", brokerURL, "-gateway", realbluez.GatewayID,
			"-lock", h.id, "-timeout", sendTimeout.String(), "-valid", valid.String(), "unlock"}
		r, err := t.sendArgs(args, nil)
		if err != nil {
			return nil, err
		}
		facts, err := t.exactlyOne([]string{r.CommandID})
		took := time.Since(start)
		facts["state"], facts["status"], facts["attempts"], facts["took_ms"] = r.State, r.Status, r.Attempts, took.Milliseconds()
		if err != nil {
			return facts, err
		}
		if r.State != "expired" {
			return facts, fmt.Errorf("state %s %s, want expired", r.State, r.Status)
		}
		if took < valid-2*time.Second {
			return facts, fmt.Errorf("expired after %v, before its not-after (%v)", took, valid)
		}
		return facts, nil
	})
}

// stop: a clean stop (SIGTERM), then the metrics of the whole run were
// scraped just before.
func (t *tier) stop() error {
	const sc = "gw-stop"
	return t.step(sc, "sigterm", func() (map[string]any, error) {
		s, err := t.scrape()
		facts := map[string]any{}
		if err == nil {
			for _, m := range []string{"gatewayd_fleet_results_total", "gatewayd_fleet_attempts_total", "gatewayd_bluez_connect_failures_total",
				"gatewayd_bluez_bluetoothd_restarts_total", "gatewayd_outbox_duplicates_total", "gatewayd_intake_rejected_total"} {
				facts[m] = metric(s, m, "")
			}
		}
		return facts, t.daemon.Stop(syscall.SIGTERM, 30*time.Second)
	})
}
