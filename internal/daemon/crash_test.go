package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/command"
)

// The test binary doubles as the daemon: with GATEWAYD_TEST_DAEMON set to
// a configuration file it runs Run in this process, as `gatewayd run`
// does, so a test can SIGKILL a real daemon process.
func TestMain(m *testing.M) {
	if path := os.Getenv("GATEWAYD_TEST_DAEMON"); path != "" {
		os.Exit(childDaemon(path))
	}
	os.Exit(m.Run())
}

func childDaemon(path string) int {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 78
	}
	base, _ := strconv.ParseInt(os.Getenv("GATEWAYD_TEST_EPOCH"), 10, 64)
	start := time.Now()
	now := func() time.Time { return time.Unix(0, base).Add(time.Since(start)) }
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	f, err := os.OpenFile(os.Getenv("GATEWAYD_TEST_LOG"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	opts := Options{Config: cfg, Now: now, Logger: newTextLogger(f)}
	if at := os.Getenv("GATEWAYD_TEST_KILL_AT"); at != "" {
		opts.OpenDB = killAt(at, os.Getenv("GATEWAYD_TEST_KILL_ID")) // TestCrashAtEachCommit
	}
	if err := Run(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func newTextLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// child is a daemon process.
type child struct {
	cmd    *exec.Cmd
	exited chan error
	gone   bool // exited has been received from
}

// spawn starts the daemon as a process, with env added to its
// environment, and waits for its READY=1 on a notify socket, as systemd
// does.
func (d *dock) spawn(env ...string) *child {
	d.t.Helper()
	sock := filepath.Join(d.dir, fmt.Sprintf("notify-%d", rand.Int()))
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		d.t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		"GATEWAYD_TEST_DAEMON="+filepath.Join(d.dir, "gatewayd.toml"),
		"GATEWAYD_TEST_EPOCH="+strconv.FormatInt(d.now().UnixNano(), 10),
		"GATEWAYD_TEST_LOG="+filepath.Join(d.dir, "daemon.log"),
		"DBUS_SYSTEM_BUS_ADDRESS="+d.bus.Addr,
		"NOTIFY_SOCKET="+sock)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() {
		if d.t.Failed() {
			if b, err := os.ReadFile(filepath.Join(d.dir, "daemon.log")); err == nil {
				_ = os.WriteFile(filepath.Join(os.TempDir(), "gatewayd-crash-test.log"), b, 0o600)
				d.t.Logf("the daemons' log: %s", filepath.Join(os.TempDir(), "gatewayd-crash-test.log"))
			}
		}
	})
	c := &child{cmd: cmd, exited: make(chan error, 1)}
	go func() { c.exited <- cmd.Wait() }()
	d.t.Cleanup(func() { c.kill() })
	buf := make([]byte, 256)
	_ = ln.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		n, err := ln.Read(buf)
		if err != nil {
			c.kill()
			d.t.Fatalf("no READY=1 from the daemon: %v", err)
		}
		if strings.Contains(string(buf[:n]), "READY=1") {
			return c
		}
	}
}

// wait waits up to timeout for the daemon to exit by itself, and returns
// how it ended (an error for a kill or a non-zero status).
func (c *child) wait(timeout time.Duration) error {
	if c.gone {
		return nil
	}
	select {
	case err := <-c.exited:
		c.gone = true
		return err
	case <-time.After(timeout):
		c.kill()
		return fmt.Errorf("still running after %v: killed", timeout)
	}
}

func (c *child) kill() {
	if c.gone {
		return
	}
	_ = c.cmd.Process.Kill()
	<-c.exited
	c.gone = true
}

// TestCrashLosesNothing is the exactly-once promise end to end: commands
// the broker accepted are carried out once each and get their result,
// although the daemon is SIGKILLed five times at random moments while
// they arrive and run, and the broker is down while results wait in the
// outbox. The gateway acknowledges a command only once it is journaled
// (an acknowledged command lost by a crash would never get a result);
// results stay in the outbox until the broker acknowledges them; and the
// locks' command-ID memory makes a re-run after a crash answer with the
// first run's status instead of moving the bolt again.
func TestCrashLosesNothing(t *testing.T) {
	const nLocks, perLock = 4, 8
	d := newDock(t, nLocks, emulator.Options{ExchangeLatency: 20 * time.Millisecond})
	oc := d.client
	c := d.spawn()
	// The gateway's session, with its subscription, exists on the broker
	// from its first connection (its retained online status follows the
	// SUBACK): the broker queues commands for it from then on, also while
	// it is down.
	oc.until("the gateway's first session", func() bool { return len(oc.status) > 0 })

	// Each lock gets alternating unlock and lock commands: each one, run
	// once, moves the bolt once.
	var ids [][16]byte
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	kills := 0
	for k := range perLock {
		for i := range nLocks {
			op := command.OpUnlock
			if k%2 == 1 {
				op = command.OpLock
			}
			b, s := d.sign(i, op, command.Args{})
			oc.publish(s) // the broker acknowledged it: it must not be lost
			ids = append(ids, b.CommandID)
		}
		if k%2 == 1 && kills < 4 {
			time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
			c.kill()
			kills++
			c = d.spawn()
		}
	}
	// Let some results wait in the outbox with the broker down, then kill
	// the daemon and bring both back.
	time.Sleep(200 * time.Millisecond)
	d.broker.Stop()
	time.Sleep(time.Duration(200+rng.IntN(300)) * time.Millisecond)
	c.kill()
	kills++
	d.broker.Restart(t)
	c = d.spawn()

	oc.until("a result for every command", func() bool {
		for _, id := range ids {
			if len(oc.resultsFor(id)) == 0 {
				return false
			}
		}
		return true
	})
	oc.mu.Lock()
	dups := 0
	for _, id := range ids {
		rs := oc.resultsFor(id)
		dups += len(rs) - 1
		for _, r := range rs {
			if r.State != bonds.StateSucceeded || r.Status != "ok" {
				t.Errorf("command %x: %s %s (%s)", id, r.State, r.Status, r.Detail)
			}
		}
	}
	oc.mu.Unlock()
	for i, l := range d.locks {
		if got := l.act.Moves(); got != perLock {
			t.Errorf("lock %d: bolt moved %d times for %d commands", i, got, perLock)
		}
	}
	t.Logf("%d commands, %d daemon kills, one broker outage: every command ran once and has its result (%d results repeated on the wire, which subscribers drop by command_id)", len(ids), kills, dups)
	c.kill()
	if err := bonds.CheckFile(t.Context(), d.cfg.Database.Path, bonds.Options{}); err != nil {
		t.Errorf("database after the crashes: %v", err)
	}
}

// TestSIGTERMStopsCleanly: `systemctl stop` (SIGTERM) ends the daemon
// with exit status 0, its retained status offline and its database
// consistent; under systemd a non-zero status would mark the unit failed.
func TestSIGTERMStopsCleanly(t *testing.T) {
	d := newDock(t, 1, emulator.Options{})
	oc := d.client
	c := d.spawn()
	oc.until("online", func() bool { return len(oc.status) > 0 && strings.Contains(oc.status[len(oc.status)-1], `"online"`) })
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.exited:
		if err != nil {
			t.Fatalf("after SIGTERM: %v, want exit status 0", err)
		}
		c.gone = true
	case <-time.After(60 * time.Second):
		t.Fatal("no exit within 60 s of SIGTERM")
	}
	oc.until("offline", func() bool { return strings.Contains(oc.status[len(oc.status)-1], `"offline"`) })
	if err := bonds.CheckFile(t.Context(), d.cfg.Database.Path, bonds.Options{}); err != nil {
		t.Error(err)
	}
}
