// Package natstest runs a real clustered MQTT broker: nats-server (Debian's
// 2.9) as a cluster of nodes on free ports of 127.0.0.1, each with its own
// configuration, JetStream store and log in a directory of its own, MQTT
// on every node (sessions, QoS 1 messages and retained messages in
// clustered JetStream, so they survive the loss of a node). A node can be
// killed and restarted on the same ports and store. Why nats-server and
// what its MQTT does and does not do: docs/scaling.md.
//
// StartCluster serves programs (cmd/fleetsim); Start wraps it for tests. It
// imports only the standard library. nats-server comes from
// scripts/deps.sh; when it is missing, Start fails the test (never skips).
package natstest

import (
	"bytes"
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
	"testing"
	"time"
)

// NotFound is the failure message when no nats-server binary is found.
const NotFound = "nats-server not found: run scripts/deps.sh (apt-get install nats-server)"

// Options configures a cluster. The zero value is three nodes with
// nats-server's MQTT defaults.
type Options struct {
	// Nodes is the cluster's size (default 3).
	Nodes int
	// AckWait is the MQTT ack_wait: how long the broker waits for the
	// PUBACK of a QoS 1 message before it redelivers it on the same
	// connection (0 = nats-server's default, 30 s).
	AckWait time.Duration
	// MaxAckPending is the MQTT max_ack_pending: QoS 1 messages sent to
	// a session and not yet acknowledged (0 = nats-server's default, 1024).
	MaxAckPending int
	// StartTimeout bounds the wait for every node to accept an MQTT
	// session (default 60 s, generous: JetStream elects its leaders first).
	StartTimeout time.Duration
	// Log receives each node's stdout and stderr (nil: discarded; the
	// node's own log file is always written).
	Log io.Writer
}

// Cluster is a running cluster of nats-server nodes.
type Cluster struct {
	Nodes []*Node
	opts  Options
}

// Node is one nats-server process of a Cluster (and its successors after
// Restart).
type Node struct {
	Name        string
	MQTTAddr    string // 127.0.0.1:PORT, MQTT clients
	ClientAddr  string // 127.0.0.1:PORT, NATS clients and monitoring
	ClusterAddr string // 127.0.0.1:PORT, routes between nodes
	Dir         string // configuration, store, log
	Conf        string
	LogPath     string
	bin         string
	opts        *Options

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Binary returns the path of nats-server: on PATH, else /usr/sbin.
func Binary() (string, error) {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/nats-server", "/usr/local/bin/nats-server"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", errors.New(NotFound)
}

// Start starts a cluster in t.TempDir() and waits until every node accepts
// an MQTT session. It kills the nodes in t.Cleanup and, when the test
// failed, logs the tail of each node's log.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := StartCluster(ctx, dir, opts)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("%s log (tail):\n%s", n.Name, n.LogTail(40))
			}
		}
	})
	return c
}

// StartCluster starts opts.Nodes nodes under dir (one subdirectory each)
// and waits until every one accepts an MQTT session. A port taken between
// our probe and the node's bind makes it try again with other ports.
func StartCluster(ctx context.Context, dir string, opts Options) (*Cluster, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	var lastErr error
	for range 3 {
		c := &Cluster{opts: opts}
		if lastErr = c.start(ctx, bin, dir); lastErr == nil {
			return c, nil
		}
		c.Close()
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func (c *Cluster) start(ctx context.Context, bin, dir string) error {
	ports, err := freePorts(3 * c.opts.Nodes)
	if err != nil {
		return err
	}
	addr := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	var routes []string
	for i := range c.opts.Nodes {
		routes = append(routes, "nats://"+addr(ports[3*i+2]))
	}
	for i := range c.opts.Nodes {
		n := &Node{
			Name:        fmt.Sprintf("n%d", i+1),
			MQTTAddr:    addr(ports[3*i]),
			ClientAddr:  addr(ports[3*i+1]),
			ClusterAddr: addr(ports[3*i+2]),
			bin:         bin,
			opts:        &c.opts,
		}
		n.Dir = filepath.Join(dir, n.Name)
		n.Conf = filepath.Join(n.Dir, "nats.conf")
		n.LogPath = filepath.Join(n.Dir, "nats.log")
		if err := os.MkdirAll(filepath.Join(n.Dir, "jetstream"), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(n.Conf, n.config(routes, c.opts), 0o600); err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, n)
	}
	// Start all, then wait: JetStream needs a quorum of nodes to elect
	// its meta leader before any node can open an MQTT session.
	for _, n := range c.Nodes {
		if err := n.exec(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	for _, n := range c.Nodes {
		if err := n.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// config is the node's nats-server configuration.
func (n *Node) config(routes []string, o Options) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "server_name: %s\n", n.Name)
	fmt.Fprintf(&b, "listen: %q\n", n.ClientAddr)
	fmt.Fprintf(&b, "log_file: %q\nlogtime: true\n", n.LogPath)
	// Limits for a shared test machine; the fleet's own sizing is in
	// docs/scaling.md.
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}\n", filepath.Join(n.Dir, "jetstream"))
	if o.Nodes > 1 {
		fmt.Fprintf(&b, "cluster {\n  name: fleet\n  listen: %q\n  routes: [%s]\n}\n", n.ClusterAddr, quoteJoin(routes))
	}
	fmt.Fprintf(&b, "mqtt {\n  listen: %q\n", n.MQTTAddr)
	// Sessions, QoS 1 messages and retained messages are replicated on
	// min(3, nodes) nodes: a cluster of three keeps all of them when one
	// node dies.
	fmt.Fprintf(&b, "  stream_replicas: %d\n", min(3, o.Nodes))
	if o.AckWait > 0 {
		fmt.Fprintf(&b, "  ack_wait: %q\n", o.AckWait.String())
	}
	if o.MaxAckPending > 0 {
		fmt.Fprintf(&b, "  max_ack_pending: %d\n", o.MaxAckPending)
	}
	b.WriteString("}\n")
	return b.Bytes()
}

func quoteJoin(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconv.Quote(x)
	}
	return strings.Join(q, ", ")
}

// URLs are the nodes' MQTT addresses for paho, in node order.
func (c *Cluster) URLs() []string {
	u := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		u[i] = n.URL()
	}
	return u
}

// Close kills every node (SIGKILL) and waits for them to exit.
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		n.Kill()
	}
}

// URL is the node's MQTT address: "tcp://127.0.0.1:PORT".
func (n *Node) URL() string { return "tcp://" + n.MQTTAddr }

func (n *Node) exec() error {
	cmd := exec.Command(n.bin, "-c", n.Conf)
	if n.opts.Log != nil {
		w := &prefixWriter{w: n.opts.Log, prefix: n.Name + ": "}
		cmd.Stdout, cmd.Stderr = w, w
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", n.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	return nil
}

// WaitReady waits until the node accepts an MQTT session: a CONNECT with
// a clean session answered by CONNACK 0, which nats-server sends only once
// JetStream (a meta leader, the MQTT streams) is there. It fails at once
// if the node exits.
func (n *Node) WaitReady(ctx context.Context) error {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	var last error
	for {
		select {
		case <-done:
			return fmt.Errorf("%s exited at start; log:\n%s", n.Name, n.LogTail(20))
		default:
		}
		if last = probeMQTT(ctx, n.MQTTAddr, "natstest-probe-"+n.Name); last == nil {
			return nil
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s not ready for MQTT on %s: %w (last: %v)", n.Name, n.MQTTAddr, ctx.Err(), last)
		case <-t.C:
		}
	}
}

// Running reports whether the node's process is running.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Kill stops the node with SIGKILL, as in a crash, and waits for it to
// exit. Safe to call when stopped.
func (n *Node) Kill() { n.signal(syscall.SIGKILL) }

// Stop stops the node with SIGTERM and waits for it to exit.
func (n *Node) Stop() { n.signal(syscall.SIGTERM) }

// Restart starts the node again (killing it first if it runs) on the same
// ports with the same JetStream store, and waits until it accepts an MQTT
// session.
func (n *Node) Restart(ctx context.Context) error {
	n.Kill()
	if err := n.exec(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, n.opts.StartTimeout)
	defer cancel()
	return n.WaitReady(ctx)
}

func (n *Node) signal(sig os.Signal) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// LogTail returns the last n lines of the node's log.
func (n *Node) LogTail(lines int) string {
	data, err := os.ReadFile(n.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	l := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// probeMQTT opens an MQTT 3.1.1 session with a clean session and
// disconnects: nil when the broker answered CONNACK 0.
func probeMQTT(ctx context.Context, addr, clientID string) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var vh bytes.Buffer
	vh.Write([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30}) // level 4, clean session, keepalive 30 s
	vh.Write([]byte{byte(len(clientID) >> 8), byte(len(clientID))})
	vh.WriteString(clientID)
	pkt := append([]byte{0x10, byte(vh.Len())}, vh.Bytes()...) // client IDs here are short: one-byte length
	if _, err := conn.Write(pkt); err != nil {
		return err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		return fmt.Errorf("no CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0 {
		return fmt.Errorf("CONNACK % x", ack)
	}
	_, _ = conn.Write([]byte{0xe0, 0}) // DISCONNECT
	return nil
}

// freePorts returns n distinct free ports of 127.0.0.1, held open together
// so none is handed out twice.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l != "" {
			_, _ = io.WriteString(p.w, p.prefix+l)
		}
	}
	return len(b), nil
}
