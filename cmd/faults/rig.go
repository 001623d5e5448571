package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
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

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/internal/fleetproc"
)

const (
	gatewayID = "dock-0042"
	// firstLock is bluezemu's FirstLockID; the other locks follow.
	firstLock = 0x4c4b000000000001
)

// lockID is the ID of bluezemu's lock n (0-based), in hex.
func lockID(n int) string { return fmt.Sprintf("%016x", uint64(firstLock+n)) }

// lockAddr is the BLE address bluezemu gives lock n (0-based).
func lockAddr(n int) string { return fmt.Sprintf("C0:00:00:00:%02X:%02X", n>>8, n&0xff) }

// fatal satisfies channeltest.TB outside a test.
type fatal struct{}

func (fatal) Helper() {}
func (fatal) Fatalf(format string, a ...any) {
	panic(fmt.Errorf(format, a...))
}

// rig is the running assembly.
type rig struct {
	out, errOut io.Writer
	ctx         context.Context
	bin, dir    string
	verbose     bool
	nLocks      int
	unit        unitRules
	mosq        string

	procs fleetproc.Group

	broker    *fleetproc.Broker
	brokerURL string
	mu        sync.Mutex
	emu       *fleetproc.Proc

	bus      *emulator.Bus
	emuArgs  []string
	ctlSock  string
	stateDir string // gatewayd's database directory
	tmpfs    bool   // stateDir is a tmpfs of our own (disk faults possible)
	tmpfsErr error  // why not
	metrics  string
	sup      *supervisor
	back     *backend
}

func (r *rig) say(format string, a ...any) { fmt.Fprintf(r.out, format+"\n", a...) }

func (r *rig) path(name string) string { return filepath.Join(r.dir, name) }

// start brings up the keys, the broker, the bus, bluezemu, gatewayd under
// its supervisor, and the backend.
func (r *rig) start() error {
	r.say("== assembly in %s", r.dir)
	for _, step := range []func() error{r.keys, r.startBroker, r.startBluez, r.startState, r.startDaemon} {
		if err := step(); err != nil {
			return err
		}
	}
	b, err := newBackend(r)
	if err != nil {
		return err
	}
	r.back = b
	return nil
}

func (r *rig) close() {
	if r.back != nil {
		r.back.close()
	}
	if r.sup != nil {
		r.sup.stop()
	}
	r.procs.StopAll()
	if r.bus != nil {
		_ = r.bus.Close()
	}
	if r.tmpfs {
		_ = exec.Command("chattr", "-R", "-i", r.stateDir).Run()
		_ = syscall.Unmount(r.stateDir, syscall.MNT_DETACH)
	}
}

func (r *rig) keys() error {
	fleet := channeltest.NewFleet(fatal{}, "acme")
	if err := config.WritePrivateKey(r.path("fleet-root.key"), fleet.Root); err != nil {
		return err
	}
	if err := config.WritePublicKey(r.path("fleet-root.pem"), fleet.Root.Public().(ed25519.PublicKey)); err != nil {
		return err
	}
	for _, k := range []string{"gateway.key", "otto.key", "ada.key"} {
		if err := r.ctl("keygen", "-o", k); err != nil {
			return err
		}
	}
	for _, a := range [][]string{
		{"-kind", "gateway", "-subject", gatewayID, "-pub", "gateway.key.pub", "-o", "gateway.cwt"},
		{"-kind", "operator", "-role", "operator", "-subject", "otto", "-pub", "otto.key.pub", "-o", "otto.cwt"},
		{"-kind", "operator", "-role", "admin", "-subject", "ada", "-pub", "ada.key.pub", "-o", "ada.cwt"},
	} {
		if err := r.ctl(append([]string{"issue", "-root", "fleet-root.key"}, a...)...); err != nil {
			return err
		}
	}
	return nil
}

// ctl runs gatewayctl in the rig's directory; it must succeed.
func (r *rig) ctl(args ...string) error {
	_, err := r.runBin(time.Minute, "gatewayctl", args...)
	return err
}

func (r *rig) runBin(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(r.bin, name), args...)
	cmd.Dir = r.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// startBroker starts mosquitto on a free port, with persistence.
func (r *rig) startBroker() error {
	mdir := r.path("mosquitto")
	b, err := fleetproc.StartBroker(r.ctx, &r.procs, r.mosq, mdir, "log_type error", "log_type warning",
		"log_type notice", "log_type information", "log_timestamp_format %H:%M:%S")
	if err != nil {
		return err
	}
	r.broker, r.brokerURL = b, b.URL()
	r.say("   mosquitto on %s (persistence in %s)", r.brokerURL, mdir)
	return nil
}

func (r *rig) startBluez() error {
	bdir := r.path("bus")
	if err := os.MkdirAll(bdir, 0o700); err != nil {
		return err
	}
	var err error
	if r.bus, err = emulator.StartBus(r.ctx, bdir); err != nil {
		return fmt.Errorf("%w (run scripts/deps.sh)", err)
	}
	r.ctlSock = r.path("bluezemu.sock")
	r.emuArgs = []string{"-bus", r.bus.Addr, "-locks", strconv.Itoa(r.nLocks), "-state", r.path("locks"), "-control", r.ctlSock}
	if err := r.restartBluez(); err != nil {
		return err
	}
	r.say("   dbus-daemon %s; bluezemu %s", r.bus.Addr, strings.Join(r.emuArgs, " "))
	return nil
}

// restartBluez starts bluezemu with the same state directory and waits
// for its control socket.
func (r *rig) restartBluez() error {
	_, logf, err := fleetproc.OpenLog(r.path("bluezemu.log"), nil)
	if err != nil {
		return err
	}
	_ = os.Remove(r.ctlSock)
	p, err := r.procs.Start("bluezemu", exec.Command(filepath.Join(r.bin, "bluezemu"), r.emuArgs...), logf, logf)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.emu = p
	r.mu.Unlock()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if p.Exited() {
			return fmt.Errorf("bluezemu exited at start: %v (log: %s)", p.Err(), r.path("bluezemu.log"))
		}
		if _, err := r.control("ping"); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("bluezemu: no control socket within 30 s")
		}
	}
}

// control sends one command to bluezemu's control socket.
func (r *rig) control(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", r.ctlSock, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		return "", err
	}
	ans, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	if ans = strings.TrimSpace(ans); ans != "ok" {
		return ans, fmt.Errorf("bluezemu %q: %s", cmd, ans)
	}
	return ans, nil
}

// startState makes gatewayd's state directory: a 32 MiB tmpfs of its own,
// so that the campaign can fill it, make the database immutable and
// remount it read-only. Without the privilege to mount (not root), it is
// a plain directory and the disk faults are not run (the report says so).
func (r *rig) startState() error {
	r.stateDir = r.path("state")
	if err := os.MkdirAll(r.stateDir, 0o700); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", r.stateDir, "tmpfs", 0, "size=32m,mode=0700"); err != nil {
		r.tmpfsErr = fmt.Errorf("mount a tmpfs for the state directory: %w (run as root)", err)
		r.say("   state directory %s is not a tmpfs: %v; disk faults will not run", r.stateDir, r.tmpfsErr)
		return nil
	}
	r.tmpfs = true
	if _, err := exec.LookPath("chattr"); err != nil {
		r.tmpfsErr = errors.New("chattr not found: run scripts/deps.sh (apt-get install e2fsprogs)")
	}
	r.say("   state directory %s: a 32 MiB tmpfs", r.stateDir)
	return nil
}

func (r *rig) dbPath() string { return filepath.Join(r.stateDir, "gatewayd.db") }

func (r *rig) startDaemon() error {
	c, err := fleetproc.NewGatewayConfig(r.dir, gatewayID, r.dbPath(), r.brokerURL)
	if err != nil {
		return err
	}
	r.metrics = c.Metrics
	toml := c.TOML()
	if err := os.WriteFile(r.path("gatewayd.toml"), toml, 0o644); err != nil {
		return err
	}
	ns, err := fleetproc.ListenNotify(r.path("notify.sock"))
	if err != nil {
		return err
	}
	r.sup = newSupervisor(r, ns)
	r.sup.start()
	if _, err := r.sup.waitReady(time.Time{}, r.unit.startTimeout+10*time.Second); err != nil {
		return err
	}
	r.say("   gatewayd ready (pid %d), metrics on %s; supervisor: %s", r.sup.pid(), r.metrics, r.unit)
	return nil
}

// daemonCmd is gatewayd run as the unit runs it.
func (r *rig) daemonCmd(notify string) (*exec.Cmd, io.Writer, *os.File, error) {
	var echo io.Writer
	if r.verbose {
		echo = r.errOut
	}
	w, logf, err := fleetproc.OpenLog(r.path("gatewayd.log"), echo)
	if err != nil {
		return nil, nil, nil, err
	}
	cmd := exec.Command(filepath.Join(r.bin, "gatewayd"), "run", "-config", r.path("gatewayd.toml"))
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify,
		"WATCHDOG_USEC="+strconv.FormatInt(r.unit.watchdog.Microseconds(), 10))
	if r.bus != nil {
		cmd.Env = append(cmd.Env, "DBUS_SYSTEM_BUS_ADDRESS="+r.bus.Addr)
	}
	return cmd, w, logf, nil
}

// scrape returns gatewayd's /metrics.
func (r *rig) scrape() (string, error) { return fleetproc.Scrape(r.ctx, r.metrics, 5*time.Second) }

// metric is the value of the sample named exactly name in body.
func metric(body, name string) (float64, bool) {
	for l := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// killBluez SIGKILLs bluezemu.
func (r *rig) killBluez() error {
	r.mu.Lock()
	p := r.emu
	r.mu.Unlock()
	return p.Stop(syscall.SIGKILL, 10*time.Second)
}
