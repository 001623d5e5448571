package cred

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
)

func kidOf(t testing.TB, k Kind, sub string) []byte {
	t.Helper()
	kid, err := KID(k, sub)
	if err != nil {
		t.Fatal(err)
	}
	return kid
}

func TestRevocationsRoundTrip(t *testing.T) {
	gw := kidOf(t, KindGateway, "gw-berlin-0042")
	op := kidOf(t, KindOperator, "op-alice")
	raw, err := IssueRevocations(rootKey, rootKID, 7, t0, [][]byte{op, gw, op})
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRevocations(raw, testRoots())
	if err != nil {
		t.Fatal(err)
	}
	if r.Serial != 7 || !r.IssuedAt.Equal(t0) || len(r.Revoked) != 2 || !bytes.Equal(r.RootKID, rootKID) || !bytes.Equal(r.Raw, raw) {
		t.Fatalf("parsed %+v", r)
	}
	if !r.IsRevoked(gw) || !r.IsRevoked(op) || r.IsRevoked(kidOf(t, KindUser, "user-7f3a")) {
		t.Fatal("IsRevoked is wrong")
	}
	var none *Revocations
	if none.IsRevoked(gw) {
		t.Fatal("a nil list revokes")
	}
	again, _ := IssueRevocations(rootKey, rootKID, 7, t0, [][]byte{gw, op})
	if !bytes.Equal(raw, again) {
		t.Fatal("issuing is not deterministic")
	}
}

func TestSigStructureWithMatchesTheFixedPrefix(t *testing.T) {
	p := []byte("payload")
	if !bytes.Equal(sigStructureWith(ProtectedEdDSA, p), SigStructure(p)) {
		t.Fatal("the general Sig_structure differs from the credential one")
	}
}

func TestRevocationsBounds(t *testing.T) {
	kids := make([][]byte, MaxRevoked)
	for i := range kids {
		kids[i] = []byte{0, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)}
	}
	raw, err := IssueRevocations(rootKey, rootKID, 1<<40, t0, kids)
	if err != nil {
		t.Fatalf("a full list: %v", err)
	}
	if len(raw) > MaxRevocationsSize {
		t.Fatalf("a full list is %d bytes, bound %d", len(raw), MaxRevocationsSize)
	}
	kids = append(kids, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	if _, err := IssueRevocations(rootKey, rootKID, 1, t0, kids); !errors.Is(err, ErrInvalidRevocations) {
		t.Fatalf("%d kids: %v", len(kids), err)
	}
	if _, err := IssueRevocations(rootKey, rootKID, 0, t0, nil); !errors.Is(err, ErrInvalidRevocations) {
		t.Fatalf("serial 0: %v", err)
	}
	if _, err := IssueRevocations(rootKey, rootKID, 1, t0, [][]byte{{1, 2}}); !errors.Is(err, ErrInvalidRevocations) {
		t.Fatalf("short kid: %v", err)
	}
	if _, err := ParseRevocations(make([]byte, MaxRevocationsSize+1), testRoots()); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
}

func TestAttackRevocationListNotSignedByFleetRoot(t *testing.T) {
	kid := kidOf(t, KindGateway, "gw-berlin-0042")
	// Signed by a key the lock does not trust, under its own kid.
	rogue, _ := IssueRevocations(rootKey2, rootKID2, 99, t0, [][]byte{kid})
	if _, err := ParseRevocations(rogue, testRoots()); !errors.Is(err, ErrUnknownRoot) {
		t.Fatalf("unknown root: %v", err)
	}
	// Signed by a rogue key that claims the trusted root's kid.
	forged, _ := IssueRevocations(rootKey2, rootKID, 99, t0, [][]byte{kid})
	if _, err := ParseRevocations(forged, testRoots()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged under the root kid: %v", err)
	}
	// A genuine list whose payload was changed after signing.
	good, _ := IssueRevocations(rootKey, rootKID, 5, t0, [][]byte{kid})
	env := decodeSign1(t, good)
	env.Payload, _ = encodeRevocations(6, t0, [][]byte{kid})
	if _, err := ParseRevocations(encodeSign1(t, env), testRoots()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered serial: %v", err)
	}
}

func TestAttackCredentialAndRevocationListConfusion(t *testing.T) {
	cwt := mustIssue(t, claimsFor(KindGateway, RoleNone))
	if _, err := ParseRevocations(cwt, testRoots()); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a credential taken as a revocation list: %v", err)
	}
	list, _ := IssueRevocations(rootKey, rootKID, 1, t0, nil)
	if _, err := Parse(list, testRoots()); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a revocation list taken as a credential: %v", err)
	}
	// A revocations payload signed with the credential header: refused,
	// even though the root's signature over it is good.
	payload, _ := encodeRevocations(1, t0, nil)
	if _, err := ParseRevocations(signPayload(t, rootKey, rootKID, payload), testRoots()); !errors.Is(err, ErrMalformed) {
		t.Fatalf("revocations under the credential header: %v", err)
	}
}

func TestRevocationsStrictDecoding(t *testing.T) {
	kid := kidOf(t, KindGateway, "gw-berlin-0042")
	sign := func(payload []byte) []byte {
		env := sign1{Protected: ProtectedRevocations, Unprotected: unprotectedHeader{Kid: rootKID}, Payload: payload}
		env.Signature = ed25519.Sign(rootKey, sigStructureWith(ProtectedRevocations, payload))
		return encodeSign1(t, env)
	}
	u := func(v uint64) *uint64 { return &v }
	for name, m := range map[string]any{
		"unsorted kids":  &revocationsMap{Serial: u(1), IssuedAt: u(1), Revoked: []byteString{{0xff, 9, 9, 9, 9, 9, 9, 9}, byteString(kid)}},
		"duplicate kids": &revocationsMap{Serial: u(1), IssuedAt: u(1), Revoked: []byteString{byteString(kid), byteString(kid)}},
		"serial 0":       &revocationsMap{Serial: u(0), IssuedAt: u(1), Revoked: []byteString{}},
		"no serial":      &revocationsMap{IssuedAt: u(1), Revoked: []byteString{}},
		"unknown key":    map[int]any{1: 1, 2: 1, 3: []any{}, 4: 0},
		"kid of 9 bytes": &revocationsMap{Serial: u(1), IssuedAt: u(1), Revoked: []byteString{make([]byte, 9)}},
	} {
		p, err := encMode.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseRevocations(sign(p), testRoots())
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalidRevocations) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func decodeSign1(t testing.TB, raw []byte) sign1 {
	t.Helper()
	var env sign1
	if err := decMode.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	return env
}

func encodeSign1(t testing.TB, env sign1) []byte {
	t.Helper()
	b, err := encMode.Marshal(&env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestProtectedRevocationsIsDeterministicCBOR(t *testing.T) {
	b, err := encMode.Marshal(map[int]any{1: -8, labelTyp: RevocationsType})
	if err != nil || !bytes.Equal(b, ProtectedRevocations) {
		t.Fatalf("ProtectedRevocations %x, want %x (%v)", ProtectedRevocations, b, err)
	}
}

// FuzzParseRevocations: any bytes are refused cleanly or give a list that
// is exactly what its root would issue for the same content.
func FuzzParseRevocations(f *testing.F) {
	gw, _ := KID(KindGateway, "gw-berlin-0042")
	for _, kids := range [][][]byte{nil, {gw}} {
		raw, err := IssueRevocations(rootKey, rootKID, 3, t0, kids)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add(mustIssue(f, claimsFor(KindOperator, RoleAdmin)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := ParseRevocations(raw, testRoots())
		if err != nil {
			return
		}
		again, err := IssueRevocations(rootKey, rootKID, r.Serial, r.IssuedAt, r.Revoked)
		if err != nil || !bytes.Equal(again, raw) {
			t.Fatalf("accepted %x, which the root would issue as %x (%v)", raw, again, err)
		}
	})
}
