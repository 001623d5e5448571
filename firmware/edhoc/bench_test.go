package edhoc

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
)

// BenchmarkHandshake runs a whole EDHOC handshake, both sides, message_1
// to message_4 and one exporter call, with credentials already known to
// each side (by 'kid'): this package's part alone, for profiling. The
// figure scripts/bench.sh judges is firmware/channel's
// BenchmarkHandshakeInterleaved: the handshake as gatewayd runs it
// (credentials by value, verified, fragmented), interleaved with its floor.
func BenchmarkHandshake(b *testing.B) {
	i, r := newParty(b), newParty(b)
	ri, rr := resolverOf(r), resolverOf(i)
	b.ReportAllocs()
	for b.Loop() {
		in, _ := NewInitiator(Options{Cred: i.cred, AuthKey: i.sk, Peer: ri})
		re, _ := NewResponder(Options{Cred: r.cred, AuthKey: r.sk, Peer: rr})
		if err := handshake(in, re); err != nil {
			b.Fatal(err)
		}
		if _, err := in.Exporter(32768, nil, 16); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandshakePrimitives is a floor for BenchmarkHandshake: the
// public-key operations a handshake cannot avoid, and nothing else. Two
// X25519 key generations, two X25519 shared secrets, two Ed25519
// signatures and two Ed25519 verifications.
func BenchmarkHandshakePrimitives(b *testing.B) {
	_, skI, _ := ed25519.GenerateKey(rand.Reader)
	_, skR, _ := ed25519.GenerateKey(rand.Reader)
	pkI, pkR := skI.Public().(ed25519.PublicKey), skR.Public().(ed25519.PublicKey)
	msg := make([]byte, 341) // the size of the trace's message to be signed
	var seed [32]byte
	b.ReportAllocs()
	for b.Loop() {
		_, _ = rand.Read(seed[:])
		x, _ := ecdh.X25519().NewPrivateKey(seed[:])
		_, _ = rand.Read(seed[:])
		y, _ := ecdh.X25519().NewPrivateKey(seed[:])
		if _, err := y.ECDH(x.PublicKey()); err != nil {
			b.Fatal(err)
		}
		if _, err := x.ECDH(y.PublicKey()); err != nil {
			b.Fatal(err)
		}
		s2 := ed25519.Sign(skR, msg)
		if !ed25519.Verify(pkR, msg, s2) {
			b.Fatal("verify")
		}
		s3 := ed25519.Sign(skI, msg)
		if !ed25519.Verify(pkI, msg, s3) {
			b.Fatal("verify")
		}
	}
}
