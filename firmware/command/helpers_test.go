package command

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

// env is a test fleet with one lock, an admin, an operator, a gateway and a
// user, and a verifier for the lock.
type env struct {
	fleet    *channeltest.Fleet
	lockID   [8]byte
	lock     channeltest.Party
	admin    channeltest.Party
	operator channeltest.Party
	gateway  channeltest.Party
	user     channeltest.Party
	v        *Verifier
}

func newEnv(t testing.TB) *env {
	t.Helper()
	f := channeltest.NewFleet(t, "command-test")
	e := &env{fleet: f}
	e.lock = f.Lock(t, 0xa1b2c3d4e5f60718)
	copy(e.lockID[:], e.lock.Cert.KID)
	e.admin = f.Operator(t, "admin-ann", cred.RoleAdmin)
	e.operator = f.Operator(t, "op-olga", cred.RoleOperator)
	e.gateway = f.Gateway(t, "gw-dock-7")
	e.user = f.Issue(t, cred.Claims{Subject: "rider-rita", Kind: cred.KindUser, Role: cred.RoleRider, Perms: cred.RiderPerms})
	e.v = &Verifier{Roots: f.Roots, LockID: e.lockID, Now: func() time.Time { return f.Now }}
	return e
}

// body returns a valid body for op on the env's lock.
func (e *env) body(op Op, counter uint64) Body {
	var cid [16]byte
	for i := range cid {
		cid[i] = byte(op)<<4 | byte(i)
	}
	return Body{
		LockID:    e.lockID,
		Op:        op,
		Args:      sampleArgs(op),
		CommandID: cid,
		NotAfter:  e.fleet.Now.Add(5 * time.Minute),
		Counter:   counter,
	}
}

// sign signs b as p, failing the test on error.
func (e *env) sign(t testing.TB, p channeltest.Party, b Body) []byte {
	t.Helper()
	s, err := Sign(p.Key, p.Cert.Raw, b)
	if err != nil {
		t.Fatalf("Sign %v: %v", b.Op, err)
	}
	return s
}

var allOps = []Op{OpLock, OpUnlock, OpStatus, OpAddUser, OpRemoveUser, OpListUsers,
	OpAllowBond, OpClearBonds, OpReadAudit, OpSetTime}

var (
	t0      = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	userKey = ed25519.NewKeyFromSeed(channeltest.Seed("rider-rita")).Public().(ed25519.PublicKey)
)

// sampleArgs returns valid, non-trivial arguments for op.
func sampleArgs(op Op) Args {
	switch op {
	case OpAddUser:
		return Args{UserID: "rider-rita", PublicKey: userKey, Role: cred.RoleRider,
			NotBefore: t0, NotAfter: t0.Add(30 * 24 * time.Hour)}
	case OpRemoveUser:
		return Args{UserID: "rider-rita"}
	case OpAllowBond:
		return Args{WindowSeconds: 45}
	case OpReadAudit:
		return Args{FromSeq: 1000, Max: 16}
	case OpSetTime:
		return Args{Time: t0.Add(90 * time.Second)}
	case OpSetRevocations:
		return Args{Revocations: []byte{0x84, 0x40, 0xa0, 0x40, 0x40}}
	case OpEnterDFU:
		h := make([]byte, InitHashLen)
		for i := range h {
			h[i] = 0xd0 | byte(i&0x0f)
		}
		return Args{InitHash: h}
	}
	return Args{}
}

// wantErr fails unless err wraps want and StatusOf(err) is want's status.
func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
	t.Logf("refused: %v", err)
	if s := StatusOf(err); s.Err() != want {
		t.Fatalf("StatusOf(%v) = %v, whose error is not %v", err, s, want)
	}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sampleResult returns a valid result of op with status ok.
func sampleResult(t testing.TB, op Op) Result {
	t.Helper()
	r := Result{RequestID: 77, Status: StatusOK, LockState: StateLocked, Battery: 87,
		Firmware: "1.0.0", Clock: t0}
	var err error
	switch op {
	case OpStatus:
		r.Data, err = EncodeLockStatus(LockStatus{LockoutUntil: t0.Add(time.Minute), Failures: 3, Users: 2, Slots: 16})
	case OpListUsers:
		r.Data, err = EncodeUsers([]UserEntry{
			{Slot: 0, UserID: "rider-rita", Role: cred.RoleRider, NotBefore: t0, NotAfter: t0.Add(time.Hour), KeyID: KeyID(userKey)},
			{Slot: 5, UserID: "rider-rob", Role: cred.RoleRider, NotAfter: t0.Add(2 * time.Hour), KeyID: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}},
		})
	case OpAllowBond:
		r.Data, err = EncodeBondWindow(BondWindow{Passkey: 4821, WindowSeconds: 30, Peer: "DC:A6:32:01:02:03"})
	case OpReadAudit:
		r.Data = []byte{0x81, 0xa2, 0x01, 0x18, 0x64, 0x02, 0x01} // [{1: 100, 2: 1}]
	case OpLock, OpAddUser:
		r.CommandID = make([]byte, 16)
		r.CommandID[0] = byte(op)
	case OpUnlock:
		r.LockState = StateUnlocked
		r.CommandID = make([]byte, 16)
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}
