package mosquittotest

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestStartStopRestart: the broker accepts connections, refuses them once
// stopped, and accepts them again on the same port after Restart; its
// persistence database was saved at the clean stop.
func TestStartStopRestart(t *testing.T) {
	b := Start(t, Options{})
	if !strings.HasPrefix(b.URL(), "tcp://127.0.0.1:") {
		t.Fatalf("URL = %q", b.URL())
	}
	dial := func() error {
		c, err := net.DialTimeout("tcp", b.Addr(), 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("dial running broker: %v", err)
	}
	addr := b.Addr()
	b.Stop()
	if b.Running() {
		t.Fatal("Running after Stop")
	}
	if err := dial(); err == nil {
		t.Fatal("stopped broker accepted a connection")
	}
	if _, err := os.Stat(b.Dir() + "/data/mosquitto.db"); err != nil {
		t.Fatalf("no persistence database after SIGTERM: %v", err)
	}
	b.Restart(t)
	if b.Addr() != addr {
		t.Fatalf("address changed across Restart: %s → %s", addr, b.Addr())
	}
	if err := dial(); err != nil {
		t.Fatalf("dial restarted broker: %v", err)
	}
	b.Kill()
	b.Kill() // idempotent
	if b.Running() {
		t.Fatal("Running after Kill")
	}
}

// TestTwoBrokers: each test gets its own port and directory.
func TestTwoBrokers(t *testing.T) {
	a, b := Start(t, Options{}), Start(t, Options{MaxInflightMessages: 5})
	if a.Addr() == b.Addr() || a.Dir() == b.Dir() {
		t.Fatalf("brokers share %s / %s", a.Addr(), a.Dir())
	}
	if !strings.Contains(b.LogTail(100), "mosquitto version") {
		t.Fatalf("log lacks the start line:\n%s", b.LogTail(100))
	}
}
