package fleetproc

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGroup: StopAll stops what the group started; a process killed by a
// signal reports it; WaitTCP fails early, naming it, when it exits.
func TestGroup(t *testing.T) {
	var g Group
	p, err := g.Start("sleep", exec.Command("sleep", "60"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Exited() {
		t.Fatal("exited at once")
	}
	g.StopAll()
	if !p.Exited() || p.ExitCode() != -1 {
		t.Errorf("after StopAll: exited %v, code %d", p.Exited(), p.ExitCode())
	}
	q, err := g.Start("false", exec.Command("false"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	err = WaitTCP(context.Background(), net.JoinHostPort("127.0.0.1", itoa(port)), q)
	if err == nil || !strings.Contains(err.Error(), "false exited") {
		t.Errorf("WaitTCP on an exited process: %v", err)
	}
	if q.ExitCode() != 1 {
		t.Errorf("false: exit code %d", q.ExitCode())
	}
	if _, err := g.Start("nothing", exec.Command("/nonexistent/binary"), nil, nil); err == nil {
		t.Error("a missing binary started")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestNotifySocket: READY=1 is found among other notifications; a process
// that exits first, or silence, is an error.
func TestNotifySocket(t *testing.T) {
	dir := t.TempDir()
	ns, err := ListenNotify(filepath.Join(dir, "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var g Group
	defer g.StopAll()
	p, err := g.Start("sleep", exec.Command("sleep", "60"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unixgram", ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{"STATUS=starting", "READY=1\nSTATUS=running"} {
		if _, err := c.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := ns.WaitReady(context.Background(), p, time.Minute)
	if err != nil || !strings.Contains(m, "STATUS=running") {
		t.Errorf("WaitReady = %q, %v", m, err)
	}
	if _, err := ns.Read(50 * time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Errorf("Read on silence: %v", err)
	}
	_ = p.Stop(syscall.SIGKILL, time.Minute)
	if _, err := ns.WaitReady(context.Background(), p, time.Minute); err == nil || !strings.Contains(err.Error(), "exited before READY=1") {
		t.Errorf("WaitReady after exit: %v", err)
	}
}

func TestGatewayConfig(t *testing.T) {
	c := GatewayConfig{GatewayID: "dock-1", Credential: "/k/gw.cwt", PrivateKey: "/k/gw.key", Root: "/k/root.pem",
		Database: "/s/db", Broker: "tcp://127.0.0.1:1", Metrics: "127.0.0.1:2", AdminSocket: "/r/admin.sock", KeepAlive: "7s"}
	s := string(c.TOML())
	for _, want := range []string{`gateway_id = "dock-1"`, `path = "/s/db"`, `brokers   = ["tcp://127.0.0.1:1"]`,
		`keepalive = "7s"`, `away_after = "10s"`, `level = "debug"`, `socket = "/r/admin.sock"`} {
		if !strings.Contains(s, want) {
			t.Errorf("TOML lacks %q:\n%s", want, s)
		}
	}
}

// TestGatewayConfigBrokers: several broker URLs (a cluster's nodes) make
// one list, which config parses back (cmd/fleetsim).
func TestGatewayConfigBrokers(t *testing.T) {
	c := GatewayConfig{GatewayID: "dock-1", Broker: "tcp://ignored:1", Brokers: []string{"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"}}
	if s := string(c.TOML()); !strings.Contains(s, `brokers   = ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"]`) {
		t.Fatalf("TOML:\n%s", s)
	}
}
