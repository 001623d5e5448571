package command

import (
	"testing"

	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

// TestSigner: a credential of a trusted root is named by its subject,
// whether or not it may sign (a gateway's) and even when the signature is
// forged; a credential of another root, and garbage, are not named: the
// name would be the sender's choice.
func TestSigner(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name string
		p    channeltest.Party
		want string
	}{{"operator", e.operator, "op-olga"}, {"gateway", e.gateway, "gw-dock-7"}} {
		s := e.sign(t, c.p, e.body(OpUnlock, 1))
		if got, ok := e.v.Signer(s); !ok || got != c.want {
			t.Errorf("%s: Signer = %q, %v; want %q", c.name, got, ok, c.want)
		}
		s[len(s)-1] ^= 1 // a forged signature names the same credential
		if got, ok := e.v.Signer(s); !ok || got != c.want {
			t.Errorf("%s forged: Signer = %q, %v; want %q", c.name, got, ok, c.want)
		}
	}
	rogue := channeltest.NewFleet(t, "rogue-fleet").Operator(t, "admin-ann", cred.RoleAdmin)
	if got, ok := e.v.Signer(e.sign(t, rogue, e.body(OpUnlock, 1))); ok || got != "" {
		t.Errorf("rogue root: Signer = %q, %v", got, ok)
	}
	if got, ok := e.v.Signer([]byte("garbage")); ok || got != "" {
		t.Errorf("garbage: Signer = %q, %v", got, ok)
	}
}
