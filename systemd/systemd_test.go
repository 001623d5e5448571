package systemd

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// verify runs systemd-analyze verify on unit with ExecStart pointed at a
// binary that exists here.
func verify(t *testing.T, unit string) (string, error) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: run scripts/deps.sh (apt-get install systemd)")
	}
	bin, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "gatewayd.service")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(unit, "/usr/bin/gatewayd", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", p).CombinedOutput()
	return string(out), err
}

// TestUnitVerifies: systemd-analyze accepts the unit with no warning.
func TestUnitVerifies(t *testing.T) {
	b, err := os.ReadFile("gatewayd.service")
	if err != nil {
		t.Fatal(err)
	}
	out, err := verify(t, string(b))
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The check can fail: a misspelt directive is reported.
	out, _ = verify(t, strings.Replace(string(b), "NoNewPrivileges=yes", "NoNewPrivilege=yes", 1))
	if !strings.Contains(out, "NoNewPrivilege") {
		t.Errorf("systemd-analyze did not report a misspelt directive: %q", out)
	}
}

// TestUnitPolicy: the properties the daemon's design relies on.
func TestUnitPolicy(t *testing.T) {
	b, err := os.ReadFile("gatewayd.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Type=notify", "WatchdogSec=", "User=gatewayd", "SupplementaryGroups=bluetooth",
		"StateDirectoryMode=0700", "RuntimeDirectoryMode=0700", "UMask=0077", "NoNewPrivileges=yes",
		"ProtectSystem=strict", "CapabilityBoundingSet=\n", "RestartPreventExitStatus=78",
		"ExecStart=/usr/bin/gatewayd run -config /etc/gatewayd/gatewayd.toml",
		"ExecReload=/bin/kill -HUP $MAINPID", // SIGHUP reloads (internal/daemon reload.go); it no longer kills
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	// -init would re-create a lost database, with an empty journal, at
	// every restart: only an operator passes it, once.
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "ExecStart") && strings.Contains(line, "-init") {
			t.Errorf("unit passes -init: %q", line)
		}
	}
}

func listen(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, p
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 256)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

func TestNotify(t *testing.T) {
	c, p := listen(t)
	t.Setenv("NOTIFY_SOCKET", p)
	t.Setenv("WATCHDOG_USEC", "40000")
	t.Setenv("WATCHDOG_PID", "")
	n, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != "READY=1" {
		t.Errorf("got %q", got)
	}
	if n.WatchdogInterval() != 40*time.Millisecond {
		t.Errorf("watchdog %v", n.WatchdogInterval())
	}
	ctx, cancel := context.WithCancel(t.Context())
	sick := make(chan error, 1)
	sick <- errors.New("adapter gone")
	done := make(chan error)
	go func() {
		done <- n.Watchdog(ctx, func() error {
			select {
			case err := <-sick:
				return err
			default:
				return nil
			}
		})
	}()
	// The first tick is unhealthy: a STATUS and no ping; then a ping that
	// sets the status back to running, then pings alone.
	if got := read(t, c); !strings.HasPrefix(got, "STATUS=unhealthy: adapter gone") {
		t.Errorf("got %q", got)
	}
	if got := read(t, c); got != "WATCHDOG=1\nSTATUS=running" {
		t.Errorf("got %q, want the recovery's status", got)
	}
	if got := read(t, c); got != "WATCHDOG=1" {
		t.Errorf("got %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watchdog: %v", err)
	}
}

func TestOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := FromEnv()
	if err != nil || n.Notify("READY=1") != nil || n.WatchdogInterval() != 0 {
		t.Errorf("outside systemd: %v", err)
	}
	if err := n.Watchdog(t.Context(), nil); err != nil {
		t.Error(err)
	}
	t.Setenv("NOTIFY_SOCKET", "relative")
	if _, err := FromEnv(); err == nil {
		t.Error("relative NOTIFY_SOCKET accepted")
	}
}

func TestWatchdogOtherPID(t *testing.T) {
	_, p := listen(t)
	t.Setenv("NOTIFY_SOCKET", p)
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("WATCHDOG_PID", "1")
	n, err := FromEnv()
	if err != nil || n.WatchdogInterval() != 0 {
		t.Errorf("watchdog meant for pid 1 taken: %v %v", n.WatchdogInterval(), err)
	}
}
