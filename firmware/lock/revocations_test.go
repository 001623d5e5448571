package lock

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/edhoc"
	"github.com/gatewayd/gatewayd/firmware/lock/flash"
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

// fullList is a list of cred.MaxRevoked kids, the largest the lock takes,
// revoking the given parties and fillers.
func (e *env) fullList(serial uint64, parties ...channeltest.Party) []byte {
	e.t.Helper()
	kids := make([][]byte, 0, cred.MaxRevoked)
	for _, p := range parties {
		kids = append(kids, p.Cert.KID)
	}
	for i := 0; len(kids) < cred.MaxRevoked; i++ {
		kids = append(kids, []byte{0xf0, 0, 0, 0, 0, 0, byte(serial), byte(i)})
	}
	raw, err := cred.IssueRevocations(e.fleet.Root, e.fleet.RootKID, serial, e.fleet.Now, kids)
	if err != nil {
		e.t.Fatal(err)
	}
	return raw
}

// TestRevocationListOnFlashSurvivesRebootAndPowerCuts: the list is stored
// in the lock's flash (firmware/lock/flash, the nRF52832 model): after a
// reboot the lock holds it and enforces it; a power cut at any flash
// operation while two full lists are installed leaves the lock bootable,
// holding the old or the new list (never a mix, never an older one than
// it acknowledged).
func TestRevocationListOnFlashSurvivesRebootAndPowerCuts(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Lockout = LockoutPolicy{Free: 1 << 20, GlobalFailures: 1 << 20} })
	lists := [][]byte{e.fullList(1, e.operator), e.fullList(2, e.admin)}
	handle := func(op command.Op, req command.Request) *command.Result {
		req.Op, req.RequestID = op, 1
		b, err := command.MarshalRequest(&req)
		if err != nil {
			t.Fatal(err)
		}
		r, err := command.ParseResult(op, e.lock.Handle(e.gateway.Cert, Peer{Address: gwAddr}, b))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	deliver := func(list []byte) *command.Result {
		return handle(command.OpSetRevocations, command.Request{Args: command.Args{Revocations: list}})
	}
	// acked is the highest serial whose set-revocations answered ok.
	run := func(path string, faults flash.Faults) (acked uint64) {
		if _, _, err := e.bootOnFlash(t, path, faults); err != nil {
			return 0
		}
		for i, l := range lists {
			if deliver(l).Status == command.StatusOK {
				acked = uint64(i + 1)
			}
		}
		return acked
	}

	// Without faults: installed, and enforced after a reboot.
	path := filepath.Join(t.TempDir(), "flash.img")
	if acked := run(path, flash.Faults{}); acked != 2 {
		t.Fatalf("acked serial %d, want 2", acked)
	}
	if _, _, err := e.bootOnFlash(t, path, flash.Faults{}); err != nil {
		t.Fatal(err)
	}
	if e.lock.RevocationSerial() != 2 {
		t.Fatalf("after reboot the lock holds serial %d, want 2", e.lock.RevocationSerial())
	}
	if r := handle(command.OpUnlock, command.Request{Signed: e.sign(e.admin, e.body(command.OpUnlock, command.Args{}))}); r.Status != command.StatusSignerRejected {
		t.Fatalf("the revoked admin after reboot: %v", r.Status)
	}
	if r := deliver(lists[0]); r.Status != command.StatusReplay {
		t.Fatalf("the older list after reboot: %v", r.Status)
	}

	ops := 0
	run(filepath.Join(t.TempDir(), "count.img"), flash.Faults{Cut: func(op flash.Op) bool { ops = max(ops, op.Index+1); return false }})
	for k := 0; k < ops; k++ {
		path := filepath.Join(t.TempDir(), "flash.img")
		acked := run(path, flash.Faults{Cut: flash.CutAt(k), Seed: uint64(k)})
		if _, _, err := e.bootOnFlash(t, path, flash.Faults{}); err != nil {
			t.Fatalf("cut at op %d: reboot failed: %v", k, err)
		}
		if got := e.lock.RevocationSerial(); got < acked || got > 2 {
			t.Fatalf("cut at op %d: the lock holds serial %d, acknowledged %d", k, got, acked)
		}
		if r := deliver(lists[1]); r.Status != command.StatusOK || e.lock.RevocationSerial() != 2 {
			t.Fatalf("cut at op %d: delivering the newest list after reboot: %v", k, r.Status)
		}
	}
	t.Logf("power cut at each of %d flash operations", ops)
}
