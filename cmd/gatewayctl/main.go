// Command gatewayctl is the fleet operator's tool for gatewayd:
//
//   - keygen and issue: the fleet's key ceremony (run issue on the offline
//     machine that holds the fleet root key): Ed25519 keys in PEM, and CWT
//     credentials for locks, gateways, operators and users;
//   - sign: an operator-signed command (COSE_Sign1), written to a file or
//     stdout, for a backend that publishes it itself;
//   - send: sign a command and publish it to a gateway over MQTT, then
//     wait for its one result (or the gateway's refusal notice);
//   - watch: print a gateway's results, refusal notices, status and events
//     (the locks' audit entries).
//   - revoke: a fleet revocation list signed by the fleet root, written to
//     a file and/or published retained to every gateway.
//   - verify: check a result's lock signature (docs/mqtt.md); send and
//     watch check it too when given the fleet root (-root).
//
// Commands and results follow docs/mqtt.md. main only sets up signals and
// exit codes; run takes the arguments and streams, so tests call it.
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
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "gatewayctl:", err)
		os.Exit(2)
	case errors.Is(err, errNotOK), errors.Is(err, errUnverified):
		os.Exit(1) // the result, or the verdict, is on stdout
	default:
		fmt.Fprintln(os.Stderr, "gatewayctl:", err)
		os.Exit(1)
	}
}

var (
	// errUsage is returned when the command line is wrong; exit 2.
	errUsage = errors.New("usage")
	// errNotOK is returned by send when the command's result is not
	// succeeded, or the gateway refused it; exit 1.
	errNotOK = errors.New("command did not succeed")
)

const usage = `usage: gatewayctl COMMAND [FLAGS] [ARGS]

Key ceremony (docs/operations.md):
  keygen -o FILE                      Ed25519 key: FILE (PEM PKCS #8, 0600) and FILE.pub (PEM)
  issue  -root ROOT.key -kind K -subject S -pub FILE.pub [-role R] [-valid D] -o FILE.cwt
                                      a credential signed by the fleet root

Commands (docs/mqtt.md):
  sign  -key OP.key -cred OP.cwt -lock ID [-valid D] [-o FILE] OP [ARGS]
  send  -key OP.key -cred OP.cwt -broker URL -gateway G -lock ID [-prefix P] [-timeout D] [-root ROOT.pub] [TLS] OP [ARGS]
  watch -broker URL -gateway G [-prefix P] [-root ROOT.pub] [TLS]
  verify -root ROOT.pub [-command-id ID] [-counter N] [-lock-cred LOCK.cwt] [RESULT.json]

With -root (repeatable: one per trusted fleet root), send and watch check
each result's lock signature and print "verified: ..." or "UNVERIFIED: ..."
(send on stderr, after the JSON on stdout; watch after the message). A
result is the lock's word only when verified; send exits 1 when it is not.
verify reads one result message (a file or stdin) and exits 0 only when
verified.

Revocation (docs/mqtt.md, run where the fleet root key is):
  revoke -root ROOT.key [-serial N] [-o FILE|-] [-broker URL [-prefix P] [TLS]] KIND:SUBJECT...
                                      a revocation list naming every credential to revoke

TLS (an ssl:// broker): [-ca CA.crt] [-cert CLIENT.crt -tlskey CLIENT.key]

version, --version: version, commit, build date and Go version.

OP is lock, unlock, status, list-users, clear-bonds, read-audit,
add-user USER_ID USER.pub [NOT_AFTER], or remove-user USER_ID.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("no command: %w", errUsage)
	}
	switch args[0] {
	case "keygen":
		return keygen(args[1:], stdout, stderr)
	case "issue":
		return issue(args[1:], stdout, stderr)
	case "sign":
		return sign(args[1:], stdout, stderr)
	case "send":
		return send(ctx, args[1:], stdout, stderr)
	case "watch":
		return watch(ctx, args[1:], stdout, stderr)
	case "revoke":
		return revoke(ctx, args[1:], stdout, stderr)
	case "verify":
		return verify(args[1:], os.Stdin, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "%s %s\n", "gatewayctl", version.Get())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q: %w", args[0], errUsage)
	}
}

func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gatewayctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	return fs
}
