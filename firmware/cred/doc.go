// Package cred implements the fleet's credentials: CBOR Web Tokens (CWT,
// RFC 8392) signed by a fleet root key with COSE_Sign1 (RFC 9052, EdDSA),
// whose claims name a subject (lock, gateway, operator or user), its Ed25519
// public key in a 'cnf' COSE_Key (RFC 8747), its validity window, and its
// kind, role and permissions. The normative description, for the lock's C
// firmware as much as for this code, is docs/protocol.md §5.
//
// The package owns:
//   - the credential format and its strict decoding ([Issue], [Parse]): one
//     encoding per credential, core deterministic CBOR, untagged COSE_Sign1,
//     nothing unknown accepted;
//   - the kinds, roles and permission bits, and the caps that bound what
//     each kind and role may ever do ([Cap], [Cert.Allows]);
//   - the kid rule that ties a credential's kid to its subject ([KID]);
//   - the EDHOC binding: CRED_x and ID_CRED_x ('kcwt' by value, 'kid' by
//     reference) of a credential ([Cert.EDHOC]), and a [Verifier] that
//     implements edhoc.CredentialResolver with a bounded [Cache] of
//     credentials seen by value.
//
// Fleet root keys are managed elsewhere; this package only takes them as
// arguments. Several roots may be trusted at once ([Roots], keyed by root
// kid) so that the fleet root can be rotated.
//
// It may import only the standard library, firmware/edhoc (for its
// Credential, CredentialResolver and error types), github.com/veraison/go-cose
// and github.com/fxamacker/cbor/v2.
package cred
