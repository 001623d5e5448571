package main

import (
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet/operator"
)

// revoke signs a fleet revocation list with the fleet root key
// (docs/protocol.md §5.11) naming every credential to revoke, as
// KIND:SUBJECT (gateway:gw-7, operator:otto, user:rider-1, lock:<16 hex>),
// and writes it to -o (- for stdout) and/or publishes it retained on
// P/fleet/revocations (docs/mqtt.md). A list replaces the previous one
// whole: name every credential still to be revoked. The serial defaults to
// the time in seconds, so a later list is newer.
func revoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("revoke")
	rootPath := fs.String("root", "", "the fleet root's private key")
	serial := fs.Uint64("serial", 0, "the list's serial, above every earlier list's (default: now in Unix seconds)")
	out := fs.String("o", "", "file to write the list to (binary CBOR; - for stdout)")
	cf := addConnFlags(fs, "")
	fs.Lookup("broker").Usage = "MQTT broker URL to publish the list to, retained (from the command line only; TLS and login as send's)"
	prefix := fs.String("prefix", operator.DefaultPrefix, "topic prefix")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the broker")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	// It publishes only with -broker on its command line: a list for the
	// whole fleet goes out when asked, not because a file names a broker.
	// The TLS and login settings may come from the environment or file.
	publish := false
	fs.Visit(func(f *flag.Flag) { publish = publish || f.Name == "broker" && cf.conn.Broker != "" })
	if *rootPath == "" || (*out == "" && !publish) {
		return fmt.Errorf("revoke: -root and at least one of -o and -broker are required: %w", errUsage)
	}
	var kids [][]byte
	for _, a := range fs.Args() {
		kind, sub, ok := strings.Cut(a, ":")
		k, known := kinds[kind]
		if !ok || !known || sub == "" {
			return fmt.Errorf("revoke: %q: want KIND:SUBJECT, KIND one of lock, gateway, operator, user: %w", a, errUsage)
		}
		if k == cred.KindLock {
			sub = strings.ToLower(sub)
		}
		kid, err := cred.KID(k, sub)
		if err != nil {
			return fmt.Errorf("revoke: %q: %v: %w", a, err, errUsage)
		}
		kids = append(kids, kid)
	}
	topic, err := operator.RevocationsTopic(*prefix)
	if err != nil {
		return fmt.Errorf("revoke: %v: %w", err, errUsage)
	}
	root, err := config.ReadPrivateKey(*rootPath)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	now := time.Now()
	if *serial == 0 {
		*serial = uint64(now.Unix())
	}
	raw, err := cred.IssueRevocations(root, cred.RootKID(root.Public().(ed25519.PublicKey)), *serial, now, kids)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	switch *out {
	case "":
	case "-":
		if _, err := stdout.Write(raw); err != nil {
			return err
		}
	default:
		if err := config.WriteFile(*out, raw, 0o644); err != nil {
			return fmt.Errorf("revoke: %w", err)
		}
	}
	if publish {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		o, err := cf.options()
		if err != nil {
			return fmt.Errorf("revoke: %w", err)
		}
		c := mqtt.NewClient(o)
		if err := wait(ctx, c.Connect()); err != nil {
			return fmt.Errorf("revoke: connect to %s: %w", cf.conn.Broker, err)
		}
		defer c.Disconnect(250)
		if err := wait(ctx, c.Publish(topic, 1, true, raw)); err != nil {
			return fmt.Errorf("revoke: publish to %s: %w", topic, err)
		}
	}
	if *out != "-" {
		fmt.Fprintf(stdout, "revocation list %d revoking %d credential(s), %d bytes", *serial, len(kids), len(raw))
		if publish {
			fmt.Fprintf(stdout, ", published retained on %s", topic)
		}
		fmt.Fprintln(stdout)
	}
	return nil
}
