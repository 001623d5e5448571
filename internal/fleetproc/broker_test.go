package fleetproc

import (
	"net"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// TestBroker: the broker listens, is gone after Kill, and Restart brings
// it back on the same port.
func TestBroker(t *testing.T) {
	bin, err := mosquittotest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	var g Group
	defer g.StopAll()
	b, err := StartBroker(t.Context(), &g, bin, t.TempDir(), "log_type error")
	if err != nil {
		t.Fatal(err)
	}
	if b.URL() != "tcp://"+b.Addr {
		t.Errorf("URL %q, Addr %q", b.URL(), b.Addr)
	}
	if err := b.Kill(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", b.Addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still listening after Kill")
	}
	if err := b.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", b.Addr, 10*time.Second)
	if err != nil {
		t.Fatalf("not listening after Restart: %v", err)
	}
	c.Close()
}
