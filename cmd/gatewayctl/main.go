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
//     (the locks' audit entries);
//   - revoke: a fleet revocation list signed by the fleet root, written to
//     a file and/or published retained to every gateway.
//   - verify: check a result's lock signature (docs/mqtt.md); send and
//     watch check it too when given the fleet root (-root).
//   - dfu keygen, package, verify: lock firmware packages, offline
//     (docs/dfu.md): the fleet DFU key, packages as nrfutil builds them
//     with the init hash an enter-dfu names, and the gateway's checks.
//
// send and watch take the broker's settings (URL, TLS, login) from flags,
// GATEWAYCTL_* environment variables or a TOML file (conn.go), in that
// order of precedence.
//
// Commands and results follow docs/mqtt.md. Each command's -h lists its
// flags and their defaults on stdout. The exit status:
//
//	0  done: for send, the command succeeded (and was verified, with -root)
//	1  failed: a file, the broker, a timeout waiting for the result
//	2  usage: a wrong or missing flag or argument, or a configuration file
//	   with an unknown key or bad TOML
//	3  refused or failed: the gateway refused the command, or its result
//	   is not succeeded (failed, expired, rejected); the notice or result
//	   is on stdout
//	4  unverified: send with -root got a succeeded result whose lock
//	   signature does not verify; verify found the result unverified
//
// main only sets up signals and the exit status (exitCode); run takes the
// arguments and streams, so tests call it.
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
	"slices"
	"strings"
	"syscall"

	"github.com/gatewayd/gatewayd/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if code := exitCode(err, os.Stderr); code != exitOK {
		os.Exit(code)
	}
}

// The exit statuses; the package documentation and usage say what each
// means.
const (
	exitOK         = 0
	exitFailed     = 1
	exitUsage      = 2
	exitNotOK      = 3
	exitUnverified = 4
)

// exitCode is the exit status for run's error, which it prints on stderr
// unless the result, notice or verdict on stdout already says it.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "gatewayctl:", err)
		return exitUsage
	case errors.Is(err, errNotOK):
		return exitNotOK
	case errors.Is(err, errUnverified):
		return exitUnverified
	default:
		fmt.Fprintln(stderr, "gatewayctl:", err)
		return exitFailed
	}
}

var (
	// errUsage is returned when the command line is wrong; exit 2.
	errUsage = errors.New("usage")
	// errNotOK is returned by send when the command's result is not
	// succeeded, or the gateway refused it; exit 3.
	errNotOK = errors.New("command did not succeed")
)

const usage = `usage: gatewayctl COMMAND [FLAGS] [ARGS]

Key ceremony (docs/operations.md):
  keygen -o FILE                      Ed25519 key: FILE (PEM PKCS #8, 0600) and FILE.pub (PEM)
  issue  -root ROOT.key -kind K -subject S -pub FILE.pub [-role R] [-valid D] -o FILE.cwt
                                      a credential signed by the fleet root

Commands (docs/mqtt.md):
  sign  -key OP.key -cred OP.cwt -lock ID [-valid D] [-o FILE] OP [ARGS]
  send  -key OP.key -cred OP.cwt -broker URL [-gateway G] -lock ID [-prefix P] [-timeout D] [-root ROOT.pub] [TLS] OP [ARGS]
  watch -broker URL -gateway G [-prefix P] [-root ROOT.pub] [TLS]
  verify -root ROOT.pub [-command-id ID] [-counter N] [-lock-cred LOCK.cwt] [RESULT.json]

Without -gateway, send reads the gateways' retained lock presence
(P/gw/+/locks, P/gw/+/status) and sends to the gateway that hears -lock:
not offline, verified first, then the strongest signal (-find-wait D,
default 1s: how long to wait for more retained messages).

With -root (repeatable: one per trusted fleet root), send and watch check
each result's lock signature and print "verified: ..." or "UNVERIFIED: ..."
(send on stderr, after the JSON on stdout; watch after the message). A
result is the lock's word only when verified; send exits 4 when it is not.
verify reads one result message (a file or stdin) and exits 0 only when
verified (4 when not).

Revocation (docs/mqtt.md, run where the fleet root key is):
  revoke -root ROOT.key [-serial N] [-o FILE|-] [-broker URL [-prefix P] [TLS]] KIND:SUBJECT...
                                      a revocation list naming every credential to revoke

Lock firmware (docs/dfu.md, offline; gatewayctl dfu -h):
  dfu keygen -o FILE                  the fleet DFU key (P-256): FILE (PEM, 0600) and FILE.pub
  dfu package -key KEY -app APP.bin -fw-version N -hw-version N -sd-req 0xID[,0xID] -o PKG.zip
                                      a signed package, as nrfutil pkg generate; prints its init hash
  dfu verify -pub PUB.pem [-hw-version N] [-sd 0xID] [-lock-fw-version N] PKG.zip
                                      the checks a gateway and the lock's bootloader make

TLS (an ssl:// broker): [-ca CA.crt] [-cert CLIENT.crt -tlskey CLIENT.key] [-servername NAME]
Login: [-username U -password-file FILE]
The broker settings (-broker, except revoke's, and the ones above) may also come from
GATEWAYCTL_BROKER, _CA, _CERT, _KEY, _SERVERNAME, _USERNAME, _PASSWORD_FILE,
or from -config FILE (TOML; default ~/.config/gatewayd/gatewayctl.toml):
a flag wins over the environment, the environment over the file.

version, --version: version, commit, build date and Go version.
COMMAND -h, help COMMAND: the command's flags and their defaults.

Exit status: 0 done; 1 failed (a file, the broker, no result in time);
2 usage; 3 the gateway refused the command or its result is not
succeeded; 4 the result's lock signature did not verify (send -root,
verify).

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
	case "dfu":
		return dfuCmd(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "%s %s\n", "gatewayctl", version.Get())
		return nil
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && synopsis[strings.Join(args[1:], " ")] != "" {
			return run(ctx, append(slices.Clone(args[1:]), "-h"), stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q: %w", args[0], errUsage)
	}
}

// synopsis is each command's usage line, for its -h.
var synopsis = map[string]string{
	"keygen": "-o FILE",
	"issue":  "-root ROOT.key -kind K -subject S -pub FILE.pub [-role R] [-valid D] -o FILE.cwt",
	"sign":   "-key OP.key -cred OP.cwt -lock ID [-valid D] [-o FILE] OP [ARGS]",
	"send":   "-key OP.key -cred OP.cwt [-broker URL] -gateway G -lock ID [FLAGS] OP [ARGS]",
	"watch":  "[-broker URL] -gateway G [FLAGS]",
	"revoke": "-root ROOT.key [-serial N] [-o FILE|-] [-broker URL [FLAGS]] KIND:SUBJECT...",
	"verify": "-root ROOT.pub [-command-id ID] [-counter N] [-lock-cred LOCK.cwt] [RESULT.json]",
	// dfu's own usage is dfuUsage; these are its subcommands'.
	"dfu":         "SUBCOMMAND [FLAGS] [ARGS]",
	"dfu keygen":  "-o FILE",
	"dfu package": "-key KEY -app APP.bin -fw-version N -hw-version N -sd-req 0xID[,0xID] -o PKG.zip",
	"dfu verify":  "-pub PUB.pem [-hw-version N] [-sd 0xID] [-lock-fw-version N] PKG.zip",
}

// flags is a command's flag set; parse it with parse. The flag package
// prints nothing itself: parse prints -h's help, and main the errors.
func flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses a command's arguments. -h or -help prints the command's
// usage, flags and defaults on stdout and returns flag.ErrHelp (exit 0); a
// wrong flag is a usage error (exit 2).
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(stdout, "usage: gatewayctl %s %s\n\nFlags:\n", fs.Name(), synopsis[fs.Name()])
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		switch fs.Name() {
		case "sign", "send":
			fmt.Fprint(stdout, "\nOP is lock, unlock, status, list-users, clear-bonds, read-audit,\nadd-user USER_ID USER.pub [NOT_AFTER], or remove-user USER_ID.\n")
		}
		if fs.Lookup("broker") != nil {
			fmt.Fprint(stdout, "\n"+connectionHelp)
		}
		if fs.Name() == "revoke" {
			fmt.Fprint(stdout, "revoke publishes only with -broker on its command line.\n")
		}
		if strings.HasPrefix(fs.Name(), "dfu ") {
			fmt.Fprint(stdout, "\nExit status: 0 done; 1 failed (a file, or the package refused: the reason\nis on stderr); 2 usage (gatewayctl -h).\n")
			return err
		}
		fmt.Fprint(stdout, "\nExit status: 0 done; 1 failed; 2 usage; 3 refused or not succeeded;\n4 unverified (gatewayctl -h).\n")
		return err
	default:
		return fmt.Errorf("%s: %v (gatewayctl %s -h lists its flags): %w", fs.Name(), err, fs.Name(), errUsage)
	}
}
