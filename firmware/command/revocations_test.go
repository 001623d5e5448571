package command

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/cred"
)

func TestSetRevocationsRequestRoundTrip(t *testing.T) {
	req := Request{Op: OpSetRevocations, RequestID: 9, Args: sampleArgs(OpSetRevocations)}
	b, err := MarshalRequest(&req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseRequest(b)
	if err != nil || !bytes.Equal(got.Args.Revocations, req.Args.Revocations) || got.Op != OpSetRevocations {
		t.Fatalf("%+v, %v", got, err)
	}
	if OpSetRevocations.String() != "set-revocations" || OpSetRevocations.Perm() != 0 || !OpSetRevocations.Open() || OpSetTime.Open() {
		t.Fatal("op table")
	}
	if op, ok := ParseOp("set-revocations"); !ok || op != OpSetRevocations {
		t.Fatal("ParseOp")
	}
	for _, a := range []Args{{}, {Revocations: []byte{}}, {Revocations: make([]byte, cred.MaxRevocationsSize+1)},
		{Revocations: []byte{1}, UserID: "x"}} {
		if _, err := MarshalRequest(&Request{Op: OpSetRevocations, Args: a}); !errors.Is(err, ErrMalformed) {
			t.Errorf("args %d bytes: %v", len(a.Revocations), err)
		}
	}
}

// TestAuthorizeSetRevocations: any authenticated gateway, operator or user
// may deliver a list; a lock may not; a signed variant is refused, since no
// credential holds a permission for it.
func TestAuthorizeSetRevocations(t *testing.T) {
	e := newEnv(t)
	req := &Request{Op: OpSetRevocations, Args: sampleArgs(OpSetRevocations)}
	for _, p := range []*cred.Cert{e.gateway.Cert, e.operator.Cert, e.admin.Cert, e.user.Cert} {
		if RequiresSignature(OpSetRevocations, p.Kind) {
			t.Errorf("%v must not need a signature", p.Kind)
		}
		if v, err := e.v.Authorize(req, p); err != nil || v != nil {
			t.Errorf("%s: %v", p.Subject, err)
		}
	}
	for _, p := range []*cred.Cert{e.lock.Cert, nil} {
		if _, err := e.v.Authorize(req, p); !errors.Is(err, ErrForbidden) {
			t.Errorf("peer %v: %v", p, err)
		}
	}
	signed := &Request{Op: OpSetRevocations, Signed: e.sign(t, e.admin, e.body(OpSetRevocations, 1))}
	if _, err := e.v.Authorize(signed, e.gateway.Cert); !errors.Is(err, ErrForbidden) {
		t.Errorf("signed set-revocations: %v", err)
	}
}

func TestLockStatusRevocationSerial(t *testing.T) {
	for _, serial := range []uint64{0, 1, 1 << 40} {
		d, err := EncodeLockStatus(LockStatus{Users: 1, Slots: 16, Revocations: serial})
		if err != nil {
			t.Fatal(err)
		}
		r := &Result{Data: d}
		s, err := r.LockStatus()
		if err != nil || s.Revocations != serial {
			t.Fatalf("serial %d: %+v, %v", serial, s, err)
		}
	}
	// 0 is encoded by leaving the key out, never as 5: 0.
	bad := unhex(t, "a5 01 00 02 00 03 00 04 10 05 00")
	if _, err := (&Result{Data: bad}).LockStatus(); err == nil {
		t.Fatal("revocations 0 accepted")
	}
}
