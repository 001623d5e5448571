package command

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/cred"
)

// TestVerifyOperatorUnlock: an operator-role credential signs unlock; the
// lock's verifier accepts it and reports signer, counter and command ID.
func TestVerifyOperatorUnlock(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpUnlock, 41)
	vf, err := e.v.Verify(e.sign(t, e.operator, b), OpUnlock)
	if err != nil {
		t.Fatal(err)
	}
	if !vf.Body.Equal(&b) || vf.Counter != 41 || vf.CommandID != b.CommandID {
		t.Fatalf("verified %+v", vf)
	}
	if vf.Signer == nil || vf.Signer.Subject != "op-olga" || !bytes.Equal(vf.RootKID, e.fleet.RootKID) {
		t.Fatalf("signer %+v", vf.Signer)
	}
	if vf.SignerKey != hex.EncodeToString(e.operator.Cert.KID) {
		t.Fatalf("signer key %q", vf.SignerKey)
	}
}

// TestVerifyOperatorLockAndStatus: the operator role's other operations.
func TestVerifyOperatorLockAndStatus(t *testing.T) {
	e := newEnv(t)
	for _, op := range []Op{OpLock, OpStatus} {
		if _, err := e.v.Verify(e.sign(t, e.operator, e.body(op, 1)), op); err != nil {
			t.Fatalf("%v: %v", op, err)
		}
	}
}

// TestVerifyAdminEverySignableOp: an admin may sign every op but
// allow-bond, which no role may sign.
func TestVerifyAdminEverySignableOp(t *testing.T) {
	e := newEnv(t)
	for i, op := range allOps {
		_, err := e.v.Verify(e.sign(t, e.admin, e.body(op, uint64(i+1))), op)
		if op == OpAllowBond {
			wantErr(t, err, ErrForbidden)
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", op, err)
		}
	}
}

// TestVerifyAdminAddUser: the arguments come back exactly as signed.
func TestVerifyAdminAddUser(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpAddUser, 7)
	vf, err := e.v.Verify(e.sign(t, e.admin, b), OpAddUser)
	if err != nil {
		t.Fatal(err)
	}
	a := vf.Body.Args
	if a.UserID != "rider-rita" || !bytes.Equal(a.PublicKey, userKey) || a.Role != cred.RoleRider ||
		!a.NotBefore.Equal(t0) || !a.NotAfter.Equal(t0.Add(30*24*time.Hour)) {
		t.Fatalf("args %+v", a)
	}
}

// TestVerifyRootSetTime: the fleet root signs set-time itself.
func TestVerifyRootSetTime(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpSetTime, 3)
	s, err := SignAsRoot(e.fleet.Root, e.fleet.RootKID, b)
	if err != nil {
		t.Fatal(err)
	}
	vf, err := e.v.Verify(s, OpSetTime)
	if err != nil {
		t.Fatal(err)
	}
	if vf.Signer != nil || vf.SignerKey != "root:"+hex.EncodeToString(e.fleet.RootKID) ||
		!vf.Body.Args.Time.Equal(b.Args.Time) || !bytes.Equal(vf.RootKID, e.fleet.RootKID) {
		t.Fatalf("verified %+v", vf)
	}
}

// TestVerifyAdminSetTime: an admin may set the time as well.
func TestVerifyAdminSetTime(t *testing.T) {
	e := newEnv(t)
	if _, err := e.v.Verify(e.sign(t, e.admin, e.body(OpSetTime, 1)), OpSetTime); err != nil {
		t.Fatal(err)
	}
}

// TestSignAsRootOnlySetTime: the root signer refuses anything else.
func TestSignAsRootOnlySetTime(t *testing.T) {
	e := newEnv(t)
	_, err := SignAsRoot(e.fleet.Root, e.fleet.RootKID, e.body(OpUnlock, 1))
	wantErr(t, err, ErrForbidden)
}

// TestSignDeterministic: the same inputs give the same bytes.
func TestSignDeterministic(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpLock, 9)
	if !bytes.Equal(e.sign(t, e.operator, b), e.sign(t, e.operator, b)) {
		t.Fatal("signatures differ")
	}
}

// TestSignRefusesBadInputs: invalid bodies and keys do not sign.
func TestSignRefusesBadInputs(t *testing.T) {
	e := newEnv(t)
	for name, b := range map[string]Body{
		"counter 0":      func() Body { b := e.body(OpLock, 1); b.Counter = 0; return b }(),
		"counter 2^53+1": func() Body { b := e.body(OpLock, MaxCounter+1); return b }(),
		"no not_after":   func() Body { b := e.body(OpLock, 1); b.NotAfter = time.Time{}; return b }(),
		"args of other":  func() Body { b := e.body(OpLock, 1); b.Args.UserID = "x"; return b }(),
	} {
		if _, err := Sign(e.operator.Key, e.operator.Cert.Raw, b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Sign(e.operator.Key, e.operator.Cert.Raw, e.body(0, 1)); !errors.Is(err, ErrUnknownOp) {
		t.Errorf("op 0: %v", err)
	}
	if _, err := Sign(e.operator.Key[:32], e.operator.Cert.Raw, e.body(OpLock, 1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("short key: %v", err)
	}
	if _, err := Sign(e.operator.Key, []byte{0xa0}, e.body(OpLock, 1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("credential not an array: %v", err)
	}
	if _, err := Sign(e.operator.Key, append(bytes.Clone(e.operator.Cert.Raw), 0), e.body(OpLock, 1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("credential with trailing bytes: %v", err)
	}
}

// TestVerifyIsStateless: Verify accepts the same command twice; counters
// and command IDs are the caller's to track.
func TestVerifyIsStateless(t *testing.T) {
	e := newEnv(t)
	s := e.sign(t, e.operator, e.body(OpUnlock, 1))
	for range 2 {
		if _, err := e.v.Verify(s, OpUnlock); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVerifyRenewedCredentialKeepsSignerKey: a re-issued credential of the
// same operator has the same SignerKey, so its counter continues.
func TestVerifyRenewedCredentialKeepsSignerKey(t *testing.T) {
	e := newEnv(t)
	renewed := e.fleet.Issue(t, cred.Claims{Subject: "op-olga", Kind: cred.KindOperator, Role: cred.RoleOperator,
		Perms: cred.OperatorPerms, NotBefore: e.fleet.Now.Add(-time.Hour), Expiry: e.fleet.Now.Add(time.Hour)})
	if bytes.Equal(renewed.Cert.Raw, e.operator.Cert.Raw) {
		t.Fatal("not renewed")
	}
	a, err := e.v.Verify(e.sign(t, e.operator, e.body(OpLock, 1)), OpLock)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.v.Verify(e.sign(t, renewed, e.body(OpLock, 2)), OpLock)
	if err != nil {
		t.Fatal(err)
	}
	if a.SignerKey != b.SignerKey {
		t.Fatalf("signer keys %q and %q", a.SignerKey, b.SignerKey)
	}
}

// TestVerifyAtNotAfterBoundary: accepted one second before not_after,
// expired at it.
func TestVerifyAtNotAfterBoundary(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpLock, 1)
	b.NotAfter = e.fleet.Now.Add(time.Second)
	s := e.sign(t, e.operator, b)
	if _, err := e.v.Verify(s, OpLock); err != nil {
		t.Fatal(err)
	}
	v := *e.v
	v.Now = func() time.Time { return b.NotAfter }
	_, err := v.Verify(s, OpLock)
	wantErr(t, err, ErrExpired)
}

// TestRequiresSignature is the table of docs/protocol.md §12.3.
func TestRequiresSignature(t *testing.T) {
	signed := map[Op]bool{OpLock: true, OpUnlock: true, OpAddUser: true, OpRemoveUser: true,
		OpClearBonds: true, OpSetTime: true}
	for _, op := range allOps {
		for _, k := range []cred.Kind{cred.KindGateway, cred.KindOperator, cred.KindUser, cred.KindLock} {
			want := signed[op]
			if k == cred.KindUser && (op == OpLock || op == OpUnlock) {
				want = false
			}
			if got := RequiresSignature(op, k); got != want {
				t.Errorf("RequiresSignature(%v, %v) = %v", op, k, got)
			}
		}
	}
	if !RequiresSignature(0, cred.KindUser) || !RequiresSignature(12, cred.KindOperator) {
		t.Error("undefined ops must fail closed")
	}
}

// TestAuthorizeUnsigned: who may ask what without a signature.
func TestAuthorizeUnsigned(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		peer *cred.Cert
		op   Op
		want error
	}{
		{e.user.Cert, OpUnlock, nil},
		{e.user.Cert, OpLock, nil},
		{e.user.Cert, OpStatus, nil},
		{e.user.Cert, OpListUsers, ErrForbidden},
		{e.user.Cert, OpAllowBond, ErrForbidden},
		{e.gateway.Cert, OpStatus, nil},
		{e.gateway.Cert, OpReadAudit, nil},
		{e.gateway.Cert, OpAllowBond, nil},
		{e.gateway.Cert, OpUnlock, ErrForbidden},
		{e.gateway.Cert, OpListUsers, ErrForbidden},
		{e.operator.Cert, OpStatus, nil},
		{e.operator.Cert, OpUnlock, ErrForbidden},
		{e.admin.Cert, OpListUsers, nil},
		{e.admin.Cert, OpReadAudit, nil},
		{e.admin.Cert, OpAddUser, ErrForbidden},
		{e.admin.Cert, OpSetTime, ErrForbidden},
		{e.admin.Cert, OpAllowBond, ErrForbidden},
		{e.lock.Cert, OpStatus, ErrForbidden},
		{nil, OpStatus, ErrForbidden},
	} {
		req := &Request{Op: c.op, Args: sampleArgs(c.op)}
		vf, err := e.v.Authorize(req, c.peer)
		name := "nil"
		if c.peer != nil {
			name = c.peer.Subject
		}
		if c.want == nil {
			if err != nil || vf != nil {
				t.Errorf("%s %v: %v, %v", name, c.op, vf, err)
			}
			continue
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s %v: %v, want %v", name, c.op, err, c.want)
		}
	}
}

// TestAuthorizeSignedOverGateway: a gateway session transports an
// operator's signed unlock; the signer's authority decides.
func TestAuthorizeSignedOverGateway(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpUnlock, 5)
	req := &Request{Op: OpUnlock, RequestID: 1, Signed: e.sign(t, e.operator, b)}
	vf, err := e.v.Authorize(req, e.gateway.Cert)
	if err != nil || vf == nil || !vf.Body.Equal(&b) {
		t.Fatalf("%+v %v", vf, err)
	}
}

// TestAuthorizeExpiredPeer: a session peer whose credential expired during
// the session is refused for unsigned ops.
func TestAuthorizeExpiredPeer(t *testing.T) {
	e := newEnv(t)
	v := *e.v
	v.Now = func() time.Time { return e.gateway.Cert.Expiry }
	_, err := v.Authorize(&Request{Op: OpStatus}, e.gateway.Cert)
	wantErr(t, err, ErrForbidden)
}
