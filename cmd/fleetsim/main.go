// Command fleetsim runs a fleet of gateways on a clustered broker (issue
// 17, docs/scaling.md): a 3-node nats-server cluster (internal/natstest),
// N docks each with its own dbus-daemon, BlueZ emulator hosting 20
// reference locks, database and a real gatewayd process whose
// configuration lists every node (its own first: the docks spread over
// the nodes), and a backend that routes signed commands by the gateways'
// retained lock presence (fleet/route).
//
// It runs commands across the fleet, kills a broker node while they flow,
// moves locks between docks (a lock heard by two docks at once gets the
// same signed unlock from both: the bolt moves once) and measures what
// docs/scaling.md reports: commands per second, latency at the backend,
// broker messages per gateway per minute at idle, the time for a moved
// lock to become reachable at its new dock, and failover time. It fails
// if an acknowledged command is lost, a command gets other than one
// result from a gateway, a bolt moves other than once per successful
// lock or unlock, or retained status and presence did not survive.
//
// The locks' emulators run inside fleetsim rather than as bluezemu
// processes: a lock that roams is one lock (its flash, counters and
// memory of command IDs) heard by two docks' radios, which separate
// processes could not share.
//
//	go build -o /tmp/bin/ ./cmd/gatewayd && go run ./cmd/fleetsim -bin /tmp/bin            # 50 gateways
//	go run ./cmd/fleetsim -bin /tmp/bin -short                                             # 5 gateways (CI)
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "fleetsim:", err)
		}
		os.Exit(1)
	}
}

type options struct {
	bin      string
	gateways int
	locks    int
	traffic  time.Duration
	idle     time.Duration
	keep     bool
	verbose  bool
	json     string
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	var short bool
	fs := flag.NewFlagSet("fleetsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.bin, "bin", "", "directory holding the gatewayd binary (required)")
	fs.BoolVar(&short, "short", false, "the short form: 5 gateways, 15 s of traffic, 20 s idle (CI)")
	fs.IntVar(&o.gateways, "gateways", 50, "docks, each a gatewayd with its own bus, emulator and database (3..500)")
	fs.IntVar(&o.locks, "locks", 20, "locks per dock (2..200)")
	fs.DurationVar(&o.traffic, "traffic", 60*time.Second, "how long commands flow (a broker node is killed halfway)")
	fs.DurationVar(&o.idle, "idle", 60*time.Second, "how long the idle fleet's broker traffic is counted")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs, databases, broker stores)")
	fs.BoolVar(&o.verbose, "v", false, "more progress lines")
	fs.StringVar(&o.json, "json", "", "write the figures as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() != 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if short {
		o.gateways, o.traffic, o.idle = 5, 15*time.Second, 20*time.Second
	}
	if o.bin == "" {
		return o, errors.New("-bin DIR is required (go build -o DIR/ ./cmd/gatewayd)")
	}
	if o.gateways < 3 || o.gateways > 500 {
		return o, fmt.Errorf("-gateways %d: want 3..500", o.gateways)
	}
	if o.locks < 2 || o.locks > 200 {
		return o, fmt.Errorf("-locks %d: want 2..200", o.locks)
	}
	if o.traffic < 5*time.Second || o.idle < 5*time.Second {
		return o, errors.New("-traffic and -idle: want at least 5s")
	}
	var err error
	if o.bin, err = filepath.Abs(o.bin); err != nil {
		return o, err
	}
	if _, err := os.Stat(filepath.Join(o.bin, "gatewayd")); err != nil {
		return o, fmt.Errorf("-bin %s: %w (build it: go build -o DIR/ ./cmd/gatewayd)", o.bin, err)
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "fleetsim-")
	if err != nil {
		return err
	}
	limit := 10*time.Minute + time.Duration(o.gateways)*10*time.Second + 2*(o.traffic+o.idle)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	s := &sim{o: o, out: stdout, dir: dir, ctx: ctx}
	defer func() {
		s.close()
		if o.keep || err != nil {
			fmt.Fprintf(stdout, "kept %s\n", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()
	fig, err := s.run()
	if fig != nil {
		fig.print(stdout)
		if o.json != "" {
			if werr := fig.writeJSON(o.json); werr != nil && err == nil {
				err = werr
			}
		}
	}
	return err
}
