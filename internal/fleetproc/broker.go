package fleetproc

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// Broker is mosquitto as the fleet's broker, a process of a Group: its
// configuration is mosquittotest.Config's (anonymous, persistent) on a
// port of its own, kept across Restart so sessions and queued messages
// survive a kill.
type Broker struct {
	g    *Group
	bin  string
	Conf string // mosquitto.conf
	Addr string // 127.0.0.1:PORT

	mu sync.Mutex
	p  *Proc
}

// StartBroker writes a configuration in dir (persistence and log there
// too, with the extra lines) and starts mosquitto (bin) on a free port,
// trying another port if one is taken meanwhile.
func StartBroker(ctx context.Context, g *Group, bin, dir string, extra ...string) (*Broker, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	b := &Broker{g: g, bin: bin, Conf: filepath.Join(dir, "mosquitto.conf")}
	var lastErr error
	for range 5 {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		c := mosquittotest.Config(port, dir, filepath.Join(dir, "mosquitto.log"), extra...)
		if err := os.WriteFile(b.Conf, c, 0o600); err != nil {
			return nil, err
		}
		b.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = b.Restart(ctx); lastErr == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("mosquitto: %w", lastErr)
}

// URL is the broker's address for MQTT clients: "tcp://127.0.0.1:PORT".
func (b *Broker) URL() string { return "tcp://" + b.Addr }

// Restart starts mosquitto again with its configuration (same port, same
// persistence) and waits for its listener.
func (b *Broker) Restart(ctx context.Context) error {
	p, err := b.g.Start("mosquitto", exec.Command(b.bin, "-c", b.Conf), nil, nil)
	if err != nil {
		return err
	}
	if err := WaitTCP(ctx, b.Addr, p); err != nil {
		_ = p.Stop(syscall.SIGKILL, time.Second)
		return err
	}
	b.mu.Lock()
	b.p = p
	b.mu.Unlock()
	return nil
}

// Kill stops mosquitto with SIGKILL: what it received since its last
// autosave of the persistence file is lost, as in a crash.
func (b *Broker) Kill() error {
	b.mu.Lock()
	p := b.p
	b.mu.Unlock()
	return p.Stop(syscall.SIGKILL, 10*time.Second)
}
