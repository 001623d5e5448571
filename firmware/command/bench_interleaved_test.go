package command

import (
	"crypto/ed25519"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/internal/interleave"
)

// BenchmarkVerifyInterleaved is the figure scripts/bench.sh judges for
// command verification (goal: at most 1.3 times its floor). Each iteration
// runs BenchmarkVerify's work (Verify of an operator-signed unlock) and
// BenchmarkVerifyFloor's (the same two Ed25519 verifications and nothing
// else) and reports the median per-round ratio of Verify's time to the
// floor's ("verify/floor"; see firmware/internal/interleave).
func BenchmarkVerifyInterleaved(b *testing.B) {
	e := newEnv(b)
	s := e.sign(b, e.operator, e.body(OpUnlock, 1))
	env1, err := parseSign1(s)
	if err != nil {
		b.Fatal(err)
	}
	cwt, err := parseSign1(env1.Unprotected.KCWT)
	if err != nil {
		b.Fatal(err)
	}
	tbs := cred.SigStructure(env1.Payload)
	ctbs := cred.SigStructure(cwt.Payload)
	root := e.fleet.Roots[string(e.fleet.RootKID)]
	op := e.operator.Cert.PublicKey
	verify := func() {
		if _, err := e.v.Verify(s, OpUnlock); err != nil {
			b.Fatal(err)
		}
	}
	floor := func() {
		if !ed25519.Verify(root, ctbs, cwt.Signature) || !ed25519.Verify(op, tbs, env1.Signature) {
			b.Fatal("verify")
		}
	}
	b.ReportAllocs()
	interleave.Run(b, 1, "verify", verify, "floor", floor, "verify/floor")
}
