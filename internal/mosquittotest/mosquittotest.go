// Package mosquittotest runs a real mosquitto broker for tests: a private
// configuration, persistence directory and log in t.TempDir(), a listener on
// a free port of 127.0.0.1, and Stop, Restart (same port, same persistence)
// and Kill to play a broker that goes away. It imports only the standard
// library. mosquitto comes from scripts/deps.sh; when it is missing the
// helper fails the test (it never skips).
package mosquittotest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configures the broker. The zero value is a broker with mosquitto's
// defaults for in-flight (20) and queued (1000) messages.
type Options struct {
	// MaxInflightMessages is mosquitto's max_inflight_messages (0 = its default, 20).
	MaxInflightMessages int
	// MaxQueuedMessages is mosquitto's max_queued_messages (0 = its default, 1000).
	MaxQueuedMessages int
	// Extra lines appended to the generated mosquitto.conf.
	Extra []string
	// StartTimeout bounds the wait for the port to accept connections
	// (default 20 s, generous for a loaded machine).
	StartTimeout time.Duration
	// Config, when set, makes the whole mosquitto.conf instead of Config
	// and the options above, for a broker listening on 127.0.0.1:port
	// with its persistence in dataDir and its log in logPath (a test of
	// a shipped configuration rewrites its paths and port).
	Config func(port int, dataDir, logPath string) []byte
}

// Broker is one mosquitto process (and its successors after Restart).
type Broker struct {
	bin     string
	dir     string
	conf    string
	logPath string
	port    int
	opts    Options

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// NotFound is the failure message when no mosquitto binary is found.
const NotFound = "mosquitto not found: run scripts/deps.sh (apt-get install mosquitto)"

// Binary returns the path of the mosquitto binary: on PATH, else
// /usr/sbin/mosquitto.
func Binary() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", errors.New(NotFound)
}

// Start starts mosquitto and waits until it accepts connections. It stops
// the broker in t.Cleanup and, when the test failed, logs the tail of the
// broker's log.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(NotFound)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 20 * time.Second
	}
	dir := t.TempDir()
	b := &Broker{
		bin:     bin,
		dir:     dir,
		conf:    filepath.Join(dir, "mosquitto.conf"),
		logPath: filepath.Join(dir, "mosquitto.log"),
		opts:    opts,
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Kill()
		if t.Failed() {
			t.Logf("mosquitto log (tail):\n%s", b.LogTail(60))
		}
	})
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			lastErr = err
			continue
		}
		b.port = port
		if err := b.writeConf(); err != nil {
			t.Fatal(err)
		}
		if lastErr = b.start(); lastErr == nil {
			return b
		}
		// Another process may have taken the port between our probe and
		// mosquitto's bind: try another.
		b.Kill()
	}
	t.Fatalf("mosquittotest: start: %v", lastErr)
	return nil
}

// URL is the broker's address for paho: "tcp://127.0.0.1:PORT".
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Addr is "127.0.0.1:PORT".
func (b *Broker) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// Dir is the broker's temporary directory (configuration, data, log).
func (b *Broker) Dir() string { return b.dir }

// Stop stops mosquitto with SIGTERM, on which it saves its persistence
// database, and waits for it to exit.
func (b *Broker) Stop() { b.signal(syscall.SIGTERM) }

// Kill stops mosquitto with SIGKILL (no persistence save since the last
// autosave) and waits for it to exit. Safe to call when stopped.
func (b *Broker) Kill() { b.signal(syscall.SIGKILL) }

// Restart stops the broker cleanly (if running) and starts it again on the
// same port with the same persistence directory, so persistent sessions and
// their queued QoS 1 messages survive.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	b.Stop()
	if err := b.start(); err != nil {
		t.Fatalf("mosquittotest: restart: %v", err)
	}
}

// Running reports whether the mosquitto process is running.
func (b *Broker) Running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return false
	}
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// LogTail returns the last n lines of the broker's log.
func (b *Broker) LogTail(n int) string {
	data, err := os.ReadFile(b.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Config is a mosquitto.conf for a broker of our own on 127.0.0.1:port:
// anonymous, persistent in dataDir (queued QoS 1 messages and sessions
// survive a restart), logging to logPath, then the extra lines. The demo
// (cmd/fleetdemo) runs its broker with it too.
func Config(port int, dataDir, logPath string, extra ...string) []byte {
	var c bytes.Buffer
	fmt.Fprintf(&c, "listener %d 127.0.0.1\n", port)
	c.WriteString("allow_anonymous true\n")
	// Run as root, mosquitto drops to the user "mosquitto", which cannot
	// write to our temporary directory; as anyone else it ignores this.
	if u, err := user.Current(); err == nil {
		fmt.Fprintf(&c, "user %s\n", u.Username)
	}
	c.WriteString("persistence true\n")
	fmt.Fprintf(&c, "persistence_location %s/\n", dataDir)
	c.WriteString("autosave_interval 1\n")
	fmt.Fprintf(&c, "log_dest file %s\n", logPath)
	for _, l := range extra {
		c.WriteString(l + "\n")
	}
	return c.Bytes()
}

func (b *Broker) writeConf() error {
	if b.opts.Config != nil {
		return os.WriteFile(b.conf, b.opts.Config(b.port, filepath.Join(b.dir, "data"), b.logPath), 0o600)
	}
	var c bytes.Buffer
	c.Write(Config(b.port, filepath.Join(b.dir, "data"), b.logPath, "log_type all", "log_timestamp_format %H:%M:%S"))
	if b.opts.MaxInflightMessages > 0 {
		fmt.Fprintf(&c, "max_inflight_messages %d\n", b.opts.MaxInflightMessages)
	}
	if b.opts.MaxQueuedMessages > 0 {
		fmt.Fprintf(&c, "max_queued_messages %d\n", b.opts.MaxQueuedMessages)
	}
	for _, l := range b.opts.Extra {
		c.WriteString(l + "\n")
	}
	return os.WriteFile(b.conf, c.Bytes(), 0o600)
}

func (b *Broker) start() error {
	cmd := exec.Command(b.bin, "-c", b.conf)
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", b.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	b.mu.Lock()
	b.cmd, b.done = cmd, done
	b.mu.Unlock()

	deadline := time.Now().Add(b.opts.StartTimeout)
	for {
		select {
		case <-done:
			return fmt.Errorf("mosquitto exited at start: %s; log:\n%s", strings.TrimSpace(stderr.String()), b.LogTail(20))
		default:
		}
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mosquitto did not accept connections on %s within %v: %w", b.Addr(), b.opts.StartTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *Broker) signal(sig os.Signal) {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.mu.Unlock()
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
