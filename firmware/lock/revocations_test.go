package lock

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/edhoc"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// revocations issues a list of e's fleet with serial, revoking parties.
func (e *env) revocations(serial uint64, parties ...channeltest.Party) []byte {
	e.t.Helper()
	kids := make([][]byte, 0, len(parties))
	for _, p := range parties {
		kids = append(kids, p.Cert.KID)
	}
	raw, err := cred.IssueRevocations(e.fleet.Root, e.fleet.RootKID, serial, e.fleet.Now, kids)
	if err != nil {
		e.t.Fatal(err)
	}
	return raw
}

func setRevocations(t *testing.T, c *lockclient.Client, list []byte) *command.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.SetRevocations(ctx, list)
	if err != nil {
		t.Fatalf("set-revocations: %v", err)
	}
	return r
}

func lockStatus(t *testing.T, c *lockclient.Client) command.LockStatus {
	t.Helper()
	r := do(t, c, command.Request{Op: command.OpStatus})
	wantStatus(t, r, command.StatusOK)
	s, err := r.LockStatus()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAttackRevokedGatewayHandshakeRefused(t *testing.T) {
	e := newEnv(t)
	stolen := e.fleet.Gateway(t, "gw-stolen")
	// The stolen gateway works until the list reaches the lock.
	c := e.mustConnect(stolen, "AA:BB:CC:00:00:66")
	if s := lockStatus(t, c); s.Revocations != 0 {
		t.Fatalf("a fresh lock reports revocation serial %d", s.Revocations)
	}
	// An honest gateway delivers the list; its own status shows the serial.
	g := e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, setRevocations(t, g, e.revocations(1, stolen)), command.StatusOK)
	if s := lockStatus(t, g); s.Revocations != 1 {
		t.Fatalf("serial %d after set-revocations, want 1", s.Revocations)
	}
	// The stolen gateway's open session loses its rights at once ...
	wantStatus(t, do(t, c, command.Request{Op: command.OpStatus}), command.StatusForbidden)
	// ... and its next handshake is refused as a rejected credential.
	_, err := e.connect(stolen, "AA:BB:CC:00:00:67")
	if err == nil {
		t.Fatal("a revoked gateway completed a handshake")
	}
	if !errors.Is(err, edhoc.ErrPeerError) || !strings.Contains(err.Error(), "credential rejected") {
		t.Fatalf("handshake error %v, want the lock's \"credential rejected\"", err)
	}
	// The honest gateway still works.
	wantStatus(t, do(t, g, command.Request{Op: command.OpStatus}), command.StatusOK)
}

func TestAttackRevokedOperatorCommandRefused(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, gwAddr)
	// A command the operator signed before being revoked, still unexpired.
	signed := e.sign(e.operator, e.body(command.OpUnlock, command.Args{}))
	wantStatus(t, setRevocations(t, c, e.revocations(3, e.operator)), command.StatusOK)
	r := do(t, c, command.Request{Op: command.OpUnlock, Signed: signed})
	wantStatus(t, r, command.StatusSignerRejected)
	if e.act.Moves() != 0 {
		t.Fatal("a revoked operator's command moved the bolt")
	}
	// Another operator is unaffected.
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.admin, e.body(command.OpUnlock, command.Args{}))}), command.StatusOK)
	// A revoked operator cannot open a session of its own either.
	if _, err := e.connect(e.operator, "AA:BB:CC:00:00:70"); err == nil {
		t.Fatal("a revoked operator completed a handshake")
	}
}

func TestAttackOlderRevocationListRefused(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Lockout.Free = 100 })
	c := e.mustConnect(e.gateway, gwAddr)
	old := e.revocations(4)               // revokes nobody
	newer := e.revocations(5, e.operator) // revokes the operator
	wantStatus(t, setRevocations(t, c, newer), command.StatusOK)
	// The old list would un-revoke the operator: refused as a replay.
	wantStatus(t, setRevocations(t, c, old), command.StatusReplay)
	// A different list under the same serial is refused too; the same list
	// again is accepted and changes nothing.
	wantStatus(t, setRevocations(t, c, e.revocations(5)), command.StatusReplay)
	wantStatus(t, setRevocations(t, c, newer), command.StatusOK)
	if e.lock.RevocationSerial() != 5 {
		t.Fatalf("serial %d, want 5", e.lock.RevocationSerial())
	}
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, e.body(command.OpUnlock, command.Args{}))}), command.StatusSignerRejected)
}

func TestAttackRevocationListNotSignedByFleetRoot(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Lockout.Free = 100 })
	c := e.mustConnect(e.gateway, gwAddr)
	rogue := channeltest.NewFleet(t, "rogue")
	// A list that would revoke the honest admin, by another root.
	forged, err := cred.IssueRevocations(rogue.Root, rogue.RootKID, 99, e.fleet.Now, [][]byte{e.admin.Cert.KID})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, setRevocations(t, c, forged), command.StatusSignerRejected)
	// The same under the fleet root's kid: the signature fails.
	forged, _ = cred.IssueRevocations(rogue.Root, e.fleet.RootKID, 99, e.fleet.Now, [][]byte{e.admin.Cert.KID})
	wantStatus(t, setRevocations(t, c, forged), command.StatusBadSignature)
	// A credential is not a list.
	wantStatus(t, setRevocations(t, c, e.gateway.Cert.Raw), command.StatusMalformed)
	if e.lock.RevocationSerial() != 0 {
		t.Fatal("a forged list was installed")
	}
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.admin, e.body(command.OpUnlock, command.Args{}))}), command.StatusOK)
}

func TestRevocationListSurvivesReboot(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, setRevocations(t, c, e.revocations(7, e.operator)), command.StatusOK)
	e.store = e.store.Reboot()
	e.boot()
	if e.lock.RevocationSerial() != 7 {
		t.Fatalf("serial after reboot %d, want 7", e.lock.RevocationSerial())
	}
	c = e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, e.body(command.OpUnlock, command.Args{}))}), command.StatusSignerRejected)
}

func TestRevokedUserHandshakeRefused(t *testing.T) {
	e := newEnv(t)
	u := userParty(e, "rider-lost-phone")
	c := e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, c, command.Request{Op: command.OpAddUser, Signed: e.sign(e.admin,
		e.body(command.OpAddUser, addUserArgs(u, e.fleet.Now.Add(-time.Hour), e.fleet.Now.Add(time.Hour))))}), command.StatusOK)
	e.mustConnect(u, "AA:BB:CC:00:00:99")
	wantStatus(t, setRevocations(t, c, e.revocations(1, u)), command.StatusOK)
	if _, err := e.connect(u, "AA:BB:CC:00:00:98"); err == nil {
		t.Fatal("a revoked user completed a handshake")
	}
}
