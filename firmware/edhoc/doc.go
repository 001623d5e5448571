// Package edhoc implements the EDHOC key exchange, RFC 9528, in the profile
// this project uses: method 0 (both parties authenticate with signatures) and
// cipher suite 0 (AES-CCM-16-64-128, SHA-256, X25519, EdDSA), in both roles.
//
// The gateway (or a phone) is the Initiator and the lock is the Responder.
// The package owns message encoding and strict decoding, the key schedule
// (EDHOC_Extract, EDHOC_Expand, EDHOC_KDF), MAC_2/MAC_3, the signatures,
// message_3/message_4 protection, EDHOC error messages, connection
// identifiers and EDHOC_Exporter. Credentials are opaque here: a
// CredentialResolver supplied by the caller (see firmware/cred) decides
// whether a peer's credential is acceptable.
//
// It may import only the standard library, golang.org/x/crypto and
// github.com/fxamacker/cbor/v2: it is the code a lock's firmware mirrors, so
// it knows nothing of the gateway.
//
// Conformance: the test suite reproduces the RFC 9529 §2 trace (method 0,
// suite 0) byte for byte and rejects the invalid messages of RFC 9529 §4.
package edhoc
