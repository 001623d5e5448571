package cred

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"slices"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// A revocation list is the fleet root's statement "these credential kids
// are no longer to be trusted" (docs/protocol.md §5.11). It is an untagged
// COSE_Sign1 signed by a fleet root, like a credential, but with its own
// protected header, which carries the COSE 'typ' parameter (label 16,
// RFC 9596): {1: -8, 16: "application/gatewayd-revocations+cbor"}. The
// protected header is part of what the signature covers, so a revocation
// list can never be taken for a credential or a signed command (whose
// protected header is exactly {1: -8}) nor either of them for a list.
//
//	RevocationList = [ h'a2 01 27 10 78 25 ...' (bstr .cbor protected),
//	                   {4: root_kid}, payload: bstr .cbor Revocations,
//	                   signature: bstr .size 64 ]
//	Revocations = { 1: serial (uint, >= 1), 2: issued_at (uint, unix s),
//	                3: [* kid (bstr .size 8)] (sorted, no duplicates) }
//
// The serial orders lists: a holder keeps the list with the highest serial
// it has verified and refuses every older one, so a captured old list can
// never un-revoke anyone.

// RevocationsType is the 'typ' (COSE header 16) of a revocation list.
const RevocationsType = "application/gatewayd-revocations+cbor"

// MaxRevoked bounds the kids one list may hold. The lock (nRF52832: 64 KiB
// RAM, 4 KiB flash pages) keeps the list in one flash record and its kids in
// RAM: 64 kids are 512 bytes of RAM and a list of at most
// MaxRevocationsSize bytes, which also fits one request (command
// MaxRequestSize). A fleet that must revoke more re-keys: it issues a new
// root, and the old root's credentials all stop at once.
const MaxRevoked = 64

// MaxRevocationsSize bounds an encoded revocation list, checked before any
// decoding.
const MaxRevocationsSize = 800

const labelTyp = 16 // COSE header 'typ' (RFC 9596)

// ProtectedRevocations is the protected header of every revocation list:
// bstr .cbor {1: -8, 16: RevocationsType}.
var ProtectedRevocations = []byte("\xa2\x01\x27\x10\x78\x25" + RevocationsType)

// Revocations is a verified revocation list.
type Revocations struct {
	// Serial orders lists: the higher serial replaces the lower. 1 or more.
	Serial uint64
	// IssuedAt is when the fleet root signed the list (informational).
	IssuedAt time.Time
	// Revoked are the kids of the revoked credentials ([KID]: revoking a
	// kid revokes every credential of that kind and subject), sorted.
	Revoked [][]byte
	// RootKID names the root that signed it; Raw is the whole list as
	// received, for passing on.
	RootKID []byte
	Raw     []byte
}

// IsRevoked reports whether kid is in the list. A nil list revokes nothing.
func (r *Revocations) IsRevoked(kid []byte) bool {
	if r == nil {
		return false
	}
	_, ok := slices.BinarySearchFunc(r.Revoked, kid, bytes.Compare)
	return ok
}

type revocationsMap struct {
	Serial   *uint64      `cbor:"1,keyasint"`
	IssuedAt *uint64      `cbor:"2,keyasint"`
	Revoked  []byteString `cbor:"3,keyasint"`
}

var revDecMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  MaxRevoked,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

func encodeRevocations(serial uint64, issuedAt time.Time, kids [][]byte) ([]byte, error) {
	if serial == 0 {
		return nil, fmt.Errorf("%w: serial 0; serials start at 1", ErrInvalidRevocations)
	}
	if len(kids) > MaxRevoked {
		return nil, fmt.Errorf("%w: %d kids, at most %d", ErrInvalidRevocations, len(kids), MaxRevoked)
	}
	at, err := unixSeconds("issued_at", issuedAt)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRevocations, err)
	}
	sorted := make([]byteString, 0, len(kids))
	for _, k := range kids {
		if len(k) != KIDLen {
			return nil, fmt.Errorf("%w: kid of %d bytes, want %d", ErrInvalidRevocations, len(k), KIDLen)
		}
		sorted = append(sorted, byteString(bytes.Clone(k)))
	}
	slices.SortFunc(sorted, func(a, b byteString) int { return bytes.Compare(a, b) })
	sorted = slices.CompactFunc(sorted, func(a, b byteString) bool { return bytes.Equal(a, b) })
	return encMode.Marshal(&revocationsMap{Serial: &serial, IssuedAt: &at, Revoked: sorted})
}

// IssueRevocations returns a revocation list with serial (>= 1) revoking
// kids (each KIDLen bytes; they are sorted and duplicates dropped), signed
// by the fleet root key root under rootKID. Ed25519 is deterministic: the
// same inputs give the same bytes.
func IssueRevocations(root ed25519.PrivateKey, rootKID []byte, serial uint64, issuedAt time.Time, kids [][]byte) ([]byte, error) {
	if len(root) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: root private key is %d bytes", ErrBadKey, len(root))
	}
	if len(rootKID) == 0 || len(rootKID) > MaxRootKIDLen {
		return nil, fmt.Errorf("%w: root kid must be 1..%d bytes", ErrBadKey, MaxRootKIDLen)
	}
	payload, err := encodeRevocations(serial, issuedAt, kids)
	if err != nil {
		return nil, err
	}
	env := sign1{
		Protected:   ProtectedRevocations,
		Unprotected: unprotectedHeader{Kid: bytes.Clone(rootKID)},
		Payload:     payload,
		Signature:   ed25519.Sign(root, sigStructureWith(ProtectedRevocations, payload)),
	}
	raw, err := encMode.Marshal(&env)
	if err != nil {
		return nil, fmt.Errorf("cred: encoding revocation list: %w", err)
	}
	if len(raw) > MaxRevocationsSize {
		return nil, fmt.Errorf("%w: list of %d bytes, limit %d", ErrInvalidRevocations, len(raw), MaxRevocationsSize)
	}
	pub, _ := root.Public().(ed25519.PublicKey)
	if _, err := ParseRevocations(raw, Roots{string(rootKID): pub}); err != nil {
		return nil, fmt.Errorf("cred: issued revocation list does not parse: %w", err)
	}
	return raw, nil
}

// ParseRevocations decodes and verifies a revocation list under roots, in
// this order: size (ErrTooLarge); untagged COSE_Sign1 in core
// deterministic encoding with exactly the protected header
// ProtectedRevocations, so a credential or signed command is refused here
// (ErrMalformed); the root kid names a trusted root (ErrUnknownRoot); the
// signature verifies (ErrBadSignature); the payload is exactly the
// Revocations map, serial >= 1, kids of KIDLen bytes strictly ascending,
// at most MaxRevoked (ErrMalformed, ErrInvalidRevocations).
func ParseRevocations(raw []byte, roots Roots) (*Revocations, error) {
	if len(raw) > MaxRevocationsSize {
		return nil, fmt.Errorf("%w: revocation list of %d bytes, limit %d", ErrTooLarge, len(raw), MaxRevocationsSize)
	}
	if len(raw) == 0 || raw[0]>>5 == 6 {
		return nil, fmt.Errorf("%w: a revocation list is an untagged COSE_Sign1", ErrMalformed)
	}
	var env sign1
	if err := decMode.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: revocation list COSE_Sign1: %w", ErrMalformed, err)
	}
	if !bytes.Equal(env.Protected, ProtectedRevocations) {
		return nil, fmt.Errorf("%w: protected header is not {1: -8, 16: %q}: not a revocation list", ErrMalformed, RevocationsType)
	}
	if n := len(env.Unprotected.Kid); n == 0 || n > MaxRootKIDLen {
		return nil, fmt.Errorf("%w: unprotected header must be {4: root kid of 1..%d bytes}", ErrMalformed, MaxRootKIDLen)
	}
	if len(env.Signature) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature is %d bytes", ErrMalformed, len(env.Signature))
	}
	if again, err := encMode.Marshal(&env); err != nil || !bytes.Equal(again, raw) {
		return nil, fmt.Errorf("%w: revocation list is not in core deterministic encoding", ErrMalformed)
	}
	rootKey, ok := roots[string(env.Unprotected.Kid)]
	if !ok {
		return nil, fmt.Errorf("%w: revocation list signed by root kid %x", ErrUnknownRoot, env.Unprotected.Kid)
	}
	if len(rootKey) != ed25519.PublicKeySize || !ed25519.Verify(rootKey, sigStructureWith(env.Protected, env.Payload), env.Signature) {
		return nil, fmt.Errorf("%w: revocation list, root kid %x", ErrBadSignature, env.Unprotected.Kid)
	}
	var m revocationsMap
	if err := revDecMode.Unmarshal(env.Payload, &m); err != nil {
		return nil, fmt.Errorf("%w: revocations: %w", ErrMalformed, err)
	}
	if m.Serial == nil || m.IssuedAt == nil || m.Revoked == nil {
		return nil, fmt.Errorf("%w: revocations need serial (1), issued_at (2) and revoked (3)", ErrMalformed)
	}
	if *m.IssuedAt > maxTime {
		return nil, fmt.Errorf("%w: issued_at %d beyond 2^32-1", ErrInvalidRevocations, *m.IssuedAt)
	}
	kids := make([][]byte, len(m.Revoked))
	for i, k := range m.Revoked {
		if len(k) != KIDLen {
			return nil, fmt.Errorf("%w: kid of %d bytes, want %d", ErrInvalidRevocations, len(k), KIDLen)
		}
		if i > 0 && bytes.Compare(kids[i-1], k) >= 0 {
			return nil, fmt.Errorf("%w: kids must be strictly ascending", ErrInvalidRevocations)
		}
		kids[i] = bytes.Clone(k)
	}
	again, err := encodeRevocations(*m.Serial, time.Unix(int64(*m.IssuedAt), 0), kids)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, env.Payload) {
		return nil, fmt.Errorf("%w: revocations are not in the canonical encoding", ErrMalformed)
	}
	return &Revocations{Serial: *m.Serial, IssuedAt: time.Unix(int64(*m.IssuedAt), 0).UTC(), Revoked: kids,
		RootKID: bytes.Clone(env.Unprotected.Kid), Raw: bytes.Clone(raw)}, nil
}

// sigStructureWith is the COSE Sig_structure of a COSE_Sign1 (RFC 9052
// §4.4) with protected header protected (a bstr's content, here at most 255
// bytes) and no external AAD: ["Signature1", protected, h”, payload].
func sigStructureWith(protected, payload []byte) []byte {
	b, err := encMode.Marshal([]any{"Signature1", protected, []byte{}, payload})
	if err != nil {
		panic(err) // only byte strings and a text string
	}
	return b
}
