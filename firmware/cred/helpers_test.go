package cred

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/veraison/go-cose"
)

// Fixed test keys: seed bytes repeated 32 times. 0x01 is the fleet root,
// as in the worked example of docs/protocol.md §5.10.
func keyFromSeed(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

var (
	rootKey  = keyFromSeed(0x01)
	rootPub  = pubOf(rootKey)
	rootKID  = RootKID(rootPub)
	rootKey2 = keyFromSeed(0x11) // a second root, for rotation
	rootKID2 = RootKID(pubOf(rootKey2))
	t0       = time.Unix(1735689600, 0).UTC() // 2025-01-01T00:00:00Z
)

func testRoots() Roots { return Roots{string(rootKID): rootPub} }

// claimsFor returns valid claims of a kind (and role), valid from t0 for a
// year, claiming everything the cap allows.
func claimsFor(k Kind, r Role) Claims {
	c := Claims{
		Issuer:    "fleet-root",
		Kind:      k,
		Role:      r,
		Perms:     Cap(k, r),
		NotBefore: t0,
		Expiry:    t0.Add(365 * 24 * time.Hour),
		IssuedAt:  t0,
	}
	switch k {
	case KindLock:
		c.Subject = "a1b2c3d4e5f60718"
		c.PublicKey = pubOf(keyFromSeed(0x02))
	case KindGateway:
		c.Subject = "gw-berlin-0042"
		c.PublicKey = pubOf(keyFromSeed(0x03))
	case KindOperator:
		c.Subject = "op-alice"
		c.PublicKey = pubOf(keyFromSeed(0x04))
	case KindUser:
		c.Subject = "user-7f3a"
		c.PublicKey = pubOf(keyFromSeed(0x05))
	}
	return c
}

func mustIssue(t testing.TB, c Claims) []byte {
	t.Helper()
	raw, err := Issue(rootKey, rootKID, c)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return raw
}

// signPayload wraps an arbitrary payload in a correctly signed, canonical
// COSE_Sign1, bypassing Issue's checks.
func signPayload(t testing.TB, key ed25519.PrivateKey, kid, payload []byte) []byte {
	t.Helper()
	signer, err := cose.NewSigner(cose.AlgorithmEdDSA, key)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cose.Sign1Untagged(rand.Reader, signer, cose.Headers{
		Protected:   cose.ProtectedHeader{cose.HeaderLabelAlgorithm: cose.AlgorithmEdDSA},
		Unprotected: cose.UnprotectedHeader{cose.HeaderLabelKeyID: kid},
	}, payload, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// parts splits a canonical credential.
func parts(t testing.TB, raw []byte) sign1 {
	t.Helper()
	var env sign1
	if err := decMode.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	return env
}

// bstr returns the canonical CBOR byte string header and content.
func bstr(b []byte) []byte {
	out, _ := encMode.Marshal(b)
	return out
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// wantErr fails unless err wraps every one of wants.
func wantErr(t testing.TB, err error, wants ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", wants)
	}
	for _, w := range wants {
		if !errors.Is(err, w) {
			t.Fatalf("error %q does not wrap %q", err, w)
		}
	}
}
