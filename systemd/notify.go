package systemd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Notifier sends state changes to systemd (sd_notify(3)). The zero value,
// and one made outside systemd, does nothing.
type Notifier struct {
	addr     *net.UnixAddr
	watchdog time.Duration
}

// FromEnv returns a Notifier for $NOTIFY_SOCKET and $WATCHDOG_USEC (checked
// against $WATCHDOG_PID). Both unset is not an error: gatewayd also runs
// outside systemd.
func FromEnv() (*Notifier, error) {
	n := &Notifier{}
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return n, nil
	}
	if sock[0] != '/' && sock[0] != '@' {
		return nil, fmt.Errorf("systemd: NOTIFY_SOCKET %q: only path and abstract sockets are supported", sock)
	}
	n.addr = &net.UnixAddr{Name: sock, Net: "unixgram"}
	if us := os.Getenv("WATCHDOG_USEC"); us != "" {
		if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
			return n, nil
		}
		v, err := strconv.ParseUint(us, 10, 63)
		if err != nil || v == 0 {
			return nil, fmt.Errorf("systemd: WATCHDOG_USEC %q: want a positive integer", us)
		}
		n.watchdog = time.Duration(v) * time.Microsecond
	}
	return n, nil
}

// Notify sends state, e.g. "READY=1" or "STATUS=connected". Outside
// systemd it does nothing.
func (n *Notifier) Notify(state string) error {
	if n == nil || n.addr == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("systemd: notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("systemd: notify: %w", err)
	}
	return nil
}

// WatchdogInterval is systemd's WatchdogSec, or 0 when no watchdog is set.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Watchdog sends WATCHDOG=1 at half the watchdog interval while healthy()
// is nil, until ctx ends. A failing health check withholds the ping, so
// systemd restarts a daemon that is wedged rather than dead; once healthy()
// is nil again, the ping carries STATUS=running. Without a watchdog it returns at
// once.
func (n *Notifier) Watchdog(ctx context.Context, healthy func() error) error {
	iv := n.WatchdogInterval()
	if iv == 0 {
		return nil
	}
	t := time.NewTicker(iv / 2)
	defer t.Stop()
	unhealthy := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if healthy != nil {
			if err := healthy(); err != nil {
				unhealthy = true
				_ = n.Notify("STATUS=unhealthy: " + err.Error())
				continue
			}
		}
		msg := "WATCHDOG=1"
		if unhealthy {
			// Recovered: the status says so again, as at READY=1.
			msg += "\nSTATUS=running"
		}
		if err := n.Notify(msg); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		unhealthy = false
	}
}
