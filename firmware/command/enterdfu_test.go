package command

import (
	"bytes"
	"testing"

	"github.com/veraison/go-cose"

	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

// TestEnterDFUEncoding pins enter-dfu's request and args: op 12, args
// {1: init_hash} with a 32-byte hash, and checks that it round-trips
// signed and unsigned.
func TestEnterDFUEncoding(t *testing.T) {
	a := sampleArgs(OpEnterDFU)
	b, err := MarshalRequest(&Request{Op: OpEnterDFU, RequestID: 7, Args: a})
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, "a3 01 0c 02 07 03 a1 01 58 20"+
		"d0d1d2d3d4d5d6d7d8d9dadbdcdddedf d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")
	if !bytes.Equal(b, want) {
		t.Fatalf("request\n got %x\nwant %x", b, want)
	}
	r, err := ParseRequest(b)
	if err != nil || r.Op != OpEnterDFU || !bytes.Equal(r.Args.InitHash, a.InitHash) {
		t.Fatalf("ParseRequest = %+v, %v", r, err)
	}
	e := newEnv(t)
	ver, err := e.v.Verify(e.sign(t, e.admin, e.body(OpEnterDFU, 1)), OpEnterDFU)
	if err != nil || !bytes.Equal(ver.Body.Args.InitHash, a.InitHash) {
		t.Fatalf("Verify = %+v, %v", ver, err)
	}
	if !RequiresSignature(OpEnterDFU, cred.KindOperator) || !RequiresSignature(OpEnterDFU, cred.KindUser) ||
		OpEnterDFU.HasData() || OpEnterDFU.String() != "enter-dfu" {
		t.Fatal("enter-dfu's table entry")
	}
	if op, ok := ParseOp("enter-dfu"); !ok || op != OpEnterDFU {
		t.Fatal("ParseOp(enter-dfu)")
	}
}

// TestEnterDFUArgsStrict: the hash is exactly 32 bytes, required, and
// belongs to enter-dfu only.
func TestEnterDFUArgsStrict(t *testing.T) {
	for _, a := range []Args{{}, {InitHash: make([]byte, 31)}, {InitHash: make([]byte, 33)},
		{InitHash: make([]byte, 32), UserID: "x"}} {
		if _, err := MarshalRequest(&Request{Op: OpEnterDFU, Args: a}); err == nil {
			t.Errorf("args %+v encoded", a)
		}
	}
	if _, err := MarshalRequest(&Request{Op: OpStatus, Args: Args{InitHash: make([]byte, 32)}}); err == nil {
		t.Error("status with an init hash encoded")
	}
	// {1: 31-byte hash} and an absent args map are malformed.
	_, err := ParseRequest(unhex(t, "a3 01 0c 02 07 03 a1 01 58 1f"+"00000000000000000000000000000000000000000000000000000000000000"))
	wantErr(t, err, ErrMalformed)
	_, err = ParseRequest(unhex(t, "a2 01 0c 02 07"))
	wantErr(t, err, ErrMalformed)
}

// TestAttackEnterDFUSignedByNonAdmin: only an admin whose credential holds
// its role's whole cap signs enter-dfu; an operator, an admin restricted
// below its cap, and the fleet root itself are forbidden, and nobody may
// ask it unsigned.
func TestAttackEnterDFUSignedByNonAdmin(t *testing.T) {
	e := newEnv(t)
	_, err := e.v.Verify(e.sign(t, e.operator, e.body(OpEnterDFU, 1)), OpEnterDFU)
	wantErr(t, err, ErrForbidden)
	limited := e.fleet.Issue(t, cred.Claims{Subject: "admin-audit-only", Kind: cred.KindOperator, Role: cred.RoleAdmin,
		Perms: cred.PermStatus | cred.PermReadAudit | cred.PermListUsers})
	_, err = e.v.Verify(e.sign(t, limited, e.body(OpEnterDFU, 2)), OpEnterDFU)
	wantErr(t, err, ErrForbidden)
	if _, err := SignAsRoot(e.fleet.Root, e.fleet.RootKID, e.body(OpEnterDFU, 3)); err == nil {
		t.Fatal("SignAsRoot signed enter-dfu")
	}
	b := e.body(OpEnterDFU, 3)
	payload, err := MarshalBody(&b)
	if err != nil {
		t.Fatal(err)
	}
	byRoot, err := signPayload(e.fleet.Root, cose.UnprotectedHeader{cose.HeaderLabelKeyID: e.fleet.RootKID}, payload)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.v.Verify(byRoot, OpEnterDFU)
	wantErr(t, err, ErrForbidden)
	for _, peer := range []channeltest.Party{e.admin, e.gateway, e.operator, e.user} {
		req := Request{Op: OpEnterDFU, Args: sampleArgs(OpEnterDFU)}
		_, err := e.v.Authorize(&req, peer.Cert)
		wantErr(t, err, ErrForbidden)
	}
	// A body signed for another op cannot be carried as enter-dfu.
	_, err = e.v.Verify(e.sign(t, e.admin, e.body(OpStatus, 4)), OpEnterDFU)
	wantErr(t, err, ErrForbidden)
}
