package command

import (
	"bytes"
	"errors"
	"testing"
)

func TestPeekEveryOp(t *testing.T) {
	e := newEnv(t)
	for _, op := range allOps {
		b := e.body(op, 7)
		got, err := Peek(e.sign(t, e.admin, b))
		if err != nil {
			t.Fatalf("Peek %v: %v", op, err)
		}
		if !got.Equal(&b) {
			t.Fatalf("Peek %v = %+v, want %+v", op, got, b)
		}
	}
	root, err := SignAsRoot(e.fleet.Root, e.fleet.RootKID, e.body(OpSetTime, 3))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Peek(root); err != nil || got.Op != OpSetTime {
		t.Fatalf("Peek root-signed = %v, %v", got.Op, err)
	}
}

// TestPeekDoesNotVerify: Peek decodes what Verify would refuse for its
// signer or signature — it is for routing only.
func TestPeekDoesNotVerify(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpUnlock, 1)
	signed := e.sign(t, e.operator, b)
	flipped := bytes.Clone(signed)
	flipped[len(flipped)-1] ^= 1
	if _, err := Peek(flipped); err != nil {
		t.Fatalf("Peek of a bit-flipped signature: %v", err)
	}
	_, err := e.v.Verify(flipped, OpUnlock)
	wantErr(t, err, ErrBadSignature)

	// A gateway credential's command: Peek decodes it, Verify refuses it.
	gw := e.sign(t, e.gateway, b)
	if _, err := Peek(gw); err != nil {
		t.Fatalf("Peek of a gateway-signed command: %v", err)
	}
	_, err = e.v.Verify(gw, OpUnlock)
	wantErr(t, err, ErrSignerRejected)
}

func TestPeekMalformed(t *testing.T) {
	e := newEnv(t)
	signed := e.sign(t, e.operator, e.body(OpUnlock, 1))
	tagged := append([]byte{0xd2}, signed...) // COSE_Sign1 tag 18
	cases := map[string][]byte{
		"empty":     nil,
		"oversized": make([]byte, MaxSignedSize+1),
		"truncated": signed[:len(signed)-1],
		"trailing":  append(bytes.Clone(signed), 0x00),
		"tagged":    tagged,
		"not cbor":  []byte("unlock lock 42 please"),
		"map":       {0xa0},
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Peek(raw)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Peek = %v, want ErrMalformed", err)
			}
		})
	}
}
