package command

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/gatewayd/gatewayd/firmware/cred"
)

// Limits of signed commands.
const (
	// MaxSignedSize is the largest signed command accepted, in bytes. It
	// is checked before anything is decoded.
	MaxSignedSize = 1024
	// MaxCounter is the largest counter: 2^53, so that the value is exact
	// in every JSON and JavaScript tool of the back office.
	MaxCounter = 1 << 53
	// RootKeyPrefix starts the SignerKey of commands signed by the fleet
	// root itself.
	RootKeyPrefix = "root:"
)

// COSE header labels.
const (
	labelKID  = 4  // kid: the fleet root that signed (root-signed set-time)
	labelKCWT = 13 // kcwt: the signer's credential, embedded (RFC 9528 §10.6)
)

// Body is what a signed command signs: the COSE_Sign1 payload.
//
//	Body = { 1: lock_id, 2: op, 3: args, 4: command_id, 5: not_after, 6: counter }
type Body struct {
	// LockID is the lock the command is for (the subject of its
	// credential, as bytes).
	LockID [8]byte
	// Op is the operation, and Args its arguments (the empty map for
	// operations without arguments).
	Op   Op
	Args Args
	// CommandID names this command uniquely (16 random bytes): the lock
	// executes a command ID at most once, and the result echoes it.
	CommandID [16]byte
	// NotAfter ends the command's validity: it is accepted while the
	// verifier's clock is before NotAfter. Whole seconds, 1..2^32-1.
	NotAfter time.Time
	// Counter is the signer's counter, 1..MaxCounter: each command of a
	// signer carries a higher counter than the previous one, and the lock
	// refuses a counter that is not above the highest it has seen from
	// that signer.
	Counter uint64
}

// Equal reports whether b and c are the same body.
func (b *Body) Equal(c *Body) bool {
	return b.LockID == c.LockID && b.Op == c.Op && b.Args.Equal(&c.Args) &&
		b.CommandID == c.CommandID && b.NotAfter.Equal(c.NotAfter) && b.Counter == c.Counter
}

var bodySchema = &schema[Body]{
	name: "body",
	fields: []field[Body]{
		idField(1, "lock_id", func(b *Body) []byte { return b.LockID[:] }),
		// op before args: args are decoded by the op's table.
		opField(2, func(b *Body) *Op { return &b.Op }),
		{key: 3, name: "args", required: true,
			enc: func(b *Body) (any, bool, error) {
				a, err := encodeArgs(b.Op, &b.Args)
				return cbor.RawMessage(a), true, err
			},
			dec: func(b *Body, raw cbor.RawMessage) (err error) {
				b.Args, err = decodeArgs(b.Op, raw)
				return err
			}},
		idField(4, "command_id", func(b *Body) []byte { return b.CommandID[:] }),
		{key: 5, name: "not_after", required: true,
			enc: func(b *Body) (any, bool, error) {
				if b.NotAfter.IsZero() {
					return nil, false, errors.New("not_after must be set")
				}
				t, err := encTime(b.NotAfter)
				return t, true, err
			},
			dec: func(b *Body, raw cbor.RawMessage) error {
				n, err := decUint(raw, 1, maxTime)
				b.NotAfter = timeOf(n)
				return err
			}},
		counterField(6, func(b *Body) *uint64 { return &b.Counter }),
	},
}

// Fields that signed command bodies and result statements share.

// idField is a required fixed-size byte string (a lock or command ID):
// id returns the array of v it is, as a slice.
func idField[T any](key uint64, name string, id func(v *T) []byte) field[T] {
	return field[T]{key: key, name: name, required: true,
		enc: func(v *T) (any, bool, error) { return id(v), true, nil },
		dec: func(v *T, raw cbor.RawMessage) error {
			dst := id(v)
			b, err := decBytes(raw, len(dst))
			copy(dst, b)
			return err
		}}
}

// opField is the required "op": a defined operation.
func opField[T any](key uint64, op func(v *T) *Op) field[T] {
	return field[T]{key: key, name: "op", required: true,
		enc: func(v *T) (any, bool, error) {
			if o := *op(v); !o.Valid() {
				return nil, false, fmt.Errorf("%w: %d", ErrUnknownOp, uint8(o))
			}
			return uint64(*op(v)), true, nil
		},
		dec: func(v *T, raw cbor.RawMessage) error {
			n, err := decUint(raw, uint64(OpLock), uint64(maxOp))
			*op(v) = Op(n)
			return err
		}}
}

// counterField is the required "counter": 1..MaxCounter.
func counterField[T any](key uint64, counter func(v *T) *uint64) field[T] {
	return field[T]{key: key, name: "counter", required: true,
		enc: func(v *T) (any, bool, error) {
			if c := *counter(v); c < 1 || c > MaxCounter {
				return nil, false, fmt.Errorf("counter %d, want 1..2^53", c)
			}
			return *counter(v), true, nil
		},
		dec: func(v *T, raw cbor.RawMessage) (err error) {
			*counter(v), err = decUint(raw, 1, MaxCounter)
			return err
		}}
}

// MarshalBody returns the deterministic encoding of b: the payload that
// [Sign] signs. Errors wrap ErrMalformed or ErrUnknownOp.
func MarshalBody(b *Body) ([]byte, error) {
	p, err := bodySchema.marshal(b)
	if err != nil {
		return nil, wrapMalformed(err)
	}
	return p, nil
}

// parseBody decodes a payload strictly, including the final comparison with
// its deterministic encoding. Errors wrap ErrMalformed.
func parseBody(p []byte) (Body, error) {
	var b Body
	if err := decodeData(bodySchema, p, &b); err != nil {
		return Body{}, err
	}
	return b, nil
}

// Wire form of the COSE_Sign1 envelope, for strict decoding.

// byteString is a []byte that decodes only from a CBOR byte string.
type byteString []byte

func (b *byteString) UnmarshalCBOR(data []byte) error {
	if err := wantMajor(data, majorBstr, "a byte string"); err != nil {
		return err
	}
	return decMode.Unmarshal(data, (*[]byte)(b))
}

type unprotectedHeader struct {
	KID  byteString      `cbor:"4,keyasint,omitempty"`
	KCWT cbor.RawMessage `cbor:"13,keyasint,omitempty"`
}

type sign1 struct {
	_           struct{} `cbor:",toarray"`
	Protected   byteString
	Unprotected unprotectedHeader
	Payload     byteString
	Signature   byteString
}

// parseSign1 decodes the envelope strictly (step 2 of Verify). Errors wrap
// ErrMalformed.
func parseSign1(raw []byte) (*sign1, error) {
	if len(raw) == 0 || raw[0] != 0x84 {
		return nil, fmt.Errorf("%w: signed command must be an untagged array of 4 (COSE_Sign1)", ErrMalformed)
	}
	var env sign1
	if err := decMode.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: COSE_Sign1: %w", ErrMalformed, err)
	}
	if !bytes.Equal(env.Protected, cred.ProtectedEdDSA) {
		return nil, fmt.Errorf("%w: protected header must be {1: -8}", ErrMalformed)
	}
	u := &env.Unprotected
	switch {
	case u.KCWT != nil && u.KID != nil:
		return nil, fmt.Errorf("%w: unprotected header has both kid and kcwt", ErrMalformed)
	case u.KCWT != nil:
		// Its size and content are the credential parser's (step 3).
		if u.KCWT[0]>>5 != majorArray {
			return nil, fmt.Errorf("%w: kcwt must be a credential (a COSE_Sign1 array)", ErrMalformed)
		}
	case len(u.KID) > 0:
		if len(u.KID) > cred.MaxRootKIDLen {
			return nil, fmt.Errorf("%w: root kid of %d bytes, want 1..%d", ErrMalformed, len(u.KID), cred.MaxRootKIDLen)
		}
	default:
		return nil, fmt.Errorf("%w: unprotected header must be {13: credential} or {4: root kid}", ErrMalformed)
	}
	if len(env.Payload) == 0 {
		return nil, fmt.Errorf("%w: empty payload", ErrMalformed)
	}
	if len(env.Signature) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature of %d bytes, want 64", ErrMalformed, len(env.Signature))
	}
	if err := sameEncoding(raw, func() ([]byte, error) { return encMode.Marshal(&env) }); err != nil {
		return nil, fmt.Errorf("%w: COSE_Sign1: %w", ErrMalformed, err)
	}
	return &env, nil
}

// Sign returns a signed command: body b signed by an operator whose private
// key is signer and whose credential (as issued: the untagged COSE_Sign1
// bytes) is signerCWT, embedded by value in the unprotected header
// ({13: credential}). Ed25519 is deterministic: the same inputs give the
// same bytes.
//
// Sign checks the encoding of everything (errors wrap ErrMalformed, or
// ErrUnknownOp), but not authority: that signerCWT certifies signer's key,
// that its role allows b.Op, or that the result will be valid at the lock —
// [Verifier.Verify] does.
func Sign(signer ed25519.PrivateKey, signerCWT []byte, b Body) ([]byte, error) {
	if len(signerCWT) == 0 || len(signerCWT) > cred.MaxSize || signerCWT[0]>>5 != majorArray {
		return nil, fmt.Errorf("%w: signer credential must be a COSE_Sign1 array of at most %d bytes", ErrMalformed, cred.MaxSize)
	}
	var item cbor.RawMessage
	if err := decMode.Unmarshal(signerCWT, &item); err != nil {
		return nil, fmt.Errorf("%w: signer credential: %w", ErrMalformed, err)
	}
	return sign(signer, cose.UnprotectedHeader{int64(labelKCWT): cbor.RawMessage(bytes.Clone(signerCWT))}, &b)
}

// SignAsRoot returns a set-time command signed by the fleet root itself,
// whose kid (1..16 bytes, as in the credentials it issues) goes in the
// unprotected header ({4: root kid}). The fleet root may sign set-time only:
// any other b.Op fails with ErrForbidden. Other errors wrap ErrMalformed.
func SignAsRoot(root ed25519.PrivateKey, rootKID []byte, b Body) ([]byte, error) {
	if b.Op != OpSetTime {
		return nil, fmt.Errorf("%w: the fleet root signs set-time only, not %v", ErrForbidden, b.Op)
	}
	if len(rootKID) == 0 || len(rootKID) > cred.MaxRootKIDLen {
		return nil, fmt.Errorf("%w: root kid of %d bytes, want 1..%d", ErrMalformed, len(rootKID), cred.MaxRootKIDLen)
	}
	return sign(root, cose.UnprotectedHeader{cose.HeaderLabelKeyID: bytes.Clone(rootKID)}, &b)
}

func sign(key ed25519.PrivateKey, unprotected cose.UnprotectedHeader, b *Body) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: private key of %d bytes", ErrMalformed, len(key))
	}
	payload, err := MarshalBody(b)
	if err != nil {
		return nil, err
	}
	return signPayload(key, unprotected, payload)
}

// signPayload signs payload as it is (tests use it to sign bodies that
// MarshalBody would refuse).
func signPayload(key ed25519.PrivateKey, unprotected cose.UnprotectedHeader, payload []byte) ([]byte, error) {
	raw, err := coseSign1(key, cose.ProtectedHeader{cose.HeaderLabelAlgorithm: cose.AlgorithmEdDSA}, unprotected,
		payload, "signing", "encoding COSE_Sign1")
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxSignedSize {
		return nil, fmt.Errorf("%w: signed command of %d bytes, limit %d", ErrMalformed, len(raw), MaxSignedSize)
	}
	// Self-check: never hand out bytes a verifier would refuse for their
	// form, and make sure go-cose signed the Sig_structure the spec gives.
	env, err := parseSign1(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: go-cose output: %w", ErrInternal, err)
	}
	pub, _ := key.Public().(ed25519.PublicKey)
	if err := cred.VerifySign1(pub, env.Payload, env.Signature); err != nil {
		return nil, fmt.Errorf("%w: go-cose signature: %w", ErrInternal, err)
	}
	return raw, nil
}

// coseSign1 returns the untagged COSE_Sign1 of payload with the headers
// given, signed with Ed25519 by key (signed commands and result
// signatures; each its own protected header). signing and encoding name
// the steps in its errors, which wrap ErrInternal (signing) or
// ErrMalformed.
func coseSign1(key ed25519.PrivateKey, protected cose.ProtectedHeader, unprotected cose.UnprotectedHeader,
	payload []byte, signing, encoding string) ([]byte, error) {
	signer, err := cose.NewSigner(cose.AlgorithmEdDSA, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	msg := cose.UntaggedSign1Message{
		Headers: cose.Headers{Protected: protected, Unprotected: unprotected},
		Payload: payload,
	}
	if err := msg.Sign(rand.Reader, nil, signer); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInternal, signing, err)
	}
	raw, err := msg.MarshalCBOR()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, encoding, err)
	}
	return raw, nil
}

// Verifier checks signed commands. The lock uses one with its own lock ID;
// the gateway uses one with the target lock's ID before any BLE work. Its
// fields must not change while it is in use; then it is safe for concurrent
// use.
type Verifier struct {
	// Roots are the trusted fleet roots.
	Roots cred.Roots
	// LockID is the lock commands must name.
	LockID [8]byte
	// Now returns the current time (the lock's clock); nil means time.Now.
	Now func() time.Time
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Verified is a signed command that [Verifier.Verify] accepted.
type Verified struct {
	// Body is the signed body; Counter and CommandID repeat its fields.
	Body      Body
	Counter   uint64
	CommandID [16]byte
	// SignerKey names the signer for counter bookkeeping: the 16 lowercase
	// hex digits of the signer credential's kid, or RootKeyPrefix followed
	// by the hex of the root kid when the fleet root signed. The kid rule
	// makes a credential's kid depend only on its kind and subject, so a
	// renewed credential keeps its counter.
	SignerKey string
	// Signer is the signer's verified credential; nil when the fleet root
	// signed.
	Signer *cred.Cert
	// RootKID names the fleet root that signed the command (root-signed) or
	// the signer's credential.
	RootKID []byte
}

// Verify checks a signed command for operation wantOp (the op of the
// request that carries it) and returns what it says. The checks, in this
// order, stop at the first failure (steps 1 to 9 are those of
// docs/protocol.md §12.6, which the lock runs at step 4 of §13.2):
//
//  0. wantOp is a defined operation (ErrUnknownOp);
//  1. len(signed) <= MaxSignedSize, before any decoding (ErrMalformed);
//  2. signed is an untagged COSE_Sign1 in core deterministic CBOR, nothing
//     after it: protected exactly bstr .cbor {1: -8}, unprotected exactly
//     {13: credential} or {4: root kid of 1..16 bytes}, a non-empty payload,
//     a 64-byte signature (ErrMalformed);
//  3. the signer: the credential parses under Roots ([cred.Parse]: its
//     fleet root is trusted and signed it, it is well-formed) and is valid
//     at Now ([cred.Cert.CheckAt]); or the root kid names a trusted root
//     (ErrSignerRejected);
//  4. the credential's kind is operator (ErrSignerRejected: a gateway, user
//     or lock credential never signs commands); a root signer is allowed
//     for wantOp set-time only (ErrForbidden);
//  5. the Ed25519 signature over the Sig_structure verifies under the
//     signer's key (ErrBadSignature);
//  6. the payload is a Body, decoded strictly, args by the body op's table
//     (ErrMalformed);
//  7. the body's op is wantOp, and the signer's effective permissions
//     ([cred.Cert.Allows]) include it: operator role for lock, unlock and
//     status; admin role for those and add-user, remove-user, list-users,
//     clear-bonds, read-audit and set-time; for enter-dfu, which has no
//     bit, the admin role with every bit of its cap ([Op.AdminOnly]);
//     nobody for allow-bond (ErrForbidden);
//  8. the body's lock ID is LockID (ErrWrongLock);
//  9. Now is before the body's NotAfter (ErrExpired).
//
// Verify is stateless: it does NOT check the counter against the highest
// seen for the signer (ErrReplay) nor whether the command ID was already
// executed (ErrDuplicateCommand). The lock does both, and stores the
// counter before it acts; the gateway tracks them too, to refuse early.
func (v *Verifier) Verify(signed []byte, wantOp Op) (*Verified, error) {
	if !wantOp.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrUnknownOp, uint8(wantOp))
	}
	if len(signed) > MaxSignedSize {
		return nil, fmt.Errorf("%w: signed command of %d bytes, limit %d", ErrMalformed, len(signed), MaxSignedSize)
	}
	env, err := parseSign1(signed)
	if err != nil {
		return nil, err
	}
	now := v.now()

	out := &Verified{}
	var pub ed25519.PublicKey
	if env.Unprotected.KCWT != nil {
		c, err := cred.Parse(env.Unprotected.KCWT, v.Roots)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSignerRejected, err)
		}
		if err := c.CheckAt(now); err != nil {
			return nil, fmt.Errorf("%w: %v %q: %w", ErrSignerRejected, c.Kind, c.Subject, err)
		}
		if c.Kind != cred.KindOperator {
			return nil, fmt.Errorf("%w: %v credential %q cannot sign commands", ErrSignerRejected, c.Kind, c.Subject)
		}
		pub = c.PublicKey
		out.Signer = c
		out.RootKID = c.RootKID
		out.SignerKey = hex.EncodeToString(c.KID)
	} else {
		kid := env.Unprotected.KID
		root, ok := v.Roots[string(kid)]
		if !ok || len(root) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: root kid %x is not trusted", ErrSignerRejected, []byte(kid))
		}
		if wantOp != OpSetTime {
			return nil, fmt.Errorf("%w: the fleet root signs set-time only, not %v", ErrForbidden, wantOp)
		}
		pub = root
		out.RootKID = bytes.Clone(kid)
		out.SignerKey = RootKeyPrefix + hex.EncodeToString(kid)
	}

	if cred.VerifySign1(pub, env.Payload, env.Signature) != nil {
		return nil, fmt.Errorf("%w: signer %s", ErrBadSignature, out.SignerKey)
	}

	body, err := parseBody(env.Payload)
	if err != nil {
		return nil, err
	}
	if body.Op != wantOp {
		return nil, fmt.Errorf("%w: body signs %v, request is %v", ErrForbidden, body.Op, wantOp)
	}
	if c := out.Signer; c != nil && body.Op.AdminOnly() {
		if c.Role != cred.RoleAdmin || c.Effective() != cred.Cap(c.Kind, cred.RoleAdmin) {
			return nil, fmt.Errorf("%w: %v %q (role %d) has %v, %v needs an admin with all of %v", ErrForbidden,
				c.Kind, c.Subject, c.Role, c.Effective(), body.Op, cred.AdminPerms)
		}
	} else if c != nil && !c.Allows(body.Op.Perm()) {
		return nil, fmt.Errorf("%w: %v %q (role %d) has %v, %v needs %v", ErrForbidden,
			c.Kind, c.Subject, c.Role, c.Effective(), body.Op, body.Op.Perm())
	}
	if body.LockID != v.LockID {
		return nil, fmt.Errorf("%w: command for %x, this is %x", ErrWrongLock, body.LockID, v.LockID)
	}
	if !now.Before(body.NotAfter) {
		return nil, fmt.Errorf("%w: not_after %s, now %s", ErrExpired,
			body.NotAfter.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	out.Body = body
	out.Counter = body.Counter
	out.CommandID = body.CommandID
	return out, nil
}

// Authorize decides, statelessly, whether req may run on a session whose
// authenticated peer is peer (firmware/channel's Conn.Peer):
//
//   - a request that carries a signed command is authorised by its signer:
//     [Verifier.Verify] with the request's op, whatever the peer (a gateway
//     or phone only transports it);
//   - otherwise, if the op requires a signature for this peer's kind
//     ([RequiresSignature]), it fails with ErrForbidden;
//   - otherwise the peer's credential must be valid at Now and its
//     effective permissions must include the op's bit (ErrForbidden).
//
// It returns the verified command for a signed request, nil for an
// unsigned one. The stateful checks remain the caller's: counters and
// command IDs for signed commands and, on the lock, that a user peer is
// still installed (not removed).
func (v *Verifier) Authorize(req *Request, peer *cred.Cert) (*Verified, error) {
	if req.Signed != nil {
		return v.Verify(req.Signed, req.Op)
	}
	if !req.Op.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrUnknownOp, uint8(req.Op))
	}
	if peer == nil {
		return nil, fmt.Errorf("%w: no authenticated peer", ErrForbidden)
	}
	if req.Op.Open() {
		// set-revocations: any gateway, operator or user whose credential
		// is valid now; the list's own signature is the lock's to check.
		if peer.Kind == cred.KindLock {
			return nil, fmt.Errorf("%w: a lock cannot deliver %v", ErrForbidden, req.Op)
		}
		if err := peer.CheckAt(v.now()); err != nil {
			return nil, fmt.Errorf("%w: peer credential: %w", ErrForbidden, err)
		}
		return nil, nil
	}
	if RequiresSignature(req.Op, peer.Kind) {
		return nil, fmt.Errorf("%w: %v must be signed (session peer kind %v)", ErrForbidden, req.Op, peer.Kind)
	}
	if err := peer.CheckAt(v.now()); err != nil {
		return nil, fmt.Errorf("%w: peer credential: %w", ErrForbidden, err)
	}
	if !peer.Allows(req.Op.Perm()) {
		return nil, fmt.Errorf("%w: %v %q has %v, %v needs %v", ErrForbidden,
			peer.Kind, peer.Subject, peer.Effective(), req.Op, req.Op.Perm())
	}
	return nil, nil
}
