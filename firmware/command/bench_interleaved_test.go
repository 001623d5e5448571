package command

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/cred"
)

// BenchmarkVerifyInterleaved is the figure scripts/bench.sh judges for
// command verification (goal: at most 1.3 times its floor). Each iteration
// runs BenchmarkVerify's work (Verify of an operator-signed unlock) and
// BenchmarkVerifyFloor's (the same two Ed25519 verifications and nothing
// else), alternating which goes first, and reports Verify's time as a
// multiple of the floor's ("verify/floor"). Interleaved, both see the same
// machine; run one after the other, they may not.
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
	var tv, tf time.Duration
	timed := func(f func(), d *time.Duration) {
		t0 := time.Now()
		f()
		*d += time.Since(t0)
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if i%2 == 0 {
			timed(verify, &tv)
			timed(floor, &tf)
		} else {
			timed(floor, &tf)
			timed(verify, &tv)
		}
		i++
	}
	b.ReportMetric(float64(tv)/float64(i), "verify-ns")
	b.ReportMetric(float64(tf)/float64(i), "floor-ns")
	b.ReportMetric(float64(tv)/float64(tf), "verify/floor")
}
