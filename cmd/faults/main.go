// Command faults is gatewayd's fault campaign and soak (issue 12). It runs
// the dock as real processes, as cmd/fleetdemo does: mosquitto with
// persistence as the broker, a private dbus-daemon, bluezemu as bluetoothd
// with reference locks whose flash and ledger survive kill -9 (-state), and
// `gatewayd run` under a supervisor that applies the systemd unit's rules
// (Restart=, RestartSec=, RestartPreventExitStatus=, TimeoutStartSec=, the
// watchdog over NOTIFY_SOCKET and WATCHDOG_USEC). A backend publishes
// signed commands with QoS 1 and a persistent subscriber collects results,
// while the campaign injects faults: broker, bluetoothd and gatewayd
// SIGKILLs, radio drops, aborted connections and a lock out of range, a
// full disk and EPERM on the database (its directory is a small tmpfs), and
// a start on a read-only file system.
//
// Afterwards it checks, against the locks' own ledger of bolt moves and
// commands: every accepted command has exactly one result, none ran twice
// or moved the bolt twice, none was lost, each signer's commands ran in
// counter order at each lock, `gatewayd db check` is clean, and nothing is
// wedged 60 s after the last fault. It prints recovery times per fault kind
// (p50, max) beside the goals, and writes them as JSON with -json.
// Violations make it exit 1; recovery times over goal only with -strict.
//
// With -soak D it runs steady traffic with a fault each minute for D,
// samples gatewayd's RSS, goroutines, file descriptors and D-Bus match
// rules every 10 s, and fails on growth after warm-up.
//
// scripts/faults.sh and scripts/soak.sh build the binaries and run it. It
// may import everything in the module.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "faults:", err)
		}
		os.Exit(1)
	}
}

// options are the command line's.
type options struct {
	bin     string
	short   bool
	strict  bool
	json    string
	keep    bool
	verbose bool
	locks   int
	unit    string
	repeat  int
	soak    time.Duration
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("faults", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.bin, "bin", "", "directory holding the gatewayd, gatewayctl and bluezemu binaries (required)")
	fs.BoolVar(&o.short, "short", false, "one fault of each kind (about 2 minutes; CI)")
	fs.BoolVar(&o.strict, "strict", false, "also fail when a recovery time is over its goal")
	fs.StringVar(&o.json, "json", "", "write the report as JSON to this file")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs, database, ledger)")
	fs.BoolVar(&o.verbose, "v", false, "stream gatewayd's log to stderr")
	fs.IntVar(&o.locks, "locks", 5, "reference locks bluezemu hosts (2..50)")
	fs.StringVar(&o.unit, "unit", "systemd/gatewayd.service", "the systemd unit whose restart and watchdog rules the supervisor applies")
	fs.IntVar(&o.repeat, "n", 5, "faults of each kind (-short: 1)")
	fs.DurationVar(&o.soak, "soak", 0, "run the soak for this long instead of the campaign (at least 3m)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() != 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.bin == "" {
		return o, errors.New("-bin DIR is required (scripts/faults.sh builds the binaries into it)")
	}
	if o.locks < 2 || o.locks > 50 {
		return o, fmt.Errorf("-locks %d: want 2..50", o.locks)
	}
	if o.short {
		o.repeat = 1
	}
	if o.repeat < 1 || o.repeat > 50 {
		return o, fmt.Errorf("-n %d: want 1..50", o.repeat)
	}
	if o.soak != 0 && o.soak < 3*time.Minute {
		return o, fmt.Errorf("-soak %v: want at least 3m (a third of it is warm-up)", o.soak)
	}
	var err error
	if o.bin, err = filepath.Abs(o.bin); err != nil {
		return o, err
	}
	for _, b := range []string{"gatewayd", "gatewayctl", "bluezemu"} {
		if _, err := os.Stat(filepath.Join(o.bin, b)); err != nil {
			return o, fmt.Errorf("-bin %s: %w (build it: go build -o DIR/ ./cmd/gatewayd ./cmd/gatewayctl ./cmd/bluezemu)", o.bin, err)
		}
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	unit, err := readUnit(o.unit)
	if err != nil {
		return err
	}
	mosq, err := mosquittotest.Binary()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "faults-")
	if err != nil {
		return err
	}
	r := &rig{out: stdout, errOut: stderr, bin: o.bin, dir: dir, verbose: o.verbose, nLocks: o.locks, unit: unit, mosq: mosq}
	defer func() {
		r.close()
		if o.keep || err != nil {
			fmt.Fprintf(stdout, "kept %s\n", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()
	limit := 30*time.Minute + time.Duration(o.repeat)*5*time.Minute + 2*o.soak
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	r.ctx = ctx
	if err := r.start(); err != nil {
		return err
	}
	if o.soak > 0 {
		return soak(r, o)
	}
	return campaign(r, o)
}
