package cred

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// these; match them with errors.Is. Errors returned by
// [Verifier.ResolveCredential] additionally wrap edhoc.ErrCredentialRejected
// or edhoc.ErrUnknownCredential (see [Verifier.ResolveCredential]).
var (
	// ErrTooLarge is returned when an encoded credential is longer than
	// [MaxSize] bytes. It is checked before any decoding.
	ErrTooLarge = errors.New("cred: credential too large")
	// ErrMalformed is returned when a credential or an ID_CRED map is not
	// the exact CBOR structure the spec allows: not well-formed, a tag
	// (including COSE_Sign1_Tagged), an indefinite length, a duplicate map
	// key, an unknown claim or key parameter, a wrong type, a missing
	// required item, trailing bytes, or any encoding that is not core
	// deterministic (RFC 8949 §4.2.1).
	ErrMalformed = errors.New("cred: malformed credential")
	// ErrUnknownRoot is returned when the root kid in the unprotected header
	// names no fleet root the verifier trusts (for example a root that was
	// retired by rotation).
	ErrUnknownRoot = errors.New("cred: unknown fleet root")
	// ErrBadSignature is returned when the COSE_Sign1 signature does not
	// verify under the fleet root named by its kid.
	ErrBadSignature = errors.New("cred: bad signature")
	// ErrInvalidClaims is returned when the claims are well-formed CBOR but
	// break a rule of the spec: unknown kind, a role not allowed for the
	// kind, a subject of the wrong length or format, unknown permission
	// bits, times out of range, or exp not after nbf. [Issue] returns it
	// for the same reasons.
	ErrInvalidClaims = errors.New("cred: invalid claims")
	// ErrBadKID is returned when the kid in the credential's COSE_Key does
	// not follow the kid rule (see [KID]).
	ErrBadKID = errors.New("cred: kid does not match subject")
	// ErrExpired is returned when the check time is at or after the
	// credential's exp.
	ErrExpired = errors.New("cred: credential expired")
	// ErrNotYetValid is returned when the check time is before the
	// credential's nbf.
	ErrNotYetValid = errors.New("cred: credential not yet valid")
	// ErrWrongKind is returned when the credential's kind is not among the
	// kinds a [Verifier] accepts from the peer.
	ErrWrongKind = errors.New("cred: wrong credential kind")
	// ErrWrongSubject is returned when a [Verifier] expects one subject
	// (for example the lock it meant to connect to) and the credential
	// names another.
	ErrWrongSubject = errors.New("cred: wrong subject")
	// ErrMissingPermission is returned when the credential's effective
	// permissions (claimed perms AND the cap of its kind and role) lack a
	// permission the [Verifier] requires.
	ErrMissingPermission = errors.New("cred: missing permission")
	// ErrUnknownKID is returned when ID_CRED names a credential by kid and
	// no credential with that kid is in the verifier's cache.
	ErrUnknownKID = errors.New("cred: no cached credential for kid")
	// ErrUnsupportedIDCred is returned when ID_CRED is a well-formed map but
	// neither {4: kid} nor {13: CWT} (for example 'kccs', 'x5t', or several
	// parameters at once).
	ErrUnsupportedIDCred = errors.New("cred: unsupported ID_CRED")
	// ErrBadKey is returned by [Issue] when the root private key or the
	// root kid has the wrong length.
	ErrBadKey = errors.New("cred: bad key")
	// ErrInvalidRevocations is returned when a revocation list is
	// well-formed CBOR but breaks a rule of docs/protocol.md §5.11: serial
	// 0, more than MaxRevoked kids, a kid of the wrong length, kids not
	// strictly ascending, a time out of range. [IssueRevocations] returns
	// it for the same reasons.
	ErrInvalidRevocations = errors.New("cred: invalid revocation list")
)
