package edhoc

import "crypto/ed25519"

// Credential is one party's authentication credential, as EDHOC uses it
// (RFC 9528 §3.5.2 and §3.5.3).
//
// EDHOC itself treats credentials as opaque bytes; what they mean (who issued
// them, what kind of subject they name, what it may do) is decided by a
// [CredentialResolver] that the application supplies.
type Credential struct {
	// IDCred is ID_CRED_x: a CBOR map of COSE header parameters, in
	// deterministic encoding, e.g. {4: h'…'} ('kid') or {13: COSE_Sign1}
	// ('kcwt'). It enters the MAC context and the signature in this full
	// form; on the wire a lone 'kid' is sent compactly (RFC 9528 §3.5.3.2).
	IDCred []byte
	// Cred is CRED_x: the credential as one CBOR data item, exactly as it
	// enters the transcript hash and the MAC context.
	Cred []byte
	// PublicKey is the Ed25519 key that authenticates the party (method 0).
	PublicKey ed25519.PublicKey
	// Info carries what the resolver learnt about the credential (for
	// example a parsed, verified CWT), for the application to inspect after
	// the handshake. EDHOC never reads it.
	Info any
}

// CredentialResolver turns a peer's ID_CRED_x into a verified credential.
//
// idCred is the full ID_CRED_x map in deterministic CBOR (a compact 'kid'
// received on the wire is expanded to {4: kid} first). The resolver checks
// everything the application requires of the peer — issuer signature,
// validity window, subject kind and permissions — and returns an error if
// any check fails. An error that wraps [ErrUnknownCredential] makes EDHOC
// answer with ERR_CODE 3 (RFC 9528 §6.3); any other error gives ERR_CODE 1.
type CredentialResolver interface {
	ResolveCredential(idCred []byte) (Credential, error)
}

// ResolverFunc adapts a function to [CredentialResolver].
type ResolverFunc func(idCred []byte) (Credential, error)

// ResolveCredential calls f.
func (f ResolverFunc) ResolveCredential(idCred []byte) (Credential, error) { return f(idCred) }
