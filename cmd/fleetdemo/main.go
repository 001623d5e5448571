// Command fleetdemo shows the gateway exactly as a dock runs it, driven by
// an operator with the operator CLI. Everything it shows is a real process
// built from this repository or installed on the machine: mosquitto as the
// fleet's broker, a private dbus-daemon as the system bus, bluezemu as
// bluetoothd with reference locks of the test fleet "acme" on its virtual
// radio, gatewayd itself (`gatewayd run`, with READY=1 over NOTIFY_SOCKET
// as under systemd), and gatewayctl for the key ceremony, the commands,
// the refusals and the status. It crashes the daemon with commands in
// flight and shows that none is lost, scrapes the metrics, takes an online
// backup, and stops the daemon cleanly.
//
// It is the first part of scripts/demo.sh, which builds the binaries and
// passes their directory with -bin. It exits non-zero on any unexpected
// outcome. It may import everything in the module.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/deploy/mosquitto"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/internal/fleetproc"
	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "fleetdemo:", err)
		}
		os.Exit(1)
	}
}

// fatal satisfies channeltest.TB outside a test: a fixture failure panics
// with an error, which run recovers and returns.
type fatal struct{}

func (fatal) Helper() {}
func (fatal) Fatalf(format string, a ...any) {
	panic(fmt.Errorf(format, a...))
}

const (
	gatewayID = "dock-0042"
	// firstLock is bluezemu's FirstLockID; the other locks follow.
	firstLock = 0x4c4b000000000001
)

// lockID is the ID of bluezemu's lock n (1-based), in hex.
func lockID(n int) string { return fmt.Sprintf("%016x", uint64(firstLock+n-1)) }

// demo holds the running parts.
type demo struct {
	out, errOut io.Writer
	ctx         context.Context
	bin, dir    string
	verbose     bool
	nLocks      int
	// first is the number of the first step (-first); stepNo the next.
	first, stepNo int

	brokerURL   string
	bus         *emulator.Bus
	metricsAddr string
	daemonLog   string
	daemon      *fleetproc.Proc
	// lastScrape is /metrics of the first daemon process, just before it
	// was killed (its counters die with it).
	lastScrape string

	procs fleetproc.Group
}

func (d *demo) say(format string, a ...any) { fmt.Fprintf(d.out, format+"\n", a...) }

// Steps is the number of steps the demo shows (-steps prints it), so
// that scripts/demo.sh numbers the next part's steps on from it.
const Steps = 9

// step starts the demo's next step: a blank line, then its number
// (counting on from -first) and title.
func (d *demo) step(format string, a ...any) {
	if d.stepNo > d.first {
		fmt.Fprintln(d.out)
	}
	d.say("== %d. "+format, append([]any{d.stepNo}, a...)...)
	d.stepNo++
}

// path is a file in the demo's directory.
func (d *demo) path(name string) string { return filepath.Join(d.dir, name) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("fleetdemo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("bin", "", "directory holding the gatewayd, gatewayctl and bluezemu binaries (required)")
	keep := fs.Bool("keep", false, "keep the temporary directory (keys, configuration, database, logs)")
	verbose := fs.Bool("v", false, "stream gatewayd's log to stderr")
	n := fs.Int("locks", 5, "reference locks bluezemu hosts (5..200)")
	first := fs.Int("first", 1, "the number of the first step (scripts/demo.sh numbers its three parts' steps on)")
	steps := fs.Bool("steps", false, "print the number of steps the demo shows, and exit")
	serve := fs.Bool("serve", false, "after the operations step, leave the fleet (broker, bluezemu, gatewayd) running and print commands to try on it, until interrupted (Ctrl-C)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *steps {
		fmt.Fprintln(stdout, Steps)
		return nil
	}
	if *n < 5 || *n > 200 {
		return fmt.Errorf("-locks %d: want 5..200", *n)
	}
	if *bin == "" {
		return errors.New("-bin DIR is required (scripts/demo.sh builds the binaries into it)")
	}
	binDir, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	for _, b := range []string{"gatewayd", "gatewayctl", "bluezemu"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return fmt.Errorf("-bin %s: %w (build it: go build -o DIR/ ./cmd/gatewayd ./cmd/gatewayctl ./cmd/bluezemu)", binDir, err)
		}
	}
	mosq, err := mosquittotest.Binary()
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		return errors.New("dbus-daemon not found: run scripts/deps.sh (apt-get install dbus-daemon)")
	}

	outer := ctx
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "fleetdemo-")
	if err != nil {
		return err
	}
	d := &demo{out: stdout, errOut: stderr, ctx: ctx, bin: binDir, dir: dir, verbose: *verbose, nLocks: *n,
		daemonLog: filepath.Join(dir, "gatewayd.log"), first: *first, stepNo: *first}
	defer func() {
		if *keep {
			fmt.Fprintf(stdout, "\nkept %s\n", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()
	defer d.stopAll()
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(error)
			if !ok {
				panic(r)
			}
			err = e
		}
		if err != nil {
			d.logTail()
		}
	}()

	all := []func() error{d.keys, func() error { return d.broker(mosq) }, d.bluez, d.startDaemon, d.commands,
		d.refusals, d.crash, d.operations, d.stop}
	if *serve {
		// The fleet stays up instead of the clean stop, until interrupted.
		all[len(all)-1] = func() error { return d.serve(outer) }
	}
	for i, step := range all {
		if err := step(); err != nil {
			return err
		}
		if *serve && i == len(all)-1 {
			break // served until interrupted: the interruption is the normal end
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if *serve {
		d.say("\nstopping the demo fleet")
		return nil
	}
	d.say("\nall steps passed")
	return nil
}

// logTail prints the end of the daemon's log after a failure.
func (d *demo) logTail() {
	b, err := os.ReadFile(d.daemonLog)
	if err != nil || d.verbose {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	fmt.Fprintf(d.errOut, "gatewayd's log (last %d lines of %s):\n%s\n", len(lines), d.daemonLog, strings.Join(lines, "\n"))
}

// 1. The key ceremony.
func (d *demo) keys() error {
	d.step("key ceremony with gatewayctl (in %s)", d.dir)
	fleet := channeltest.NewFleet(fatal{}, "acme")
	d.say("   The locks bluezemu hosts belong to the test fleet \"acme\", whose root key is derived from its")
	d.say("   name. In production the fleet root is made with `gatewayctl keygen` on an offline machine and")
	d.say("   never leaves it; here it is the test fleet's, so that the emulated locks trust what it signs.")
	if err := config.WritePrivateKey(d.path("fleet-root.key"), fleet.Root); err != nil {
		return err
	}
	if err := config.WritePublicKey(d.path("fleet-root.pem"), fleet.Root.Public().(ed25519.PublicKey)); err != nil {
		return err
	}
	d.say("   wrote fleet-root.key (private, 0600) and fleet-root.pem (public: what every gateway trusts)")
	for _, k := range []string{"gateway.key", "otto.key", "ada.key", "rider.key"} {
		if _, err := d.ctlOK("keygen", "-o", k); err != nil {
			return err
		}
	}
	for _, a := range [][]string{
		{"-kind", "gateway", "-subject", gatewayID, "-pub", "gateway.key.pub", "-o", "gateway.cwt"},
		{"-kind", "operator", "-role", "operator", "-subject", "otto", "-pub", "otto.key.pub", "-o", "otto.cwt"},
		{"-kind", "operator", "-role", "admin", "-subject", "ada", "-pub", "ada.key.pub", "-o", "ada.cwt"},
	} {
		if _, err := d.ctlOK(append([]string{"issue", "-root", "fleet-root.key"}, a...)...); err != nil {
			return err
		}
	}
	d.say("   otto is an operator (lock, unlock, status); ada an admin (also users, bonds, audit);")
	d.say("   rider.key is a rider's key, which ada will add to a lock.")
	return nil
}

// backends are the backend identities of the demo's MQTT clients
// (gatewayctl): @backend for plain publishing and watching, and one per
// operator, whose commands may be in flight at the same time (one
// identity is one session on the broker); @watch is -serve's
// mosquitto_sub.
var backends = []string{"@backend", "@otto", "@ada", "@watch"}

// mqtt returns gatewayctl's broker flags for the backend identity who.
func (d *demo) mqtt(who string) []string {
	return []string{"-broker", d.brokerURL, "-ca", "certs/ca.crt", "-cert", "certs/" + who + ".crt", "-tlskey", "certs/" + who + ".key"}
}

// 2. The broker.
func (d *demo) broker(bin string) error {
	d.step("the broker: mosquitto with deploy/mosquitto's configuration")
	mdir := d.path("mosquitto")
	if err := os.MkdirAll(d.path("certs"), 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(mdir, 0o700); err != nil {
		return err
	}
	// A throwaway CA: the broker's certificate, the gateway's (CN = its
	// gateway ID) and one per backend identity (CN starting with "@").
	pki, err := mosquitto.NewPKI(d.path("certs"))
	if err != nil {
		return err
	}
	for _, cn := range append([]string{gatewayID}, backends...) {
		if _, err := pki.Issue(cn, false); err != nil {
			return err
		}
	}
	acl, err := mosquitto.ACLWith(backends[1:]...)
	if err != nil {
		return err
	}
	aclFile := filepath.Join(mdir, "gatewayd.acl")
	if err := os.WriteFile(aclFile, []byte(acl), 0o600); err != nil {
		return err
	}
	var lastErr error
	for range 5 {
		port, err := fleetproc.FreePort()
		if err != nil {
			return err
		}
		c, err := mosquitto.Configure(mosquitto.Site{Listen: fmt.Sprintf("%d 127.0.0.1", port),
			CAFile: pki.CAFile(), CertFile: pki.CertFile("server"), KeyFile: pki.KeyFile("server"),
			ACLFile: aclFile, DataDir: mdir, LogFile: filepath.Join(mdir, "mosquitto.log")})
		if err != nil {
			return err
		}
		// Run as root, mosquitto drops to the user "mosquitto", which
		// cannot read our directory; as anyone else it ignores this.
		if u, err := user.Current(); err == nil {
			c = "user " + u.Username + "\n" + c
		}
		conf := filepath.Join(mdir, "mosquitto.conf")
		if err := os.WriteFile(conf, []byte(c), 0o600); err != nil {
			return err
		}
		logf, err := os.Create(filepath.Join(mdir, "stderr.log"))
		if err != nil {
			return err
		}
		p, err := d.procs.Start("mosquitto", exec.Command(bin, "-c", conf), logf, logf)
		if err != nil {
			return err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = fleetproc.WaitTCP(d.ctx, addr, p); lastErr == nil {
			d.brokerURL = "ssl://" + addr
			d.say("   listening on %s (config %s)", d.brokerURL, conf)
			d.say("   deploy/mosquitto/mosquitto.conf with this machine's paths and port: TLS with a client")
			d.say("   certificate for everyone (a throwaway CA in certs/), the certificate's CN as username and")
			d.say("   as client ID (no other client can take the gateway's session over), the per-gateway ACL")
			d.say("   (the gateway %s reads only its commands; @backend, @otto and @ada send them),", gatewayID)
			d.say("   64 KiB packets at most, persistent sessions.")
			return nil
		}
		_ = p.Stop(syscall.SIGKILL, time.Second)
	}
	return fmt.Errorf("mosquitto: %w", lastErr)
}

// 3. The emulated BlueZ.
func (d *demo) bluez() error {
	d.step("emulated BlueZ: a private system bus and bluezemu as bluetoothd")
	bdir := d.path("bus")
	if err := os.MkdirAll(bdir, 0o700); err != nil {
		return err
	}
	var err error
	if d.bus, err = emulator.StartBus(d.ctx, bdir); err != nil {
		return fmt.Errorf("%w (run scripts/deps.sh)", err)
	}
	d.say("   dbus-daemon (system type): %s", d.bus.Addr)
	logf, err := os.Create(d.path("bluezemu.log"))
	if err != nil {
		return err
	}
	args := []string{"-bus", d.bus.Addr, "-locks", strconv.Itoa(d.nLocks)}
	d.say("   $ bluezemu %s", strings.Join(args, " "))
	p, err := d.procs.Start("bluezemu", exec.Command(filepath.Join(d.bin, "bluezemu"), args...), logf, logf)
	if err != nil {
		return err
	}
	conn, err := dbus.Connect(d.bus.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := d.until("bluezemu to own org.bluez", p, func() bool {
		var has bool
		return conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, "org.bluez").Store(&has) == nil && has
	}); err != nil {
		return err
	}
	d.say("   org.bluez is owned; locks %s … %s of fleet \"acme\" advertise on the virtual radio (log: bluezemu.log)",
		lockID(1), lockID(d.nLocks))
	return nil
}

// 4. The daemon.
func (d *demo) startDaemon() error {
	d.step("the daemon: gatewayd run")
	c, err := fleetproc.NewGatewayConfig(d.dir, gatewayID, d.path("gatewayd.db"), d.brokerURL)
	if err != nil {
		return err
	}
	d.metricsAddr = c.Metrics
	c.CAFile, c.CertFile, c.KeyFile = d.path("certs/ca.crt"), d.path("certs/"+gatewayID+".crt"), d.path("certs/"+gatewayID+".key")
	toml := c.TOML()
	if err := os.WriteFile(d.path("gatewayd.toml"), toml, 0o644); err != nil {
		return err
	}
	d.say("   gatewayd.toml: keys from step 1, database gatewayd.db, broker %s,", d.brokerURL)
	d.say("   metrics on %s, admin socket run/admin.sock", d.metricsAddr)
	d.say("   $ DBUS_SYSTEM_BUS_ADDRESS=%s NOTIFY_SOCKET=notify.sock gatewayd run -init -config gatewayd.toml", d.bus.Addr)
	d.say("   (-init: the first start creates the database in a directory that holds other files;")
	d.say("   later starts refuse to run without it, since a lost database loses the journal)")
	msg, err := d.runDaemon()
	if err != nil {
		return err
	}
	d.say("   notify socket, as systemd reads it: %s", strings.ReplaceAll(strings.TrimSpace(msg), "\n", " "))
	if d.verbose {
		d.say("   the daemon's log goes to %s and to stderr", d.daemonLog)
	} else {
		d.say("   the daemon's log: %s (-v streams it)", d.daemonLog)
	}
	d.say("   Its MQTT session is persistent; it publishes its retained status once subscribed to its commands:")
	out, err := d.ctlTimeout(20*time.Second, append(append([]string{"watch", "-n", "1"}, d.mqtt("@backend")...), "-gateway", gatewayID)...)
	if err != nil {
		return err
	}
	if !strings.Contains(out, `online`) {
		return fmt.Errorf("status after start: %q, want online", out)
	}
	return nil
}

// runDaemon starts gatewayd and waits for its READY=1, as systemd does.
// It returns the notification.
func (d *demo) runDaemon() (string, error) {
	ns, err := fleetproc.ListenNotify(d.path("notify.sock"))
	if err != nil {
		return "", err
	}
	defer ns.Close()
	var echo io.Writer
	if d.verbose {
		echo = d.errOut
	}
	w, logf, err := fleetproc.OpenLog(d.daemonLog, echo)
	if err != nil {
		return "", err
	}
	args := []string{"run", "-config", d.path("gatewayd.toml")}
	if _, err := os.Stat(d.path("gatewayd.db")); errors.Is(err, os.ErrNotExist) {
		args = append(args, "-init") // the first start: the directory holds the keys too
	}
	cmd := exec.Command(filepath.Join(d.bin, "gatewayd"), args...)
	cmd.Dir = d.dir
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+d.bus.Addr, "NOTIFY_SOCKET="+ns.Path)
	p, err := d.procs.Start("gatewayd", cmd, w, logf)
	if err != nil {
		return "", err
	}
	d.daemon = p
	start := time.Now()
	m, err := ns.WaitReady(d.ctx, p, 60*time.Second)
	if err != nil {
		return "", err
	}
	d.say("   ready after %v", time.Since(start).Round(time.Millisecond))
	return m, nil
}

// 5. Operator commands.
func (d *demo) commands() error {
	d.step("operator commands with gatewayctl send")
	d.say("   gatewayctl signs each command with the operator's key (COSE_Sign1, the operator's credential")
	d.say("   inside), publishes it with QoS 1 to gatewayd/v1/gw/%s/cmd, and waits for its one result.", gatewayID)
	d.say("   The gateway checks the signature, journals the command, carries it to the lock over the")
	d.say("   EDHOC-secured channel; the lock checks the operator's signature again and runs it.")
	d.say("   The lock signs its result with its own credential key; with -root fleet-root.pem gatewayctl")
	d.say("   checks that signature and prints \"verified: ...\" (docs/mqtt.md, Verifying results).")
	for _, c := range []struct {
		who     string
		lock    int
		op      []string
		explain string
	}{
		{"otto", 1, []string{"unlock"}, "otto unlocks lock 1:"},
		{"otto", 2, []string{"status"}, "otto asks lock 2 for its status:"},
		{"otto", 1, []string{"lock"}, "otto locks lock 1 again:"},
		{"ada", 3, []string{"add-user", "rider-7", "rider.key.pub"}, "ada (admin) adds rider-7 to lock 3:"},
		{"ada", 3, []string{"list-users"}, "ada lists lock 3's users:"},
	} {
		d.say("\n   %s", c.explain)
		r, err := d.send(c.who, c.lock, c.op...)
		if err != nil {
			return err
		}
		if res, _ := parseResult(r); res.Attempts > 1 {
			d.say("   (%d attempts: the gateway retries a lock it cannot reach; just after its start it may not have\n   heard lock %d advertise yet)", res.Attempts, c.lock)
		}
		if c.op[0] == "list-users" && !strings.Contains(r, `"rider-7"`) {
			return errors.New("list-users: rider-7 is not among lock 3's users")
		}
	}
	return nil
}

// result is the part of a result or a notice the demo checks.
type result struct {
	CommandID string `json:"command_id"`
	State     string `json:"state"`
	Status    string `json:"status"`
	Reason    string `json:"reason"`
	Attempts  int    `json:"attempts"`
}

func parseResult(out string) (result, error) {
	var r result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return r, fmt.Errorf("gatewayctl printed no JSON: %v: %q", err, out)
	}
	return r, nil
}

// sendArgs is the command line of a gatewayctl send by who to lock n.
func (d *demo) sendArgs(who string, n int, op ...string) []string {
	args := append([]string{"send", "-key", who + ".key", "-cred", who + ".cwt"}, d.mqtt("@"+who)...)
	return append(append(args, "-gateway", gatewayID, "-lock", lockID(n), "-root", "fleet-root.pem"), op...)
}

// send runs a gatewayctl send that must succeed and returns its output.
func (d *demo) send(who string, n int, op ...string) (string, error) {
	out, code, err := d.ctl(d.sendArgs(who, n, op...)...)
	if err != nil {
		return "", err
	}
	r, err := parseResult(out)
	if err != nil {
		return "", err
	}
	if code != 0 || r.State != "succeeded" {
		return "", fmt.Errorf("gatewayctl send %s: exit %d, state %q, want succeeded", op[0], code, r.State)
	}
	return out, nil
}

// refused runs a gatewayctl send that the gateway must refuse with reason.
func (d *demo) refused(reason string, args ...string) error {
	out, code, err := d.ctl(args...)
	if err != nil {
		return err
	}
	r, err := parseResult(out)
	if err != nil {
		return err
	}
	if code != 3 || r.Reason != reason {
		return fmt.Errorf("gatewayctl send: exit %d, reason %q, want exit 3 and a %s notice", code, r.Reason, reason)
	}
	d.say("   (exit status 3, as expected: refused with %s)", reason)
	return nil
}

// 6. Refusals.
func (d *demo) refusals() error {
	d.step("refusals: the gateway journals only authentic, allowed commands")
	d.say("   Input it refuses gets a notice on gatewayd/v1/gw/%s/rejected, matched by gatewayctl", gatewayID)
	d.say("   through the payload's SHA-256; it is never journaled and never reaches a lock.")

	d.say("\n   otto signs an unlock of lock 2 into a file, for a backend that publishes it itself:")
	if _, err := d.ctlOK("sign", "-key", "otto.key", "-cred", "otto.cwt", "-lock", lockID(2), "-o", "cmd.bin", "unlock"); err != nil {
		return err
	}
	raw := append(append([]string{"send", "-payload", "cmd.bin"}, d.mqtt("@backend")...), "-gateway", gatewayID, "-root", "fleet-root.pem")
	if err := d.sendRaw(raw); err != nil {
		return err
	}
	d.say("\n   the same bytes again (a replay, or a backend resending to be sure): not run twice")
	if err := d.refused("duplicate", raw...); err != nil {
		return err
	}

	d.say("\n   a command altered in transit: the last byte of its signature flipped")
	if _, err := d.ctlOK("sign", "-key", "otto.key", "-cred", "otto.cwt", "-lock", lockID(2), "-o", "cmd2.bin", "lock"); err != nil {
		return err
	}
	b, err := os.ReadFile(d.path("cmd2.bin"))
	if err != nil {
		return err
	}
	b[len(b)-1] ^= 0x01
	if err := os.WriteFile(d.path("cmd2.bin"), b, 0o600); err != nil {
		return err
	}
	if err := d.refused("bad_signature", append(append([]string{"send", "-payload", "cmd2.bin"}, d.mqtt("@backend")...), "-gateway", gatewayID)...); err != nil {
		return err
	}

	d.say("\n   otto, an operator, tries what only an admin may do")
	if err := d.refused("forbidden", d.sendArgs("otto", 3, "add-user", "rider-8", "rider.key.pub")...); err != nil {
		return err
	}

	d.say("\n   bytes that are not a signed command at all")
	if err := os.WriteFile(d.path("garbage.bin"), []byte("unlock everything, please\x00\xff"), 0o600); err != nil {
		return err
	}
	return d.refused("malformed", append(append([]string{"send", "-payload", "garbage.bin"}, d.mqtt("@backend")...), "-gateway", gatewayID)...)
}

// sendRaw sends cmd.bin, an authentic command, with `gatewayctl send
// -payload`, which matches the result by the command ID the bytes carry.
func (d *demo) sendRaw(args []string) error {
	out, code, err := d.ctl(args...)
	if err != nil {
		return err
	}
	r, err := parseResult(out)
	if err != nil {
		return err
	}
	if code != 0 || r.State != "succeeded" {
		return fmt.Errorf("gatewayctl send -payload cmd.bin: exit %d, state %q, want a succeeded result", code, r.State)
	}
	return nil
}

// 7. Crash and recovery.
func (d *demo) crash() error {
	d.step("crash and recovery")
	d.lastScrape, _ = d.scrape()
	d.say("   SIGKILL gatewayd (no clean shutdown, no offline status of its own: the broker publishes its will)")
	if err := d.daemon.Stop(syscall.SIGKILL, 10*time.Second); err != nil {
		return err
	}
	d.say("   while it is down, two operators send commands; the broker acknowledges them and queues them")
	d.say("   in the gateway's persistent session:")
	var bg []*ctlProc
	defer func() {
		for _, p := range bg {
			p.kill()
		}
	}()
	for _, c := range []struct {
		who  string
		lock int
		op   string
	}{{"otto", 4, "unlock"}, {"ada", 5, "status"}} {
		args := append([]string{"send", "-timeout", "60s"}, d.sendArgs(c.who, c.lock, c.op)[1:]...)
		p, err := d.startCtl(args...)
		if err != nil {
			return err
		}
		bg = append(bg, p)
		d.say("   $ gatewayctl %s &", strings.Join(args, " "))
		// gatewayctl says so on stderr once the broker acknowledged it.
		l, err := p.line(d.ctx, 20*time.Second, true)
		if err != nil {
			return fmt.Errorf("gatewayctl send in the background: %w", err)
		}
		d.say("     %s", l)
	}
	d.say("   restart gatewayd:")
	msg, err := d.runDaemon()
	if err != nil {
		return err
	}
	d.say("   notify socket: %s", strings.ReplaceAll(strings.TrimSpace(msg), "\n", " "))
	for i, p := range bg {
		code, err := p.wait(d.ctx, 90*time.Second)
		if err != nil {
			return err
		}
		out := strings.TrimSpace(p.stdout.String())
		d.say("   result of background command %d:", i+1)
		for l := range strings.SplitSeq(out, "\n") {
			d.say("     %s", l)
		}
		r, err := parseResult(out)
		if err != nil {
			return err
		}
		if code != 0 || r.State != "succeeded" {
			return fmt.Errorf("background command %d: exit %d, state %q", i+1, code, r.State)
		}
	}
	d.say("   Both commands the broker accepted while the gateway was dead ran once and got their result:")
	d.say("   the gateway acknowledges (PUBACK) a command only once its journal entry is fsynced, so an")
	d.say("   unacknowledged one is redelivered; a redelivery of a journaled one is deduplicated by its")
	d.say("   command ID; and results stay in the database until the broker acknowledges them.")
	return nil
}

// 8. Operations: metrics and an online backup.
func (d *demo) operations() error {
	d.step("operations: /metrics and an online backup")
	body, err := d.scrape()
	if err != nil {
		return err
	}
	d.say("   GET http://%s/metrics (the restarted process; counters start again at zero):", d.metricsAddr)
	shown := 0
	for _, prefix := range []string{
		"gatewayd_fleet_results_total", "gatewayd_intake_commands_total", "gatewayd_outbox_published_total",
		"gatewayd_outbox_pending", "gatewayd_mqtt_connected",
		"gatewayd_bluez_adapter_up", "gatewayd_bluez_locks_present", "gatewayd_bonds_commits_total",
	} {
		for _, l := range metricLines(body, prefix) {
			d.say("     %s", l)
			shown++
		}
	}
	if shown == 0 {
		return errors.New("/metrics shows no gatewayd_ metric")
	}
	for _, want := range []string{"gatewayd_mqtt_connected 1", "gatewayd_bluez_adapter_up"} {
		if !strings.Contains(body, want) {
			return fmt.Errorf("/metrics lacks %q", want)
		}
	}
	if d.lastScrape != "" {
		d.say("   the first process's refusals, from its last scrape before the SIGKILL:")
		for _, l := range metricLines(d.lastScrape, "gatewayd_intake_rejected_total") {
			d.say("     %s", l)
		}
	}

	d.say("\n   a consistent copy of the database while gatewayd runs (through its admin socket):")
	if _, err := d.run("gatewayd", "db", "backup", "-db", "gatewayd.db", "-socket", "run/admin.sock", "backup.db"); err != nil {
		return err
	}
	if _, err := d.run("gatewayd", "db", "check", "-db", "backup.db"); err != nil {
		return err
	}
	return nil
}

// metricLines are the samples of the metric family prefix in body.
func metricLines(body, prefix string) []string {
	var out []string
	for l := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(l, prefix+"{") || strings.HasPrefix(l, prefix+" ") {
			out = append(out, l)
		}
	}
	return out
}

func (d *demo) scrape() (string, error) {
	return fleetproc.Scrape(d.ctx, d.metricsAddr, 10*time.Second)
}

// 9. A clean stop.
func (d *demo) stop() error {
	d.step("stop: SIGTERM, as systemctl stop sends")
	if err := d.daemon.Stop(syscall.SIGTERM, 60*time.Second); err != nil {
		return err
	}
	switch err := d.daemon.Err(); {
	case err == nil:
		d.say("   gatewayd exited with status 0.")
	default:
		return fmt.Errorf("gatewayd after SIGTERM: %v, want exit status 0", err)
	}
	d.say("   Its retained status, as any subscriber now receives it:")
	out, err := d.ctlTimeout(20*time.Second, append(append([]string{"watch", "-n", "1"}, d.mqtt("@backend")...), "-gateway", gatewayID)...)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "offline") {
		return fmt.Errorf("status after stop: %q, want offline", out)
	}
	return nil
}

// serve leaves the fleet running and prints commands to try on it, until
// ctx (the demo's, without its time limit) ends: Ctrl-C.
func (d *demo) serve(ctx context.Context) error {
	host, port, err := net.SplitHostPort(strings.TrimPrefix(d.brokerURL, "ssl://"))
	if err != nil {
		return err
	}
	ctl := filepath.Join(d.bin, "gatewayctl")
	d.say("\n== serving: the demo fleet runs until Ctrl-C")
	d.say("   broker %s (mosquitto), gateway %s (gatewayd, pid %d), locks %s … %s (bluezemu)",
		d.brokerURL, gatewayID, d.daemon.Pid(), lockID(1), lockID(d.nLocks))
	d.say("   In another terminal, in the demo's directory:")
	d.say("")
	d.say("   cd %s", d.dir)
	d.say("   # a command to lock 1, its result verified by the lock's signature:")
	d.say("   %s", shellJoin(append(append([]string{ctl, "send", "-key", "otto.key", "-cred", "otto.cwt"}, d.mqtt("@otto")...),
		"-gateway", gatewayID, "-lock", lockID(1), "-root", "fleet-root.pem", "status")))
	d.say("   # without -gateway: sent to the gateway that hears the lock (its retained lock presence):")
	d.say("   %s", shellJoin(append(append([]string{ctl, "send", "-key", "ada.key", "-cred", "ada.cwt"}, d.mqtt("@ada")...),
		"-lock", lockID(2), "-root", "fleet-root.pem", "unlock")))
	d.say("   # what the gateway publishes (results, notices, status, lock presence, audit events):")
	// A client ID of its own: mosquitto_sub sends none by default, which
	// the broker refuses (allow_zero_length_clientid false); the broker
	// takes the certificate's CN as the session's ID anyway.
	d.say("   %s", shellJoin([]string{"mosquitto_sub", "-h", host, "-p", port, "-i", "watch", "--cafile", "certs/ca.crt",
		"--cert", "certs/@watch.crt", "--key", "certs/@watch.key", "-t", "gatewayd/v1/gw/#", "-v"}))
	if _, err := exec.LookPath("mosquitto_sub"); err != nil {
		d.say("   (mosquitto_sub: apt-get install mosquitto-clients, or scripts/deps.sh)")
	}
	d.say("   # its metrics and readiness:")
	d.say("   curl -s http://%s/metrics | grep ^gatewayd_fleet", d.metricsAddr)
	d.say("   curl -s http://%s/readyz", d.metricsAddr)
	d.say("   # its log:")
	d.say("   tail -f %s", d.daemonLog)
	d.say("")
	d.say("   Ctrl-C stops the fleet.")
	select {
	case <-ctx.Done():
		return nil
	case <-d.daemon.Done():
		return fmt.Errorf("gatewayd exited while serving: %v (log: %s)", d.daemon.Err(), d.daemonLog)
	}
}

// shellJoin quotes args for a POSIX shell where needed.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]#~=%&;|<>(){}@!") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}

// until polls cond every 20 ms for up to 30 s, failing early when p exits.
func (d *demo) until(what string, p *fleetproc.Proc, cond func() bool) error {
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited while waiting for %s: %v", p.Name, what, p.Err())
		}
		if time.Now().After(deadline) || d.ctx.Err() != nil {
			return fmt.Errorf("timed out waiting for %s", what)
		}
	}
	return nil
}

// stopAll stops every process the demo started, newest first, and the bus.
func (d *demo) stopAll() {
	d.procs.StopAll()
	if d.bus != nil {
		_ = d.bus.Close()
	}
}

// ctl runs gatewayctl in the demo's directory, showing its command line
// and its output; it returns stdout and the exit status.
func (d *demo) ctl(args ...string) (string, int, error) {
	return d.exec(0, "gatewayctl", args...)
}

// ctlOK runs gatewayctl, which must succeed.
func (d *demo) ctlOK(args ...string) (string, error) {
	out, code, err := d.ctl(args...)
	if err == nil && code != 0 {
		err = fmt.Errorf("gatewayctl %s: exit status %d", args[0], code)
	}
	return out, err
}

// ctlTimeout runs gatewayctl, which must succeed within timeout.
func (d *demo) ctlTimeout(timeout time.Duration, args ...string) (string, error) {
	out, code, err := d.exec(timeout, "gatewayctl", args...)
	if err == nil && code != 0 {
		err = fmt.Errorf("gatewayctl %s: exit status %d", args[0], code)
	}
	return out, err
}

// run runs another of the binaries, which must succeed.
func (d *demo) run(name string, args ...string) (string, error) {
	out, code, err := d.exec(0, name, args...)
	if err == nil && code != 0 {
		err = fmt.Errorf("%s %s: exit status %d", name, strings.Join(args, " "), code)
	}
	return out, err
}

func (d *demo) exec(timeout time.Duration, name string, args ...string) (string, int, error) {
	if timeout == 0 {
		timeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(d.ctx, timeout)
	defer cancel()
	d.say("   $ %s %s", name, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, name), args...)
	cmd.Dir = d.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	for _, b := range []*bytes.Buffer{&stderr, &stdout} {
		if s := strings.TrimRight(b.String(), "\n"); s != "" {
			for l := range strings.SplitSeq(s, "\n") {
				d.say("     %s", l)
			}
		}
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return stdout.String(), -1, fmt.Errorf("%s %s: %w", name, args[0], ctx.Err())
	case errors.As(err, &ee):
		return stdout.String(), ee.ExitCode(), nil
	case err != nil:
		return "", -1, err
	}
	return stdout.String(), 0, nil
}

// ctlProc is a gatewayctl running in the background.
type ctlProc struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	// lines are its output lines, stdout's and stderr's separately.
	outLines, errLines chan string
	done               chan struct{}
	err                error
}

func (d *demo) startCtl(args ...string) (*ctlProc, error) {
	cmd := exec.CommandContext(d.ctx, filepath.Join(d.bin, "gatewayctl"), args...)
	cmd.Dir = d.dir
	p := &ctlProc{cmd: cmd, outLines: make(chan string, 64), errLines: make(chan string, 64), done: make(chan struct{})}
	so, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	se, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	scan := func(r io.Reader, ch chan string, keep *bytes.Buffer) {
		defer wg.Done()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if keep != nil {
				keep.WriteString(sc.Text() + "\n")
			}
			select {
			case ch <- sc.Text():
			default:
			}
		}
	}
	wg.Add(2)
	go scan(so, p.outLines, &p.stdout)
	go scan(se, p.errLines, nil)
	go func() { wg.Wait(); p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// line returns the next line of its stdout (or stderr).
func (p *ctlProc) line(ctx context.Context, timeout time.Duration, stderr bool) (string, error) {
	ch := p.outLines
	if stderr {
		ch = p.errLines
	}
	select {
	case l := <-ch:
		return l, nil
	case <-p.done:
		select {
		case l := <-ch:
			return l, nil
		default:
		}
		return "", fmt.Errorf("exited: %v", p.err)
	case <-time.After(timeout):
		return "", fmt.Errorf("nothing within %v", timeout)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// wait waits for it to exit and returns its exit status.
func (p *ctlProc) wait(ctx context.Context, timeout time.Duration) (int, error) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		return -1, fmt.Errorf("gatewayctl %s did not exit within %v", p.cmd.Args[1], timeout)
	case <-ctx.Done():
		p.kill()
		return -1, ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, p.err
}

func (p *ctlProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}
