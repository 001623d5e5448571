package command

import (
	"crypto/ed25519"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"testing"
)

// BenchmarkVerify verifies an operator-signed unlock: the strict decoding
// of the envelope, the credential and the body, one Ed25519 verification of
// the credential (by the fleet root) and one of the command (by the
// operator). Compare with BenchmarkVerifyFloor.
func BenchmarkVerify(b *testing.B) {
	e := newEnv(b)
	s := e.sign(b, e.operator, e.body(OpUnlock, 1))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.v.Verify(s, OpUnlock); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyFloor is the floor of BenchmarkVerify: the same two
// Ed25519 verifications, over the same messages, and nothing else.
func BenchmarkVerifyFloor(b *testing.B) {
	e := newEnv(b)
	s := e.sign(b, e.operator, e.body(OpUnlock, 1))
	env1, err := parseSign1(s)
	if err != nil {
		b.Fatal(err)
	}
	cwt, err := parseSign1(env1.Unprotected.KCWT) // {4: root kid} fits sign1 too
	if err != nil {
		b.Fatal(err)
	}
	tbs := cred.SigStructure(env1.Payload)
	ctbs := cred.SigStructure(cwt.Payload)
	root := e.fleet.Roots[string(e.fleet.RootKID)]
	op := e.operator.Cert.PublicKey
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(root, ctbs, cwt.Signature) || !ed25519.Verify(op, tbs, env1.Signature) {
			b.Fatal("verify")
		}
	}
}
