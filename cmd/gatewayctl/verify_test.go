package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/fleet/operator"
)

// TestVerifyCommand: a result signed by a lock whose credential gatewayctl
// issued verifies; the same result with its status changed, for another
// command, and a result the gateway made itself do not, and say why.
func TestVerifyCommand(t *testing.T) {
	d := t.TempDir()
	p := func(n string) string { return filepath.Join(d, n) }
	for _, k := range []string{"root.key", "lock.key", "other-root.key"} {
		if out, err := runT(t, "keygen", "-o", p(k)); err != nil {
			t.Fatal(out, err)
		}
	}
	const lockHex = "4c4b000000000007"
	if out, err := runT(t, "issue", "-root", p("root.key"), "-kind", "lock", "-subject", lockHex,
		"-pub", p("lock.key.pub"), "-o", p("lock.cwt")); err != nil {
		t.Fatal(out, err)
	}
	lockKey, err := config.ReadPrivateKey(p("lock.key"))
	if err != nil {
		t.Fatal(err)
	}
	lockCWT, _ := os.ReadFile(p("lock.cwt"))
	lockID, _ := bonds.ParseLockID(lockHex)
	cid := bonds.CommandID{1, 2, 3}
	r := command.Result{RequestID: 1, Status: command.StatusOK, LockState: command.StateUnlocked, Battery: 90,
		Firmware: "1.0.0", Clock: time.Now().Truncate(time.Second), CommandID: cid[:]}
	if err := command.SignResult(lockKey, lockID[:], command.OpUnlock, 42, &r); err != nil {
		t.Fatal(err)
	}
	payload, err := command.MarshalResult(command.OpUnlock, &r)
	if err != nil {
		t.Fatal(err)
	}
	m, err := operator.NewResultMessage(bonds.Result{CommandID: cid, LockID: lockID, Operation: "unlock",
		State: bonds.StateSucceeded, Status: "ok", Payload: payload}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	m.LockCredential = lockCWT
	write := func(name string, m operator.ResultMessage) string {
		b, _ := json.Marshal(m)
		if err := os.WriteFile(p(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p(name)
	}
	good := write("good.json", m)
	out, err := runT(t, "verify", "-root", p("root.key.pub"), "-command-id", cid.String(), "-counter", "42", good)
	if err != nil || !strings.HasPrefix(out, "verified: command "+cid.String()+" unlock: ok, unlocked") || !strings.Contains(out, "signed by lock "+lockHex) {
		t.Fatalf("genuine result: %q, %v", out, err)
	}

	forged := m
	forged.LockState = "locked"
	bad := []struct {
		name string
		args []string
		want string
	}{
		{"forged state", []string{"-root", p("root.key.pub"), write("forged.json", forged)}, "lock_state locked"},
		{"another command", []string{"-root", p("root.key.pub"), "-command-id", bonds.CommandID{9}.String(), good}, "not 09"},
		{"another counter", []string{"-root", p("root.key.pub"), "-counter", "41", good}, "counter 42"},
		{"untrusted root", []string{"-root", p("other-root.key.pub"), good}, "unknown fleet root"},
		{"gateway's own", []string{"-root", p("root.key.pub"), write("expired.json", operator.ResultMessage{CommandID: cid, LockID: lockID,
			Operation: "unlock", State: bonds.StateExpired, Status: "expired", Unsigned: operator.UnsignedGateway})}, "the gateway produced this result"},
	}
	for _, c := range bad {
		out, err := runT(t, append([]string{"verify"}, c.args...)...)
		if !errors.Is(err, errUnverified) || !strings.HasPrefix(out, "UNVERIFIED: ") || !strings.Contains(out, c.want) {
			t.Errorf("%s: %q, %v; want UNVERIFIED saying %q", c.name, out, err, c.want)
		}
	}
	if _, err := runT(t, "verify", good); !errors.Is(err, errUsage) {
		t.Errorf("verify without -root: %v", err)
	}
}
