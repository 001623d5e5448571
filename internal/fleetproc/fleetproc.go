// Package fleetproc runs the dock's processes for the programs that drive
// them as a dock runs them (cmd/fleetdemo, cmd/faults): child processes with
// their logs and an owner that stops them, a free port and the wait for a
// listener, mosquitto as the broker (restartable on its port), gatewayd's
// configuration file, the notify socket systemd gives a Type=notify
// service, log files and the scrape of /metrics. It imports the standard library and internal/mosquittotest.
package fleetproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a long-running child process.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	done chan struct{}
	err  error // the exit status, once done is closed
}

// Group owns processes: StopAll stops every one it started.
type Group struct {
	mu    sync.Mutex
	procs []*Proc
}

// Start starts cmd, with its output to w (nil: discarded), and registers
// it for StopAll. It closes logf, if not nil, once cmd has exited: w may
// write to it until then.
func (g *Group) Start(name string, cmd *exec.Cmd, w io.Writer, logf *os.File) (*Proc, error) {
	if w == nil {
		w = io.Discard
	}
	if cmd.Stdout == nil {
		cmd.Stdout = w
	}
	if cmd.Stderr == nil {
		cmd.Stderr = w
	}
	if err := cmd.Start(); err != nil {
		if logf != nil {
			_ = logf.Close()
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if logf != nil {
			_ = logf.Close()
		}
		close(p.done)
	}()
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
	return p, nil
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit status (an *exec.ExitError, or nil for 0),
// valid once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Pid is the process's ID.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the exit status once exited: the code, or -1 for a signal.
func (p *Proc) ExitCode() int {
	<-p.done
	if p.Cmd.ProcessState == nil {
		return -1
	}
	return p.Cmd.ProcessState.ExitCode()
}

// Stop signals p and waits for it to exit, killing it after timeout.
func (p *Proc) Stop(sig syscall.Signal, timeout time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		_ = p.Cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %v of %v; killed", p.Name, timeout, sig)
	}
}

// StopAll stops every process the group started, newest first, with
// SIGTERM (SIGKILL after 20 s).
func (g *Group) StopAll() {
	g.mu.Lock()
	procs := g.procs
	g.procs = nil
	g.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		_ = procs[i].Stop(syscall.SIGTERM, 20*time.Second)
	}
}

// WaitTCP waits up to 20 s for addr to accept a connection, failing early
// when p exits.
func WaitTCP(ctx context.Context, addr string, p *Proc) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if p.Exited() {
			return fmt.Errorf("%s exited at start: %v", p.Name, p.err)
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("no connection to %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreePort is a TCP port of 127.0.0.1 that nothing listened on a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// GatewayConfig is what gatewayd.toml says for a gateway of the test fleet.
type GatewayConfig struct {
	GatewayID                      string
	Credential, PrivateKey, Root   string // key files
	Database                       string
	Broker                         string // URL
	Metrics                        string // host:port
	AdminSocket                    string
	KeepAlive, AwayAfter, LogLevel string // defaults "5s", "10s", "debug"
	// CAFile, CertFile and KeyFile, if set, are the [mqtt] TLS files (an
	// ssl:// broker with client certificates, deploy/mosquitto).
	CAFile, CertFile, KeyFile string
	// Brokers, if set, are several broker URLs (a cluster's nodes, tried
	// in order on every reconnect) instead of Broker.
	Brokers []string
}

// NewGatewayConfig is the configuration of gateway id whose key files
// are in dir as the key ceremony leaves them (gateway.cwt, gateway.key,
// fleet-root.pem), with its database at database, broker at broker,
// metrics on a free port of 127.0.0.1 and the admin socket in dir/run.
func NewGatewayConfig(dir, id, database, broker string) (GatewayConfig, error) {
	port, err := FreePort()
	if err != nil {
		return GatewayConfig{}, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o700); err != nil {
		return GatewayConfig{}, err
	}
	return GatewayConfig{GatewayID: id, Credential: filepath.Join(dir, "gateway.cwt"), PrivateKey: filepath.Join(dir, "gateway.key"),
		Root: filepath.Join(dir, "fleet-root.pem"), Database: database, Broker: broker,
		Metrics: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), AdminSocket: filepath.Join(dir, "run", "admin.sock")}, nil
}

// TOML is the configuration file.
func (c GatewayConfig) TOML() []byte {
	def := func(s, d string) string {
		if s == "" {
			return d
		}
		return s
	}
	var tls string
	if c.CAFile != "" || c.CertFile != "" {
		tls = fmt.Sprintf("ca_file   = %q\ncert_file = %q\nkey_file  = %q\n", c.CAFile, c.CertFile, c.KeyFile)
	}
	brokers := c.Brokers
	if len(brokers) == 0 {
		brokers = []string{c.Broker}
	}
	quoted := make([]string, len(brokers))
	for i, b := range brokers {
		quoted[i] = strconv.Quote(b)
	}
	return fmt.Appendf(nil, `gateway_id = %q

[keys]
credential  = %q
private_key = %q
fleet_roots = [%q]

[database]
path = %q

[mqtt]
brokers   = [%s]
keepalive = %q
%s
[bluetooth]
adapter    = "hci0"
away_after = %q

[metrics]
listen = %q

[admin]
socket = %q

[log]
level = %q
`, c.GatewayID, c.Credential, c.PrivateKey, c.Root, c.Database, strings.Join(quoted, ", "), def(c.KeepAlive, "5s"), tls,
		def(c.AwayAfter, "10s"), c.Metrics, c.AdminSocket, def(c.LogLevel, "debug"))
}

// NotifySocket is the socket systemd gives a Type=notify service in
// $NOTIFY_SOCKET: a unix datagram socket its notifications (READY=1,
// WATCHDOG=1, STOPPING=1, STATUS=…) arrive on.
type NotifySocket struct {
	Path string
	ln   *net.UnixConn
}

// ListenNotify creates the socket at path.
func ListenNotify(path string) (*NotifySocket, error) {
	_ = os.Remove(path)
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	return &NotifySocket{Path: path, ln: ln}, nil
}

// ErrTimeout is returned by NotifySocket.Read when nothing arrived in time.
var ErrTimeout = errors.New("fleetproc: no notification in time")

// Read returns the next notification, waiting at most timeout.
func (n *NotifySocket) Read(timeout time.Duration) (string, error) {
	buf := make([]byte, 4096)
	_ = n.ln.SetReadDeadline(time.Now().Add(timeout))
	k, err := n.ln.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", ErrTimeout
		}
		return "", err
	}
	return string(buf[:k]), nil
}

// WaitReady waits for READY=1 from p, as systemd does for a Type=notify
// service (TimeoutStartSec), failing early when p exits. It returns the
// notification.
func (n *NotifySocket) WaitReady(ctx context.Context, p *Proc, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if p.Exited() {
			return "", fmt.Errorf("%s exited before READY=1: %v", p.Name, p.err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("no READY=1 from %s within %v", p.Name, timeout)
		}
		m, err := n.Read(200 * time.Millisecond)
		if err != nil {
			continue
		}
		if strings.Contains(m, "READY=1") {
			return m, nil
		}
	}
}

// Close closes and removes the socket.
func (n *NotifySocket) Close() error {
	err := n.ln.Close()
	_ = os.Remove(n.Path)
	return err
}
