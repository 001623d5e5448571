package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

func keygen(args []string, stdout, stderr io.Writer) error {
	fs := flags("keygen")
	out := fs.String("o", "", "private key file to write (mode 0600); the public key goes to FILE.pub")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *out == "" || fs.NArg() != 0 {
		return fmt.Errorf("keygen: -o FILE is required: %w", errUsage)
	}
	if _, err := os.Stat(*out); err == nil {
		return fmt.Errorf("keygen: %s exists; refusing to overwrite a key", *out)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	if err := config.WritePrivateKey(*out, key); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := config.WritePublicKey(*out+".pub", pub); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s (private, 0600) and %s.pub\n", *out, *out)
	return nil
}

var kinds = map[string]cred.Kind{"lock": cred.KindLock, "gateway": cred.KindGateway, "operator": cred.KindOperator, "user": cred.KindUser}

func issue(args []string, stdout, stderr io.Writer) error {
	fs := flags("issue")
	rootPath := fs.String("root", "", "the fleet root's private key")
	kind := fs.String("kind", "", "lock, gateway, operator or user")
	subject := fs.String("subject", "", "gateway ID, operator or user ID, or a lock's 16 hex digits")
	role := fs.String("role", "", "operator: operator or admin; user: rider")
	pubPath := fs.String("pub", "", "the subject's public key (PEM)")
	valid := fs.Duration("valid", 365*24*time.Hour, "validity from now")
	out := fs.String("o", "", "credential file to write (CWT, binary)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	k, ok := kinds[*kind]
	if !ok || *rootPath == "" || *subject == "" || *pubPath == "" || *out == "" || fs.NArg() != 0 {
		return fmt.Errorf("issue: -root, -kind (lock|gateway|operator|user), -subject, -pub and -o are required: %w", errUsage)
	}
	r := cred.RoleNone
	switch {
	case k == cred.KindOperator && *role == "admin":
		r = cred.RoleAdmin
	case k == cred.KindOperator && (*role == "operator" || *role == ""):
		r = cred.RoleOperator
	case k == cred.KindUser && (*role == "rider" || *role == ""):
		r = cred.RoleRider
	case *role != "":
		return fmt.Errorf("issue: role %q does not fit kind %s: %w", *role, *kind, errUsage)
	}
	root, err := config.ReadPrivateKey(*rootPath)
	if err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	pub, err := config.ReadPublicKey(*pubPath)
	if err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	sub := *subject
	if k == cred.KindLock {
		sub = strings.ToLower(sub) // a lock's subject is its ID in lowercase hex
	}
	now := time.Now().Truncate(time.Second)
	raw, err := cred.Issue(root, cred.RootKID(root.Public().(ed25519.PublicKey)), cred.Claims{
		Issuer: "fleet-root", Subject: sub, Kind: k, Role: r, Perms: cred.Cap(k, r),
		NotBefore: now.Add(-5 * time.Minute), Expiry: now.Add(*valid), IssuedAt: now, PublicKey: pub,
	})
	if err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	if err := config.WriteFile(*out, raw, 0o644); err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	fmt.Fprintf(stdout, "issued %s %s credential for %q, valid until %s: %s\n", article(*kind), *kind, *subject, now.Add(*valid).UTC().Format(time.RFC3339), *out)
	return nil
}

// article is the indefinite article before word: "an operator", "a lock".
func article(word string) string {
	if word != "" && strings.ContainsRune("aeiouAEIOU", rune(word[0])) {
		return "an"
	}
	return "a"
}
