package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/internal/fleetproc"
)

// firstLock is the first lock's ID (bluezemu's FirstLockID); lock g of the
// fleet (0-based, across docks) has firstLock+g.
const firstLock = 0x4c4b000000000001

// fatal satisfies channeltest.TB outside a test.
type fatal struct{}

func (fatal) Helper() {}
func (fatal) Fatalf(format string, a ...any) {
	panic(fmt.Errorf(format, a...))
}

// simLock is one reference lock of the fleet: the same object wherever it
// is heard, so its bolt, flash and memory of command IDs travel with it.
type simLock struct {
	g    int // index in the fleet
	id   [8]byte
	hex  string
	addr string
	l    *lock.Lock
	act  *locktest.Actuator
	home int // the dock it starts at
}

func newSimLock(fleet *channeltest.Fleet, g, home int) (*simLock, error) {
	n := uint64(firstLock + g)
	p := fleet.Lock(fatal{}, n)
	act := &locktest.Actuator{}
	l, err := lock.New(lock.Options{Cert: p.Cert, Key: p.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
		Actuator: act, RTC: time.Now, Rand: rand.Reader})
	if err != nil {
		return nil, fmt.Errorf("lock %d: %w", g, err)
	}
	s := &simLock{g: g, l: l, act: act, home: home, addr: fmt.Sprintf("C0:00:00:00:%02X:%02X", g>>8, g&0xff)}
	binary.BigEndian.PutUint64(s.id[:], n)
	s.hex = fmt.Sprintf("%016x", n)
	return s, nil
}

// dock is one gateway's site: its bus, its radio (an emulator in this
// process), its gatewayd process and database.
type dock struct {
	k       int
	id      string // gateway ID
	dir     string
	bus     *emulator.Bus
	emu     *emulator.Emulator
	proc    *fleetproc.Proc
	ns      *fleetproc.NotifySocket
	brokers []string // its configuration's broker URLs, its own node first
	node    int      // index of its first node
	metrics string
}

// startDock starts dock k's bus and radio with its locks, writes its keys
// and configuration, and starts gatewayd (not waiting for READY).
func (s *sim) startDock(k int, locks []*simLock) (*dock, error) {
	d := &dock{k: k, id: fmt.Sprintf("dock-%03d", k), dir: filepath.Join(s.dir, fmt.Sprintf("dock-%03d", k))}
	for _, sub := range []string{"state", "bus"} {
		if err := os.MkdirAll(filepath.Join(d.dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	var err error
	if d.bus, err = emulator.StartBus(s.ctx, filepath.Join(d.dir, "bus")); err != nil {
		return nil, fmt.Errorf("%s: %w (run scripts/deps.sh)", d.id, err)
	}
	d.emu, err = emulator.Start(s.ctx, emulator.Options{Addr: d.bus.Addr, Seed: uint64(k + 1),
		AdapterAddress: fmt.Sprintf("00:AA:00:00:%02X:%02X", k>>8, k&0xff), AwayTimeout: 10 * time.Second})
	if err != nil {
		_ = d.bus.Close()
		return nil, fmt.Errorf("%s: emulator: %w", d.id, err)
	}
	for _, l := range locks {
		if err := d.emu.AddLock(l.l, l.addr, emulator.LockOptions{}); err != nil {
			d.close()
			return nil, err
		}
	}
	// Keys as the key ceremony leaves them: the fleet root's public key,
	// the gateway's key and credential.
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		d.close()
		return nil, err
	}
	now := time.Now()
	raw, err := cred.Issue(s.fleet.Root, s.fleet.RootKID, cred.Claims{Subject: d.id, Kind: cred.KindGateway,
		Perms: cred.GatewayPerms, Issuer: "fleet-root", NotBefore: now.Add(-time.Hour), Expiry: now.Add(24 * time.Hour),
		IssuedAt: now, PublicKey: key.Public().(ed25519.PublicKey)})
	if err != nil {
		d.close()
		return nil, err
	}
	for _, w := range []error{
		config.WritePrivateKey(filepath.Join(d.dir, "gateway.key"), key),
		config.WriteFile(filepath.Join(d.dir, "gateway.cwt"), raw, 0o644),
		config.WritePublicKey(filepath.Join(d.dir, "fleet-root.pem"), s.fleet.Root.Public().(ed25519.PublicKey)),
	} {
		if w != nil {
			d.close()
			return nil, w
		}
	}
	// Its own node first, then the others: the docks spread over the
	// cluster, and each fails over to the next node.
	urls := s.cluster.URLs()
	d.node = k % len(urls)
	for i := range urls {
		d.brokers = append(d.brokers, urls[(d.node+i)%len(urls)])
	}
	c, err := fleetproc.NewGatewayConfig(d.dir, d.id, filepath.Join(d.dir, "state", "gatewayd.db"), "")
	if err != nil {
		d.close()
		return nil, err
	}
	c.Brokers, c.LogLevel = d.brokers, "info"
	d.metrics = c.Metrics
	conf := filepath.Join(d.dir, "gatewayd.toml")
	if err := os.WriteFile(conf, c.TOML(), 0o644); err != nil {
		d.close()
		return nil, err
	}
	if d.ns, err = fleetproc.ListenNotify(filepath.Join(d.dir, "notify.sock")); err != nil {
		d.close()
		return nil, err
	}
	_, logf, err := fleetproc.OpenLog(filepath.Join(d.dir, "gatewayd.log"), nil)
	if err != nil {
		d.close()
		return nil, err
	}
	cmd := exec.Command(filepath.Join(s.o.bin, "gatewayd"), "run", "-config", conf)
	cmd.Dir = d.dir
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+d.ns.Path, "DBUS_SYSTEM_BUS_ADDRESS="+d.bus.Addr)
	if d.proc, err = s.procs.Start(d.id, cmd, logf, logf); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// waitReady waits for gatewayd's READY=1.
func (d *dock) waitReady(ctx context.Context) error {
	if _, err := d.ns.WaitReady(ctx, d.proc, 2*time.Minute); err != nil {
		return fmt.Errorf("%s: %w (log: %s)", d.id, err, filepath.Join(d.dir, "gatewayd.log"))
	}
	return nil
}

// close stops the dock's radio and bus (its gatewayd is the group's).
func (d *dock) close() {
	if d.emu != nil {
		_ = d.emu.Close()
	}
	if d.bus != nil {
		_ = d.bus.Close()
	}
	if d.ns != nil {
		_ = d.ns.Close()
	}
}

// emulatorOpts are the radio options of a lock added at runtime.
func emulatorOpts() emulator.LockOptions { return emulator.LockOptions{} }
