package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"github.com/gatewayd/gatewayd/config"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

func runT(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(t.Context(), args, &out, &errb)
	return out.String() + errb.String(), err
}

// TestCeremonyAndSign: keys and credentials made by keygen and issue, and
// a command made by sign, verify with the lock's own verifier; the
// counter grows across runs.
func TestCeremonyAndSign(t *testing.T) {
	d := t.TempDir()
	p := func(n string) string { return filepath.Join(d, n) }
	for _, k := range []string{"root.key", "op.key"} {
		if out, err := runT(t, "keygen", "-o", p(k)); err != nil {
			t.Fatal(out, err)
		}
	}
	if st, _ := os.Stat(p("op.key")); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode())
	}
	if _, err := runT(t, "keygen", "-o", p("op.key")); err == nil {
		t.Error("keygen overwrote a key")
	}
	if out, err := runT(t, "issue", "-root", p("root.key"), "-kind", "operator", "-role", "admin", "-subject", "otto",
		"-pub", p("op.key.pub"), "-o", p("op.cwt")); err != nil || !strings.Contains(out, `issued an operator credential for "otto"`) {
		t.Fatal(out, err)
	}
	rootPub, err := config.ReadPublicKey(p("root.key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	roots := cred.Roots{}
	roots.Add(cred.RootKID(rootPub), rootPub)
	raw, _ := os.ReadFile(p("op.cwt"))
	c, err := cred.Parse(raw, roots)
	if err != nil || c.Kind != cred.KindOperator || c.Role != cred.RoleAdmin || c.Subject != "otto" {
		t.Fatalf("credential: %+v %v", c, err)
	}
	lock := "4c4b000000000001"
	var counters []uint64
	for range 2 {
		out, err := runT(t, "sign", "-key", p("op.key"), "-cred", p("op.cwt"), "-lock", lock, "unlock")
		if err != nil {
			t.Fatal(out, err)
		}
		signed, err := hex.DecodeString(strings.TrimSpace(out))
		if err != nil {
			t.Fatal(err)
		}
		var id [8]byte
		hex.Decode(id[:], []byte(lock))
		v := &command.Verifier{Roots: roots, LockID: id}
		got, err := v.Verify(signed, command.OpUnlock)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Body.NotAfter.After(time.Now()) {
			t.Errorf("not-after %v", got.Body.NotAfter)
		}
		counters = append(counters, got.Counter)
	}
	if counters[1] <= counters[0] {
		t.Errorf("counters %v do not grow", counters)
	}
	// A public key file in place of a private one, and an issue with a
	// role that does not fit, are refused.
	if _, err := runT(t, "sign", "-key", p("op.key.pub"), "-cred", p("op.cwt"), "-lock", lock, "unlock"); err == nil {
		t.Error("signed with a public key file")
	}
	if _, err := runT(t, "issue", "-root", p("root.key"), "-kind", "gateway", "-role", "admin", "-subject", "g",
		"-pub", p("op.key.pub"), "-o", p("g.cwt")); !errors.Is(err, errUsage) {
		t.Errorf("gateway with a role: %v", err)
	}
}

func TestCounterNeverGoesBack(t *testing.T) {
	k := filepath.Join(t.TempDir(), "k")
	now := time.Now()
	a, err := nextCounter(k, now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := nextCounter(k, now.Add(-time.Hour)) // the clock stepped back
	if err != nil || b != a+1 {
		t.Errorf("after a clock step back: %d then %d (%v)", a, b, err)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"frob"}, {"sign", "-lock", "zz", "unlock"}, {"issue"}} {
		if _, err := runT(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%q: %v", args, err)
		}
	}
}

// TestTLSFlags: -cert without -tlskey is a usage error, and a -ca file
// without a certificate in it is refused before any connection.
func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"watch", "-broker", "ssl://127.0.0.1:1", "-gateway", "g", "-cert", "c.crt"},
		{"watch", "-broker", "ssl://127.0.0.1:1", "-gateway", "g", "-ca", notPEM},
	} {
		if _, err := runT(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}

// TestVersion: `gatewayctl version` and `--version` print the version,
// commit, build date and Go version, never a bare "(devel)".
func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		var out, errb bytes.Buffer
		if err := run(context.Background(), []string{arg}, &out, &errb); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		s := out.String()
		for _, want := range []string{"gatewayctl version ", "\ncommit ", "\nbuilt ", "\ngo go1."} {
			if !strings.Contains(s, want) {
				t.Errorf("%s: %q lacks %q", arg, s, want)
			}
		}
		if strings.Contains(s, "(devel)") {
			t.Errorf("%s: %q", arg, s)
		}
	}
}
