package cred

import (
	"crypto/ed25519"
	"errors"
)

// ProtectedEdDSA is the only protected header this project's COSE_Sign1
// objects carry (credentials and signed commands): bstr .cbor {1: -8}.
var ProtectedEdDSA = []byte{0xa1, 0x01, 0x27}

// SigStructure returns the COSE Sig_structure (RFC 9052 §4.4) of a
// COSE_Sign1 with protected header ProtectedEdDSA and no external AAD:
// ["Signature1", h'a10127', h”, payload], that is the fixed prefix
// 84 6a 5369676e617475726531 43 a10127 40 then payload as a bstr.
func SigStructure(payload []byte) []byte {
	const prefix = "\x84\x6aSignature1\x43\xa1\x01\x27\x40"
	tbs := make([]byte, 0, len(prefix)+9+len(payload))
	tbs = append(tbs, prefix...)
	n := uint64(len(payload))
	switch {
	case n < 24:
		tbs = append(tbs, 0x40|byte(n))
	case n <= 0xff:
		tbs = append(tbs, 0x58, byte(n))
	case n <= 0xffff:
		tbs = append(tbs, 0x59, byte(n>>8), byte(n))
	default:
		tbs = append(tbs, 0x5a, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(tbs, payload...)
}

// errBadKeyLen is returned by VerifySign1 for a key that is not Ed25519.
var errBadKeyLen = errors.New("key is not an Ed25519 public key")

// VerifySign1 checks the EdDSA signature of a COSE_Sign1 whose protected
// header is ProtectedEdDSA, over payload. It is the one verification both
// credentials and signed commands use.
func VerifySign1(key ed25519.PublicKey, payload, signature []byte) error {
	if len(key) != ed25519.PublicKeySize {
		return errBadKeyLen
	}
	if !ed25519.Verify(key, SigStructure(payload), signature) {
		return errors.New("signature does not verify")
	}
	return nil
}
