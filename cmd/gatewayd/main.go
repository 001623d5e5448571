// Command gatewayd is the gateway daemon of a bike-sharing fleet (see the
// README): `gatewayd run` runs it (internal/daemon assembles the parts),
// and `gatewayd db backup|check|export|compact` maintain its database
// (bonds/ does the work). main only sets up signals and exit codes; run
// takes the arguments and the output streams, so tests call it directly.
//
// It may import every package of the module.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatewayd/gatewayd/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first SIGTERM stops gatewayd in order; after it, the signals'
	// default action is back, so a second one ends a start or a stop
	// that is stuck at once, instead of being caught and ignored.
	go func() { <-ctx.Done(); stop() }()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "gatewayd:", err)
		os.Exit(2)
	case errors.Is(err, errConfig):
		fmt.Fprintln(os.Stderr, "gatewayd:", err)
		os.Exit(78) // EX_CONFIG: systemd does not restart (RestartPreventExitStatus)
	case errors.Is(err, errTemporary):
		fmt.Fprintln(os.Stderr, "gatewayd:", err)
		os.Exit(75) // EX_TEMPFAIL: systemd restarts (Restart=on-failure)
	default:
		fmt.Fprintln(os.Stderr, "gatewayd:", err)
		os.Exit(1)
	}
}

// errUsage is returned when the command line is wrong; main exits 2.
var errUsage = errors.New("usage")

const rootUsage = `usage: gatewayd COMMAND [ARGS]

Commands:
  run [-config PATH] [-init] run the daemon (default config /etc/gatewayd/gatewayd.toml);
                             -init: create a missing database in a directory that is not empty
  config check [-config PATH]  every problem of a configuration, its keys and files; exit 78 if any
  version, --version         version, commit, build date and Go version of this binary
  db backup  -db PATH FILE   copy the database consistently to FILE (mode 0600)
  db check   -db PATH        bbolt's consistency check and the schema's invariants
  db export  -db PATH        the database as JSON on stdout, without secrets
  db compact -db PATH        rewrite the database without free pages
  db schema  -db PATH        the file's schema version (-build: this build's)

db backup works while gatewayd runs (online, through its admin socket);
stop gatewayd before check, export and compact: they take the file lock.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, rootUsage)
		return fmt.Errorf("no command: %w", errUsage)
	}
	switch args[0] {
	case "run":
		return runDaemon(ctx, args[1:], stderr)
	case "db":
		return runDB(ctx, args[1:], stdout, stderr)
	case "config":
		return runConfig(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "%s %s\n", "gatewayd", version.Get())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, rootUsage)
		return nil
	default:
		fmt.Fprint(stderr, rootUsage)
		return fmt.Errorf("unknown command %q: %w", args[0], errUsage)
	}
}
