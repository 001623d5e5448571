// Command bluezemu runs the BlueZ emulator (bluez/emulator) on a bus: it
// owns org.bluez and hosts reference locks of a test fleet
// (firmware/channel/channeltest, keys derived from the fleet's name), so a
// gateway can discover, connect, pair with and command them on a machine
// without Bluetooth. The bus is normally a private system-type bus; its
// address comes from -bus or DBUS_SYSTEM_BUS_ADDRESS.
//
// With -dfu-key each lock is hosted whole (firmware/lock/device):
// after an authorised enter-dfu its bootloader serves the Secure DFU
// service at the lock's address plus one (docs/dfu.md).
//
// It runs until SIGINT or SIGTERM. It may import the standard library,
// bluez/emulator and firmware/ packages.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/device"
	"github.com/gatewayd/gatewayd/firmware/lock/flash"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
)

// FirstLockID is the ID of the first hosted lock; the others follow.
const FirstLockID = 0x4c4b000000000001

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bluezemu:", err)
		os.Exit(1)
	}
}

// fatal satisfies channeltest.TB outside a test: a fixture failure
// panics with an error, which run recovers and returns.
type fatal struct{}

func (fatal) Helper() {}
func (fatal) Fatalf(format string, a ...any) {
	panic(fmt.Errorf(format, a...))
}

func run(ctx context.Context, args []string, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("bluezemu", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bus := fs.String("bus", os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"), "bus address (default $DBUS_SYSTEM_BUS_ADDRESS)")
	adapter := fs.String("adapter", "hci0", "adapter name")
	n := fs.Int("locks", 3, "number of reference locks to host")
	fleetName := fs.String("fleet", "acme", "test fleet name (keys are derived from it)")
	seed := fs.Uint64("seed", 1, "radio seed")
	mtu := fs.Int("mtu", emulator.DefaultMTU, "largest ATT MTU the adapter offers (ExchangeMTU); a connection gets the smaller of it and the lock's (247)")
	radio := fs.Duration("radio", emulator.DefaultRadioInterval, "radio tick")
	exchange := fs.Duration("exchange-latency", 0, "delay of each GATT write to Inbox and each notification from Outbox")
	dropRate := fs.Float64("drop-rate", 0, "probability in [0,1] that a GATT write is the last before the connection drops")
	abortRate := fs.Float64("abort-rate", 0, "probability in [0,1] that a Connect fails with le-connection-abort-by-local")
	stateDir := fs.String("state", "", "keep the locks' flash, the adapter's bonds and the locks' ledger of bolt moves and commands in this directory, across restarts (default: in memory)")
	ctlPath := fs.String("control", "", "listen on this unix socket for fault commands (abort, drop, leave, enter, clear ADDR)")
	dfuKey := fs.String("dfu-key", "", "host each lock whole, application and bootloader (firmware/lock/device), whose bootloader takes packages signed by the fleet DFU key whose public key (PEM, PKIX) is in this file: after an authorised enter-dfu it serves the Secure DFU service at the lock's address+1 (docs/dfu.md); default: locks without DFU")
	fwVersion := fs.Uint("fw-version", 10000, "with -dfu-key: the application version the locks run at start (10203 is 1.2.3)")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bus == "" {
		return errors.New("no bus: set -bus or DBUS_SYSTEM_BUS_ADDRESS")
	}
	if *n < 0 || *n > 65536 {
		return fmt.Errorf("-locks %d: want 0..65536", *n)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				err = fmt.Errorf("fixture: %w", e)
				return
			}
			panic(r)
		}
	}()
	fleet := channeltest.NewFleet(fatal{}, *fleetName)
	var (
		led   *ledger
		bf    bondsFile
		saved []string
	)
	if *stateDir != "" {
		if err := os.MkdirAll(*stateDir, 0o700); err != nil {
			return err
		}
		if led, err = openLedger(filepath.Join(*stateDir, "ledger.jsonl")); err != nil {
			return err
		}
		defer led.Close()
		bf = bondsFile{filepath.Join(*stateDir, "adapter-bonds")}
		if saved, err = bf.load(); err != nil {
			return err
		}
	}
	var dfuPub *ecdsa.PublicKey
	if *dfuKey != "" {
		if dfuPub, err = readDFUKey(*dfuKey); err != nil {
			return err
		}
	}
	emu, err := emulator.Start(ctx, emulator.Options{Addr: *bus, Adapter: *adapter, Seed: *seed, Bonds: saved,
		Logger: log, MTU: *mtu, RadioInterval: *radio, ExchangeLatency: *exchange, DropRate: *dropRate, AbortRate: *abortRate})
	if err != nil {
		return err
	}
	defer func() { _ = emu.Close() }()
	for i := range *n {
		id := FirstLockID + uint64(i)
		p := fleet.Lock(fatal{}, id)
		opts := lock.Options{Cert: p.Cert, Key: p.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
			Actuator: &locktest.Actuator{}, RTC: time.Now, Rand: rand.Reader, Logger: log}
		if led != nil {
			f, err := flash.Open(flashPath(*stateDir, id), flash.Options{})
			if err != nil {
				return fmt.Errorf("lock %d: %w", i, err)
			}
			defer f.Close()
			opts.Store = f
			hexID := fmt.Sprintf("%016x", id)
			opts.Audit = ledgerAudit{led: led, lock: hexID}
			act := &locktest.Actuator{}
			act.SetBeforeMove(func(target command.LockState) error {
				return led.add(LedgerEntry{Lock: hexID, Kind: "move", Target: target.String()})
			})
			opts.Actuator = act
		}
		var a [2]byte
		binary.BigEndian.PutUint16(a[:], uint16(i))
		addr := fmt.Sprintf("C0:00:00:00:%02X:%02X", a[0], a[1])
		var l *lock.Lock
		if dfuPub != nil {
			// The bootloader's bank and settings are in memory: an
			// update lasts until bluezemu stops.
			dev, err := device.New(device.Options{Lock: opts, Address: addr,
				Bootloader: target.Options{Key: dfuPub, Firmware: []byte(fmt.Sprintf("reference lock application %d", *fwVersion)),
					Device: dfu.Device{HWVersion: 52, SoftDeviceFWID: 0x0101, AppVersion: uint32(*fwVersion), BootloaderVersion: 1},
					Logger: log}})
			if err != nil {
				return fmt.Errorf("lock %d: %w", i, err)
			}
			if err := emu.AddDevice(dev, addr, emulator.LockOptions{}); err != nil {
				return err
			}
			if l, err = dev.Lock(); err != nil {
				return fmt.Errorf("lock %d: %w", i, err)
			}
		} else {
			if l, err = lock.New(opts); err != nil {
				return fmt.Errorf("lock %d: %w", i, err)
			}
			if err := emu.AddLock(l, addr, emulator.LockOptions{}); err != nil {
				return err
			}
		}
		lid := l.ID()
		log.Info("hosting lock", "address", addr, "id", fmt.Sprintf("%x", lid[:]), "dfu", dfuPub != nil)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if led != nil {
		wg.Add(1)
		go func() { defer wg.Done(); keepBonds(ctx, emu, bf, saved, log) }()
	}
	if *ctlPath != "" {
		_ = os.Remove(*ctlPath)
		ln, err := net.Listen("unix", *ctlPath)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); serveControl(ctx, ln, emu, log) }()
	}
	log.Info("org.bluez is up", "bus", *bus, "adapter", emu.AdapterPath(), "locks", *n)
	<-ctx.Done()
	log.Info("stopping")
	return nil
}

// readDFUKey reads the fleet DFU key's public half: a PEM "PUBLIC KEY"
// (PKIX) of a P-256 key, as `openssl ec -pubout` writes it.
func readDFUKey(path string) (*ecdsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-dfu-key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("-dfu-key %s: want a PEM PUBLIC KEY block", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("-dfu-key %s: %w", path, err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("-dfu-key %s: want an ECDSA P-256 key (the fleet DFU key)", path)
	}
	return pub, nil
}
