package command

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

// The attacks of the design brief (§2, §5) on signed commands. Each test
// asserts the exact sentinel and status the lock (and the gateway, which
// runs the same Verifier) answers.

// An operator-role credential signs add-user: its role lacks it.
func TestAttackOperatorRoleSignsAddUser(t *testing.T) {
	e := newEnv(t)
	_, err := e.v.Verify(e.sign(t, e.operator, e.body(OpAddUser, 1)), OpAddUser)
	wantErr(t, err, ErrForbidden)
}

// An operator-role credential signs remove-user and clear-bonds.
func TestAttackOperatorRoleSignsAdminOps(t *testing.T) {
	e := newEnv(t)
	for _, op := range []Op{OpRemoveUser, OpClearBonds, OpListUsers, OpReadAudit} {
		_, err := e.v.Verify(e.sign(t, e.operator, e.body(op, 1)), op)
		wantErr(t, err, ErrForbidden)
	}
}

// set-time signed by an operator-role (not admin) credential.
func TestAttackOperatorRoleSignsSetTime(t *testing.T) {
	e := newEnv(t)
	_, err := e.v.Verify(e.sign(t, e.operator, e.body(OpSetTime, 1)), OpSetTime)
	wantErr(t, err, ErrForbidden)
}

// An operator credential whose issuer restricted it to status signs
// unlock: its effective permissions lack unlock.
func TestAttackRestrictedOperatorSignsUnlock(t *testing.T) {
	e := newEnv(t)
	p := e.fleet.Issue(t, cred.Claims{Subject: "op-status-only", Kind: cred.KindOperator,
		Role: cred.RoleOperator, Perms: cred.PermStatus})
	_, err := e.v.Verify(e.sign(t, p, e.body(OpUnlock, 1)), OpUnlock)
	wantErr(t, err, ErrForbidden)
}

// An operator-role credential that claims admin permissions (an issuer's
// mistake) still cannot add users: the role's cap applies.
func TestAttackOperatorRoleClaimingAdminPerms(t *testing.T) {
	e := newEnv(t)
	p := e.fleet.Issue(t, cred.Claims{Subject: "op-overclaim", Kind: cred.KindOperator,
		Role: cred.RoleOperator, Perms: cred.AdminPerms})
	_, err := e.v.Verify(e.sign(t, p, e.body(OpAddUser, 1)), OpAddUser)
	wantErr(t, err, ErrForbidden)
}

// A stolen gateway signs unlock with its own credential and key. A
// gateway-kind signer is refused as signer_rejected (step 4: only operator
// credentials sign commands), before its signature or role is looked at.
func TestAttackGatewayCredentialSignsUnlock(t *testing.T) {
	e := newEnv(t)
	_, err := e.v.Verify(e.sign(t, e.gateway, e.body(OpUnlock, 1)), OpUnlock)
	wantErr(t, err, ErrSignerRejected)
}

// Even for an op a gateway may ask unsigned (status), a gateway never
// signs: signer_rejected.
func TestAttackGatewayCredentialSignsStatus(t *testing.T) {
	e := newEnv(t)
	_, err := e.v.Verify(e.sign(t, e.gateway, e.body(OpStatus, 1)), OpStatus)
	wantErr(t, err, ErrSignerRejected)
}

// A gateway credential that claims unlock (an issuer's mistake) is still
// refused as a signer.
func TestAttackGatewayCredentialClaimingUnlock(t *testing.T) {
	e := newEnv(t)
	p := e.fleet.Issue(t, cred.Claims{Subject: "gw-overclaim", Kind: cred.KindGateway, Perms: cred.PermAll})
	_, err := e.v.Verify(e.sign(t, p, e.body(OpUnlock, 1)), OpUnlock)
	wantErr(t, err, ErrSignerRejected)
}

// A rider's credential signs unlock for a lock it is not installed on.
func TestAttackUserCredentialSigns(t *testing.T) {
	e := newEnv(t)
	_, err := e.v.Verify(e.sign(t, e.user, e.body(OpUnlock, 1)), OpUnlock)
	wantErr(t, err, ErrSignerRejected)
}

// A lock's credential (extracted from another lock) signs.
func TestAttackLockCredentialSigns(t *testing.T) {
	e := newEnv(t)
	other := e.fleet.Lock(t, 2)
	_, err := e.v.Verify(e.sign(t, other, e.body(OpUnlock, 1)), OpUnlock)
	wantErr(t, err, ErrSignerRejected)
}

// A gateway session sends unlock without any signature.
func TestAttackGatewayUnsignedUnlock(t *testing.T) {
	e := newEnv(t)
	_, err := e.v.Authorize(&Request{Op: OpUnlock, RequestID: 1}, e.gateway.Cert)
	wantErr(t, err, ErrForbidden)
}

// An admin session sends add-user unsigned: its session alone does not
// authorise it.
func TestAttackAdminSessionUnsignedAddUser(t *testing.T) {
	e := newEnv(t)
	_, err := e.v.Authorize(&Request{Op: OpAddUser, Args: sampleArgs(OpAddUser)}, e.admin.Cert)
	wantErr(t, err, ErrForbidden)
}

// An admin-looking credential from another fleet root (never certified by
// ours) signs unlock.
func TestAttackCredentialFromAnotherRoot(t *testing.T) {
	e := newEnv(t)
	rogue := channeltest.NewFleet(t, "rogue-fleet")
	p := rogue.Operator(t, "admin-ann", cred.RoleAdmin)
	_, err := e.v.Verify(e.sign(t, p, e.body(OpUnlock, 1)), OpUnlock)
	wantErr(t, err, ErrSignerRejected)
	if !errors.Is(err, cred.ErrUnknownRoot) {
		t.Fatalf("cause %v, want cred.ErrUnknownRoot", err)
	}
}

// A rogue root that names itself with our root's kid issues the signer's
// credential: the credential's signature fails under our root.
func TestAttackCredentialFromRogueRootWithOurKID(t *testing.T) {
	e := newEnv(t)
	rogueRoot := ed25519.NewKeyFromSeed(channeltest.Seed("rogue-root"))
	key := ed25519.NewKeyFromSeed(channeltest.Seed("rogue-admin"))
	raw, err := cred.Issue(rogueRoot, e.fleet.RootKID, cred.Claims{Subject: "admin-ann", Kind: cred.KindOperator,
		Role: cred.RoleAdmin, Perms: cred.AdminPerms, PublicKey: key.Public().(ed25519.PublicKey),
		NotBefore: e.fleet.Now.Add(-time.Hour), Expiry: e.fleet.Now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Sign(key, raw, e.body(OpUnlock, 1))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.v.Verify(s, OpUnlock)
	wantErr(t, err, ErrSignerRejected)
	if !errors.Is(err, cred.ErrBadSignature) {
		t.Fatalf("cause %v, want cred.ErrBadSignature", err)
	}
}

// A valid admin credential (it travels in every command) with a signature
// by a key the fleet never certified for it.
func TestAttackValidCredentialWrongKey(t *testing.T) {
	e := newEnv(t)
	attacker := ed25519.NewKeyFromSeed(channeltest.Seed("attacker"))
	s, err := Sign(attacker, e.admin.Cert.Raw, e.body(OpUnlock, 1))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.v.Verify(s, OpUnlock)
	wantErr(t, err, ErrBadSignature)
}

// The unprotected header is not signed: swapping an operator's credential
// for an admin's to widen an operator-signed add-user fails the signature.
func TestAttackSwapCredentialForAdmin(t *testing.T) {
	e := newEnv(t)
	s := e.sign(t, e.operator, e.body(OpAddUser, 1))
	env1, err := parseSign1(s)
	if err != nil {
		t.Fatal(err)
	}
	env1.Unprotected.KCWT = cbor.RawMessage(e.admin.Cert.Raw)
	swapped, err := encMode.Marshal(env1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.v.Verify(swapped, OpAddUser)
	wantErr(t, err, ErrBadSignature)
}

// A command for another lock of the fleet, replayed here.
func TestAttackOtherLockID(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpUnlock, 1)
	b.LockID = [8]byte{0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x19}
	_, err := e.v.Verify(e.sign(t, e.operator, b), OpUnlock)
	wantErr(t, err, ErrWrongLock)
}

// A command captured and delivered after its not_after.
func TestAttackExpiredCommand(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpUnlock, 1)
	b.NotAfter = e.fleet.Now.Add(-time.Second)
	_, err := e.v.Verify(e.sign(t, e.operator, b), OpUnlock)
	wantErr(t, err, ErrExpired)
}

// A command signed by an operator whose credential has expired.
func TestAttackExpiredSignerCredential(t *testing.T) {
	e := newEnv(t)
	p := e.fleet.Issue(t, cred.Claims{Subject: "op-former", Kind: cred.KindOperator, Role: cred.RoleOperator,
		Perms: cred.OperatorPerms, NotBefore: e.fleet.Now.Add(-48 * time.Hour), Expiry: e.fleet.Now.Add(-time.Hour)})
	_, err := e.v.Verify(e.sign(t, p, e.body(OpUnlock, 1)), OpUnlock)
	wantErr(t, err, ErrSignerRejected)
	if !errors.Is(err, cred.ErrExpired) {
		t.Fatalf("cause %v, want cred.ErrExpired", err)
	}
}

// Arguments changed after signing: flipping any byte of the payload (here
// every byte in turn, lock ID, op, args, command ID, not_after and counter)
// breaks the signature.
func TestAttackFlipPayloadByte(t *testing.T) {
	e := newEnv(t)
	s := e.sign(t, e.admin, e.body(OpAddUser, 1))
	env1, err := parseSign1(s)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(s, env1.Payload)
	for j := range env1.Payload {
		for _, mask := range []byte{0x01, 0x80} {
			bad := bytes.Clone(s)
			bad[i+j] ^= mask
			_, err := e.v.Verify(bad, OpAddUser)
			if !errors.Is(err, ErrBadSignature) {
				t.Fatalf("payload byte %d ^ %#x: %v, want bad_signature", j, mask, err)
			}
		}
	}
}

// A flipped signature byte.
func TestAttackFlipSignatureByte(t *testing.T) {
	e := newEnv(t)
	s := e.sign(t, e.operator, e.body(OpUnlock, 1))
	bad := bytes.Clone(s)
	bad[len(bad)-10] ^= 0x04
	_, err := e.v.Verify(bad, OpUnlock)
	wantErr(t, err, ErrBadSignature)
}

// Arguments changed after signing and the body re-signed by another
// operator: the result stands on the new signer's own authority only. An
// operator-role credential re-signing a tampered admin add-user is
// forbidden; a gateway re-signing is rejected; another authorised operator
// re-signing a tampered unlock passes — but as that operator's command
// (its SignerKey and counter), which it could have signed anyway. The
// attacker gains nothing without an authorised operator's private key.
func TestAttackTamperedBodyResigned(t *testing.T) {
	e := newEnv(t)
	orig := e.body(OpAddUser, 1)
	tampered := orig
	tampered.Args.UserID = "mallory"

	_, err := e.v.Verify(e.sign(t, e.operator, tampered), OpAddUser)
	wantErr(t, err, ErrForbidden)

	_, err = e.v.Verify(e.sign(t, e.gateway, tampered), OpAddUser)
	wantErr(t, err, ErrSignerRejected)

	other := e.fleet.Operator(t, "op-oscar", cred.RoleOperator)
	u := e.body(OpUnlock, 1)
	u.NotAfter = u.NotAfter.Add(24 * time.Hour) // extended by the tamperer
	vf, err := e.v.Verify(e.sign(t, other, u), OpUnlock)
	if err != nil {
		t.Fatalf("authorised operator's re-signed unlock: %v", err)
	}
	if vf.Signer.Subject != "op-oscar" || vf.SignerKey == hex.EncodeToString(e.operator.Cert.KID) {
		t.Fatalf("re-signed command attributed to %q (%s)", vf.Signer.Subject, vf.SignerKey)
	}
}

// A signed lock presented in an unlock request.
func TestAttackOpMismatch(t *testing.T) {
	e := newEnv(t)
	_, err := e.v.Verify(e.sign(t, e.operator, e.body(OpLock, 1)), OpUnlock)
	wantErr(t, err, ErrForbidden)
}

// No role may sign allow-bond: a bond window is opened by a gateway for
// itself, over its own session.
func TestAttackAdminSignsAllowBond(t *testing.T) {
	e := newEnv(t)
	_, err := e.v.Verify(e.sign(t, e.admin, e.body(OpAllowBond, 1)), OpAllowBond)
	wantErr(t, err, ErrForbidden)
}

// signAsRootRaw builds a root-signed command for any op, which SignAsRoot
// refuses to do.
func signAsRootRaw(t *testing.T, root ed25519.PrivateKey, kid []byte, b Body) []byte {
	t.Helper()
	p, err := MarshalBody(&b)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signPayload(root, cose.UnprotectedHeader{cose.HeaderLabelKeyID: kid}, p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The fleet root's key signs unlock: the root may sign set-time only.
func TestAttackRootSignsUnlock(t *testing.T) {
	e := newEnv(t)
	_, err := e.v.Verify(signAsRootRaw(t, e.fleet.Root, e.fleet.RootKID, e.body(OpUnlock, 1)), OpUnlock)
	wantErr(t, err, ErrForbidden)
}

// A set-time "root-signed" by an untrusted root.
func TestAttackRootSetTimeUntrustedRoot(t *testing.T) {
	e := newEnv(t)
	rogue := channeltest.NewFleet(t, "rogue-fleet")
	s, err := SignAsRoot(rogue.Root, rogue.RootKID, e.body(OpSetTime, 1))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.v.Verify(s, OpSetTime)
	wantErr(t, err, ErrSignerRejected)
}

// A set-time signed by a rogue key under our root's kid.
func TestAttackRootSetTimeWrongKey(t *testing.T) {
	e := newEnv(t)
	rogue := channeltest.NewFleet(t, "rogue-fleet")
	s, err := SignAsRoot(rogue.Root, e.fleet.RootKID, e.body(OpSetTime, 1))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.v.Verify(s, OpSetTime)
	wantErr(t, err, ErrBadSignature)
}

// The gateway checks first: its verifier, set to the target lock, refuses
// a command signed for another lock before any BLE work.
func TestAttackGatewayRefusesEarlyForOtherLock(t *testing.T) {
	e := newEnv(t)
	s := e.sign(t, e.operator, e.body(OpUnlock, 1))
	gw := &Verifier{Roots: e.fleet.Roots, LockID: [8]byte{9}, Now: e.v.Now}
	_, err := gw.Verify(s, OpUnlock)
	wantErr(t, err, ErrWrongLock)
}
