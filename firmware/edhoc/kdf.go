package edhoc

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"

	"github.com/gatewayd/gatewayd/firmware/internal/ccm"
)

// Key schedule (RFC 9528 §4.1), suite 0: SHA-256.

// extract is EDHOC_Extract(salt, IKM) = HMAC-SHA-256(salt, IKM) (§4.1.1).
func extract(salt, ikm []byte) []byte {
	m := hmac.New(sha256.New, salt)
	m.Write(ikm)
	return m.Sum(nil)
}

// kdf is EDHOC_KDF(PRK, label, context, length) = EDHOC_Expand(PRK, info,
// length) with info = (label: uint, context: bstr, length: uint) as a CBOR
// sequence (§4.1.2).
func kdf(prk []byte, label uint64, context []byte, length int) []byte {
	info := make([]byte, 0, len(context)+16)
	info = appendHead(info, majorUint, label)
	info = appendBstr(info, context)
	info = appendHead(info, majorUint, uint64(length))
	out, err := hkdf.Expand(sha256.New, prk, string(info), length)
	if err != nil {
		// Only for length > 255*32, which no caller asks for.
		panic(fmt.Sprintf("edhoc: HKDF-Expand: %v", err))
	}
	return out
}

// transcript hashes a CBOR sequence: the previous transcript hash as a bstr
// data item followed by the given raw items (§5.3.2, §5.4.2, §5.5.2).
func transcript(th []byte, items ...[]byte) []byte {
	h := sha256.New()
	var hd [2]byte
	h.Write(appendHead(hd[:0], majorBstr, uint64(len(th))))
	h.Write(th)
	for _, it := range items {
		h.Write(it)
	}
	return h.Sum(nil)
}

// encrypt0AAD is the COSE Enc_structure used as associated data for
// message_3 and message_4: ["Encrypt0", empty bstr, TH] (§5.4.2, §5.5.1).
func encrypt0AAD(th []byte) []byte {
	a := make([]byte, 0, 48)
	a = appendHead(a, majorArray, 3)
	a = appendTstr(a, "Encrypt0")
	a = appendBstr(a, nil)
	return appendBstr(a, th)
}

// newAEAD returns AES-CCM-16-64-128 (COSE algorithm 10) for key.
func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("edhoc: aes.NewCipher: %w", err)
	}
	return ccm.New(b, tagLen, ivLen)
}

// sigStructure is the COSE Sig_structure that EDHOC signs for
// Signature_or_MAC_2/3 with method 0 (§5.3.2, §5.4.2):
// ["Signature1", << ID_CRED_x >>, << TH_x, CRED_x, ? EAD_x >>, MAC_x].
func sigStructure(idCred, th, cred, ead, mac []byte) []byte {
	ext := make([]byte, 0, 2+len(th)+len(cred)+len(ead))
	ext = appendBstr(ext, th)
	ext = append(ext, cred...)
	ext = append(ext, ead...)
	s := make([]byte, 0, 16+len(idCred)+len(ext)+len(mac)+12)
	s = appendHead(s, majorArray, 4)
	s = appendTstr(s, "Signature1")
	s = appendBstr(s, idCred)
	s = appendBstr(s, ext)
	return appendBstr(s, mac)
}

// macContext builds context_2 = << C_R, ID_CRED_R, TH_2, CRED_R, ? EAD_2 >>
// (cR non-nil) or context_3 = << ID_CRED_I, TH_3, CRED_I, ? EAD_3 >>.
func macContext(cR, idCred, th, cred, ead []byte) []byte {
	c := make([]byte, 0, 8+len(idCred)+len(th)+len(cred)+len(ead))
	if cR != nil {
		c = appendConnID(c, cR)
	}
	c = append(c, idCred...)
	c = appendBstr(c, th)
	c = append(c, cred...)
	return append(c, ead...)
}
