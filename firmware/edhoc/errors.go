package edhoc

import "errors"

// Sentinel errors. Every error returned by this package wraps one of these;
// match them with errors.Is.
var (
	// ErrMalformed is returned when a message is not well-formed CBOR of the
	// expected shape: wrong type, wrong number of items, trailing bytes,
	// indefinite lengths or non-shortest encodings (RFC 9528 §3.1, §5).
	ErrMalformed = errors.New("edhoc: malformed message")
	// ErrUnsupportedMethod is returned when message_1 names a method other
	// than 0 (signature/signature).
	ErrUnsupportedMethod = errors.New("edhoc: unsupported method")
	// ErrUnsupportedSuite is returned when the selected cipher suite is not
	// supported; the Responder's error message then lists SUITES_R
	// (RFC 9528 §6.3), and the Initiator reports the peer's list.
	ErrUnsupportedSuite = errors.New("edhoc: unsupported cipher suite")
	// ErrInvalidKey is returned when an ephemeral public key has the wrong
	// length, is not a valid point, is of low order, or equals our own.
	ErrInvalidKey = errors.New("edhoc: invalid ephemeral key")
	// ErrUnknownCredential is returned (by a CredentialResolver) when
	// ID_CRED_x names a credential we do not know or cannot obtain.
	ErrUnknownCredential = errors.New("edhoc: unknown credential")
	// ErrCredentialRejected is returned when the resolver refused the peer's
	// credential: bad issuer signature, outside its validity window, or the
	// wrong subject kind or permissions.
	ErrCredentialRejected = errors.New("edhoc: credential rejected")
	// ErrAuthentication is returned when the peer's signature
	// (Signature_or_MAC_2 or _3) does not verify, or when message_3 or
	// message_4 fails AEAD decryption.
	ErrAuthentication = errors.New("edhoc: authentication failed")
	// ErrState is returned when a method is called out of order (for
	// example ProcessMessage3 before Message2), or on a handshake that has
	// already failed. A failed handshake cannot be resumed.
	ErrState = errors.New("edhoc: call out of order")
	// ErrPeerError is returned when the peer sent an EDHOC error message;
	// the returned error is a *PeerError with its contents.
	ErrPeerError = errors.New("edhoc: peer sent an error message")
	// ErrCriticalEAD is returned when a message carries a critical EAD item
	// (negative ead_label) that the application did not accept.
	ErrCriticalEAD = errors.New("edhoc: unsupported critical EAD item")
)
