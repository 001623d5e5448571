package cred

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/gatewayd/gatewayd/firmware/edhoc"
)

// COSE and CWT constants used by the format.
const (
	labelKID  = 4  // COSE header 'kid'
	labelKCWT = 13 // COSE header 'kcwt' (RFC 9528 §10.6)

	ktyOKP     = 1 // COSE key type OKP
	crvEd25519 = 6 // COSE curve Ed25519
)

// Roots is the set of fleet root public keys a verifier trusts, keyed by
// root kid (the bytes of the kid as a string). During a root rotation it
// holds the old and the new root. It must not be modified while in use.
type Roots map[string]ed25519.PublicKey

// Add trusts pub under kid.
func (r Roots) Add(kid []byte, pub ed25519.PublicKey) { r[string(kid)] = pub }

// RootKID returns the recommended kid for a fleet root key: the first 8
// bytes of SHA-256 of the 32-byte public key. Any 1..16 byte kid works; this
// is only a convention that makes kids collision-free without a registry.
func RootKID(pub ed25519.PublicKey) []byte {
	h := sha256.Sum256(pub)
	return h[:KIDLen]
}

// Wire structures. Field order does not matter: the encoder sorts keys in
// core deterministic order.

// byteString is a []byte that decodes only from a CBOR byte string (the default
// decoder would also take an array of small integers).
type byteString []byte

func (b *byteString) UnmarshalCBOR(data []byte) error {
	if len(data) == 0 || data[0]>>5 != 2 {
		return errors.New("cbor: want a byte string")
	}
	return decMode.Unmarshal(data, (*[]byte)(b))
}

type coseKey struct {
	Kty *int64     `cbor:"1,keyasint"`
	Kid byteString `cbor:"2,keyasint"`
	Crv *int64     `cbor:"-1,keyasint"`
	X   byteString `cbor:"-2,keyasint"`
}

type cnfClaim struct {
	Key *coseKey `cbor:"1,keyasint"`
}

type claimsMap struct {
	Iss   *string   `cbor:"1,keyasint,omitempty"`
	Sub   *string   `cbor:"2,keyasint"`
	Exp   *uint64   `cbor:"4,keyasint"`
	Nbf   *uint64   `cbor:"5,keyasint"`
	Iat   *uint64   `cbor:"6,keyasint,omitempty"`
	Cnf   *cnfClaim `cbor:"8,keyasint"`
	Kind  *uint64   `cbor:"-65537,keyasint"`
	Perms *uint64   `cbor:"-65538,keyasint"`
	Role  *uint64   `cbor:"-65539,keyasint,omitempty"`
}

type unprotectedHeader struct {
	Kid byteString `cbor:"4,keyasint"`
}

type sign1 struct {
	_           struct{} `cbor:",toarray"`
	Protected   byteString
	Unprotected unprotectedHeader
	Payload     byteString
	Signature   byteString
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// encodeClaims returns the payload of a credential: the claims map in core
// deterministic CBOR. c must be valid.
func encodeClaims(c *Claims, kid []byte) ([]byte, error) {
	u := func(v uint64) *uint64 { return &v }
	i := func(v int64) *int64 { return &v }
	sub := c.Subject
	m := claimsMap{
		Sub: &sub,
		Exp: u(uint64(c.Expiry.Unix())),
		Nbf: u(uint64(c.NotBefore.Unix())),
		Cnf: &cnfClaim{Key: &coseKey{
			Kty: i(ktyOKP),
			Kid: kid,
			Crv: i(crvEd25519),
			X:   byteString(c.PublicKey),
		}},
		Kind:  u(uint64(c.Kind)),
		Perms: u(uint64(c.Perms)),
	}
	if c.Issuer != "" {
		iss := c.Issuer
		m.Iss = &iss
	}
	if !c.IssuedAt.IsZero() {
		m.Iat = u(uint64(c.IssuedAt.Unix()))
	}
	if c.Role != RoleNone {
		m.Role = u(uint64(c.Role))
	}
	return encMode.Marshal(&m)
}

// Issue returns a credential for c signed by the fleet root key root, whose
// kid rootKID (1..16 bytes) goes in the unprotected header: an untagged
// COSE_Sign1 whose payload is the CWT claims map. The credential's kid is
// computed by the kid rule ([KID]). Times are truncated to whole seconds.
//
// Issue enforces every rule [Parse] enforces (it parses its own output before
// returning it) except the caps: a credential may claim more than [Cap]
// allows, and verifiers then ignore the excess. Ed25519 signatures are
// deterministic, so the same inputs always give the same bytes.
func Issue(root ed25519.PrivateKey, rootKID []byte, c Claims) ([]byte, error) {
	if len(root) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: root private key is %d bytes", ErrBadKey, len(root))
	}
	if len(rootKID) == 0 || len(rootKID) > MaxRootKIDLen {
		return nil, fmt.Errorf("%w: root kid must be 1..%d bytes", ErrBadKey, MaxRootKIDLen)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	kid, err := KID(c.Kind, c.Subject)
	if err != nil {
		return nil, err
	}
	payload, err := encodeClaims(&c, kid)
	if err != nil {
		return nil, fmt.Errorf("cred: encoding claims: %w", err)
	}
	signer, err := cose.NewSigner(cose.AlgorithmEdDSA, root)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	msg := cose.UntaggedSign1Message{
		Headers: cose.Headers{
			Protected:   cose.ProtectedHeader{cose.HeaderLabelAlgorithm: cose.AlgorithmEdDSA},
			Unprotected: cose.UnprotectedHeader{cose.HeaderLabelKeyID: bytes.Clone(rootKID)},
		},
		Payload: payload,
	}
	if err := msg.Sign(rand.Reader, nil, signer); err != nil {
		return nil, fmt.Errorf("cred: signing: %w", err)
	}
	raw, err := msg.MarshalCBOR()
	if err != nil {
		return nil, fmt.Errorf("cred: encoding COSE_Sign1: %w", err)
	}
	if len(raw) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(raw))
	}
	// Self-check: never hand out bytes that a verifier would refuse.
	pub, _ := root.Public().(ed25519.PublicKey)
	if _, err := Parse(raw, Roots{string(rootKID): pub}); err != nil {
		return nil, fmt.Errorf("cred: issued credential does not parse: %w", err)
	}
	return raw, nil
}

// Cert is a credential that [Parse] verified. A Cert shared through a
// [Cache] is read by several goroutines: do not modify it.
type Cert struct {
	Claims
	// KID is the credential's kid (the kid of the COSE_Key in cnf).
	KID []byte
	// RootKID names the fleet root that signed it.
	RootKID []byte
	// Raw is the credential: the untagged COSE_Sign1, exactly as received.
	// It is CRED_x in EDHOC.
	Raw []byte

	rootKey ed25519.PublicKey // the root key the signature verified under
}

// Parse verifies raw, an untagged COSE_Sign1 credential, against the fleet
// roots and decodes it strictly. The checks, in order (all errors wrap one
// sentinel of this package):
//
//  1. len(raw) <= MaxSize (ErrTooLarge);
//  2. raw is one COSE_Sign1 array [protected, unprotected, payload,
//     signature] in core deterministic CBOR, untagged, nothing after it
//     (ErrMalformed);
//  3. protected is exactly bstr .cbor {1: -8} (EdDSA), unprotected is
//     exactly {4: root kid} with a 1..16 byte kid, signature is 64 bytes
//     (ErrMalformed);
//  4. the root kid is in roots (ErrUnknownRoot);
//  5. the signature verifies (ErrBadSignature);
//  6. the payload is a claims map with exactly the allowed claims, of the
//     right types, required ones present (ErrMalformed);
//  7. the claim values follow the rules (ErrInvalidClaims);
//  8. the kid follows the kid rule (ErrBadKID);
//  9. the payload is byte for byte the encoding [Issue] would produce for
//     these claims (ErrMalformed).
//
// Parse does not check the validity window, kind or permissions: see
// [Cert.CheckAt] and [Verifier].
func Parse(raw []byte, roots Roots) (*Cert, error) {
	if len(raw) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(raw), MaxSize)
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if raw[0]>>5 == 6 {
		return nil, fmt.Errorf("%w: tagged; credentials are untagged COSE_Sign1", ErrMalformed)
	}
	var env sign1
	if err := decMode.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: COSE_Sign1: %w", ErrMalformed, err)
	}
	if !bytes.Equal(env.Protected, ProtectedEdDSA) {
		return nil, fmt.Errorf("%w: protected header must be {1: -8}", ErrMalformed)
	}
	if n := len(env.Unprotected.Kid); n == 0 || n > MaxRootKIDLen {
		return nil, fmt.Errorf("%w: unprotected header must be {4: root kid of 1..%d bytes}", ErrMalformed, MaxRootKIDLen)
	}
	if len(env.Payload) == 0 {
		return nil, fmt.Errorf("%w: empty payload", ErrMalformed)
	}
	if len(env.Signature) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature is %d bytes", ErrMalformed, len(env.Signature))
	}
	if again, err := encMode.Marshal(&env); err != nil || !bytes.Equal(again, raw) {
		return nil, fmt.Errorf("%w: COSE_Sign1 is not in core deterministic encoding", ErrMalformed)
	}

	rootKey, ok := roots[string(env.Unprotected.Kid)]
	if !ok {
		return nil, fmt.Errorf("%w: root kid %x", ErrUnknownRoot, env.Unprotected.Kid)
	}
	if err := VerifySign1(rootKey, env.Payload, env.Signature); err != nil {
		return nil, fmt.Errorf("%w: root kid %x: %w", ErrBadSignature, env.Unprotected.Kid, err)
	}

	claims, kid, err := decodeClaims(env.Payload)
	if err != nil {
		return nil, err
	}
	return &Cert{
		Claims:  claims,
		KID:     kid,
		RootKID: bytes.Clone(env.Unprotected.Kid),
		Raw:     bytes.Clone(raw),
		rootKey: rootKey,
	}, nil
}

// decodeClaims decodes and checks a claims payload (steps 6 to 9 of Parse).
func decodeClaims(payload []byte) (Claims, []byte, error) {
	var m claimsMap
	if err := decMode.Unmarshal(payload, &m); err != nil {
		return Claims{}, nil, fmt.Errorf("%w: claims: %w", ErrMalformed, err)
	}
	missing := ""
	switch {
	case m.Sub == nil:
		missing = "sub (2)"
	case m.Exp == nil:
		missing = "exp (4)"
	case m.Nbf == nil:
		missing = "nbf (5)"
	case m.Cnf == nil || m.Cnf.Key == nil:
		missing = "cnf (8) COSE_Key"
	case m.Cnf.Key.Kty == nil || m.Cnf.Key.Kid == nil || m.Cnf.Key.Crv == nil || m.Cnf.Key.X == nil:
		missing = "COSE_Key kty, kid, crv or x"
	case m.Kind == nil:
		missing = "kind (-65537)"
	case m.Perms == nil:
		missing = "perms (-65538)"
	}
	if missing != "" {
		return Claims{}, nil, fmt.Errorf("%w: claim %s missing", ErrMalformed, missing)
	}
	if m.Iss != nil && *m.Iss == "" {
		return Claims{}, nil, fmt.Errorf("%w: empty iss must be omitted", ErrMalformed)
	}
	if m.Role != nil && *m.Role == 0 {
		return Claims{}, nil, fmt.Errorf("%w: role 0 must be omitted", ErrMalformed)
	}
	key := m.Cnf.Key
	if *key.Kty != ktyOKP || *key.Crv != crvEd25519 {
		return Claims{}, nil, fmt.Errorf("%w: COSE_Key must be kty 1 (OKP), crv 6 (Ed25519)", ErrInvalidClaims)
	}
	if len(key.X) != ed25519.PublicKeySize {
		return Claims{}, nil, fmt.Errorf("%w: COSE_Key x is %d bytes, want 32", ErrInvalidClaims, len(key.X))
	}
	// Range checks before narrowing conversions.
	if *m.Kind == 0 || *m.Kind > uint64(KindUser) {
		return Claims{}, nil, fmt.Errorf("%w: kind %d", ErrInvalidClaims, *m.Kind)
	}
	if *m.Perms&^uint64(PermAll) != 0 {
		return Claims{}, nil, fmt.Errorf("%w: unknown permission bits in %#x", ErrInvalidClaims, *m.Perms)
	}
	var role uint64
	if m.Role != nil {
		role = *m.Role
		if role > 255 {
			return Claims{}, nil, fmt.Errorf("%w: role %d", ErrInvalidClaims, role)
		}
	}
	for _, t := range []*uint64{m.Exp, m.Nbf, m.Iat} {
		if t != nil && *t > maxTime {
			return Claims{}, nil, fmt.Errorf("%w: time %d beyond 2^32-1", ErrInvalidClaims, *t)
		}
	}

	c := Claims{
		Subject:   *m.Sub,
		Kind:      Kind(*m.Kind),
		Role:      Role(role),
		Perms:     Perm(*m.Perms),
		NotBefore: time.Unix(int64(*m.Nbf), 0).UTC(),
		Expiry:    time.Unix(int64(*m.Exp), 0).UTC(),
		PublicKey: ed25519.PublicKey(bytes.Clone(key.X)),
	}
	if m.Iss != nil {
		c.Issuer = *m.Iss
	}
	if m.Iat != nil {
		c.IssuedAt = time.Unix(int64(*m.Iat), 0).UTC()
	}
	if err := c.validate(); err != nil {
		return Claims{}, nil, err
	}
	want, err := KID(c.Kind, c.Subject)
	if err != nil {
		return Claims{}, nil, err
	}
	if !bytes.Equal(key.Kid, want) {
		return Claims{}, nil, fmt.Errorf("%w: kid %x, the rule gives %x", ErrBadKID, key.Kid, want)
	}
	again, err := encodeClaims(&c, want)
	if err != nil || !bytes.Equal(again, payload) {
		return Claims{}, nil, fmt.Errorf("%w: claims are not in the canonical encoding", ErrMalformed)
	}
	return c, want, nil
}

// CheckAt checks the validity window: NotBefore <= now < Expiry. It returns
// an error wrapping ErrNotYetValid or ErrExpired.
func (c *Cert) CheckAt(now time.Time) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("%w: nbf %s, now %s", ErrNotYetValid, c.NotBefore.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !now.Before(c.Expiry) {
		return fmt.Errorf("%w: exp %s, now %s", ErrExpired, c.Expiry.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// Effective returns the permissions the credential actually grants: its
// claimed perms AND the cap of its kind and role ([Cap]).
func (c *Cert) Effective() Perm { return c.Perms & Cap(c.Kind, c.Role) }

// Allows reports whether the credential grants every permission in p.
// Allows(0) is false, so a zero mask never authorises anything by accident.
func (c *Cert) Allows(p Perm) bool { return p != 0 && c.Effective()&p == p }

// EDHOC returns the credential as EDHOC uses it (RFC 9528 §3.5.2, §3.5.3):
// CRED_x is the untagged COSE_Sign1 (Raw); ID_CRED_x is {13: CWT} ('kcwt',
// the CWT embedded as a CBOR data item, not wrapped in a bstr) when byValue,
// else {4: h'kid'}; both in deterministic encoding. Info is c. Cred shares
// its bytes with c.Raw: neither may be modified.
func (c *Cert) EDHOC(byValue bool) edhoc.Credential {
	var id []byte
	if byValue {
		id = make([]byte, 0, 2+len(c.Raw))
		id = append(id, 0xa1, labelKCWT)
		id = append(id, c.Raw...)
	} else {
		id = idCredKID(c.KID)
	}
	return edhoc.Credential{
		IDCred:    id,
		Cred:      c.Raw,
		PublicKey: c.PublicKey,
		Info:      c,
	}
}

// idCredKID returns {4: h'kid'} in deterministic encoding.
func idCredKID(kid []byte) []byte {
	b, _ := encMode.Marshal(map[int][]byte{labelKID: kid})
	return b
}
