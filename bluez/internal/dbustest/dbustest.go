// Package dbustest runs a private dbus-daemon for tests and for the demo:
// a bus of type "system" (BlueZ's bus) with its socket in a temporary
// directory, reached through its address (what DBUS_SYSTEM_BUS_ADDRESS
// would hold). It also reads the bus's Debug.Stats, so leak tests can count
// a connection's match rules.
//
// It may import the standard library and github.com/godbus/dbus/v5.
package dbustest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// busConfig is a system-type bus with a permissive policy: tests own
// org.bluez and call anything. Debug.Stats is allowed so leak tests can
// read match-rule counts.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
  <limit name="max_match_rules_per_connection">100000</limit>
</busconfig>
`

// ErrNoDaemon is returned when dbus-daemon is not installed.
var ErrNoDaemon = errors.New("dbustest: dbus-daemon not found; install it with: apt-get install dbus-daemon (scripts/deps.sh does)")

// Bus is a running private dbus-daemon.
type Bus struct {
	// Addr is the bus address, e.g. "unix:path=/tmp/…/system_bus_socket".
	Addr string
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
}

// StartDaemon starts a private bus in dir (which must exist). Stop it with
// Close.
func StartDaemon(ctx context.Context, dir string) (*Bus, error) {
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		return nil, ErrNoDaemon
	}
	sock := filepath.Join(dir, "system_bus_socket")
	conf := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, busConfig, sock), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config-file="+conf, "--nofork", "--nopidfile", "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// Not os.Stderr: a daemon that outlives its test would hold the test
	// runner's stderr open and hang `go test`.
	cmd.Stderr = io.Discard
	// Die with the parent if the test binary is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("dbustest: starting dbus-daemon: %w", err)
	}
	b := &Bus{cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(b.done) }()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			addr <- strings.TrimSpace(sc.Text())
		}
		close(addr)
		for sc.Scan() {
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case a, ok := <-addr:
		if !ok || a == "" {
			_ = b.Close()
			return nil, errors.New("dbustest: dbus-daemon printed no address")
		}
		b.Addr = a
	case <-b.done:
		return nil, errors.New("dbustest: dbus-daemon exited at start")
	case <-ctx.Done():
		_ = b.Close()
		return nil, fmt.Errorf("dbustest: waiting for dbus-daemon: %w", ctx.Err())
	}
	return b, nil
}

// Start starts a private bus for the test and stops it at cleanup. A
// missing dbus-daemon fails the test with the package to install.
func Start(t testing.TB) *Bus {
	t.Helper()
	b, err := StartDaemon(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// Close stops the daemon and waits for it.
func (b *Bus) Close() error {
	select {
	case <-b.done:
		return nil
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
	return nil
}

// Conn opens a new private connection to the bus, closed at cleanup.
func (b *Bus) Conn(t testing.TB) *dbus.Conn {
	t.Helper()
	c, err := b.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Dial opens a new private, authenticated connection to the bus.
func (b *Bus) Dial() (*dbus.Conn, error) {
	c, err := dbus.Connect(b.Addr)
	if err != nil {
		return nil, fmt.Errorf("dbustest: connecting to %s: %w", b.Addr, err)
	}
	return c, nil
}

// MatchRules returns how many match rules the bus holds for the
// connection with unique name name (org.freedesktop.DBus.Debug.Stats).
func (b *Bus) MatchRules(ctx context.Context, via *dbus.Conn, name string) (uint32, error) {
	var stats map[string]dbus.Variant
	err := via.Object("org.freedesktop.DBus", "/org/freedesktop/DBus").
		CallWithContext(ctx, "org.freedesktop.DBus.Debug.Stats.GetConnectionStats", 0, name).Store(&stats)
	if err != nil {
		return 0, fmt.Errorf("dbustest: Debug.Stats.GetConnectionStats: %w", err)
	}
	v, ok := stats["MatchRules"]
	if !ok {
		return 0, errors.New("dbustest: Debug.Stats has no MatchRules")
	}
	n, ok := v.Value().(uint32)
	if !ok {
		return 0, fmt.Errorf("dbustest: MatchRules is %T", v.Value())
	}
	return n, nil
}
