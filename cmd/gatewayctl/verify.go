package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet/operator"
)

// errUnverified is returned by verify when the result is not verified
// (unsigned, or its signature refused), and by send with -root when a
// succeeded result is; exit 4.
var errUnverified = errors.New("result not verified")

// rootFlags is the repeatable -root flag: fleet root public keys (PEM),
// trusted for the lock's credential.
type rootFlags []string

func (r *rootFlags) String() string { return strings.Join(*r, ",") }
func (r *rootFlags) Set(v string) error {
	*r = append(*r, v)
	return nil
}

// roots reads the fleet roots; nil when none was given.
func (r rootFlags) roots() (cred.Roots, error) {
	if len(r) == 0 {
		return nil, nil
	}
	roots := cred.Roots{}
	for _, p := range r {
		pub, err := config.ReadPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("-root: %w", err)
		}
		roots.Add(cred.RootKID(pub), pub)
	}
	return roots, nil
}

// verdict verifies a result message as o says and returns the line to
// print: "verified: …" or "UNVERIFIED: …", and the error (nil when
// verified). It never prints a signature.
func verdict(body []byte, o operator.VerifyOptions) (string, error) {
	var m operator.ResultMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return "UNVERIFIED: not a result message: " + err.Error(), fmt.Errorf("%w: %v", errUnverified, err)
	}
	if o.Roots == nil {
		return "UNVERIFIED: no -root given to check the lock's signature", fmt.Errorf("%w: no -root", errUnverified)
	}
	v, err := operator.VerifyResult(&m, o)
	if err != nil {
		return "UNVERIFIED: " + err.Error(), fmt.Errorf("%w: %w", errUnverified, err)
	}
	return "verified: " + v.String(), nil
}

func verify(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flags("verify")
	var rf rootFlags
	fs.Var(&rf, "root", "a fleet root public key (PEM); repeat for several (required)")
	cmdID := fs.String("command-id", "", "the command's ID (32 hex digits): refuse the result of any other command")
	counter := fs.Uint64("counter", 0, "the command's counter, if known")
	lockCred := fs.String("lock-cred", "", "the lock's credential (CWT) from your records, instead of the one in the message")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if len(rf) == 0 || fs.NArg() > 1 {
		return fmt.Errorf("verify -root ROOT.pub [-command-id ID] [-counter N] [-lock-cred LOCK.cwt] [RESULT.json]: %w", errUsage)
	}
	roots, err := rf.roots()
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	o := operator.VerifyOptions{Roots: roots, Counter: *counter}
	if *cmdID != "" {
		b, err := hex.DecodeString(*cmdID)
		if err != nil || len(b) != len(bonds.CommandID{}) {
			return fmt.Errorf("-command-id %q: want 32 hex digits: %w", *cmdID, errUsage)
		}
		o.CommandID = bonds.CommandID(b)
	}
	if *lockCred != "" {
		if o.LockCredential, err = os.ReadFile(*lockCred); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
	}
	in := stdin
	if fs.NArg() == 1 && fs.Arg(0) != "-" {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		defer f.Close()
		in = f
	}
	body, err := io.ReadAll(io.LimitReader(in, 1<<20))
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	line, err := verdict(body, o)
	fmt.Fprintln(stdout, line)
	return err
}
