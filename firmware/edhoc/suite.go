package edhoc

import (
	"bytes"
	"fmt"
	"math/big"
)

// Suite is an EDHOC cipher suite number (RFC 9528 §3.6, §10.2).
type Suite int64

// Method is an EDHOC authentication method (RFC 9528 §3.2).
type Method int64

const (
	// MethodSigSig: both parties authenticate with signatures. The only
	// method this profile supports.
	MethodSigSig Method = 0
	// Suite0 is AES-CCM-16-64-128, SHA-256, MAC length 8, X25519, EdDSA,
	// AES-CCM-16-64-128, SHA-256. The only suite this profile supports.
	Suite0 Suite = 0
)

// Profile constants for method 0, suite 0.
const (
	hashLen      = 32 // SHA-256
	keyLen       = 16 // AES-CCM-16-64-128 key
	ivLen        = 13 // AES-CCM-16-64-128 nonce
	tagLen       = 8  // AES-CCM-16-64-128 tag
	sigLen       = 64 // Ed25519 signature
	ecdhLen      = 32 // X25519 public key
	macLenMethod = hashLen

	// MaxConnIDLen bounds connection identifiers. They become OSCORE-style
	// sender IDs in the protected-frame nonce (RFC 8613 §5.2), which hold
	// at most nonce length - 6 = 7 bytes.
	MaxConnIDLen = 7
	// MaxMessageLen bounds any EDHOC message this implementation accepts;
	// it equals the maximum message of the GATT fragmentation layer.
	MaxMessageLen = 2048
)

// ephemeralKeyLen gives, for each registered suite, the length of G_X/G_Y
// and the curve, so that keys are checked against the suite they claim even
// when we do not support that suite (RFC 9529 §4.2).
var registeredSuites = map[Suite]struct {
	keyLen int
	curve  string
}{
	0: {32, "X25519"}, 1: {32, "X25519"},
	2: {32, "P-256"}, 3: {32, "P-256"},
	4: {32, "X25519"}, 5: {32, "P-256"}, 6: {32, "X25519"},
	24: {48, "P-384"}, 25: {56, "X448"},
}

// checkEphemeral validates a peer's ephemeral public key for suite s
// (RFC 9528 §9.2; SP 800-56A §5.6.2.3 for the NIST curves).
func checkEphemeral(s Suite, g []byte) error {
	info, ok := registeredSuites[s]
	if !ok {
		return nil // unknown suite: refused later as unsupported
	}
	if len(g) != info.keyLen {
		return fmt.Errorf("%w: %s key is %d bytes, want %d", ErrInvalidKey, info.curve, len(g), info.keyLen)
	}
	switch info.curve {
	case "X25519":
		if isLowOrderX25519(g) {
			return fmt.Errorf("%w: X25519 point of low order", ErrInvalidKey)
		}
	case "P-256":
		if !onP256(g) {
			return fmt.Errorf("%w: not the x-coordinate of a P-256 point", ErrInvalidKey)
		}
	}
	return nil
}

// lowOrderX25519 lists the u-coordinates of points of small order on
// Curve25519 and its twist, including non-canonical encodings (the list
// used by libsodium and by "May the Fourth Be With You", Genkin et al.).
// X25519 with any of them gives an all-zero shared secret; the DH result is
// also checked for all zeros as a second line (RFC 9528 §9.2).
var lowOrderX25519 = [][]byte{
	make([]byte, 32),                       // 0
	append([]byte{1}, make([]byte, 31)...), // 1
	{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
	{0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
	{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // p-1
	{0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // p
	{0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // p+1
}

func isLowOrderX25519(u []byte) bool {
	var c [32]byte
	copy(c[:], u)
	c[31] &= 0x7f // RFC 7748 §5: the top bit is ignored
	for _, l := range lowOrderX25519 {
		if bytes.Equal(c[:], l) {
			return true
		}
	}
	return false
}

var (
	p256P, _ = new(big.Int).SetString("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff", 16)
	p256B, _ = new(big.Int).SetString("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b", 16)
)

// onP256 reports whether x < p and x³ - 3x + b is a square mod p, i.e. x is
// the x-coordinate of a point on P-256 (compact representation, RFC 9528
// §3.7 and RFC 6090).
func onP256(xb []byte) bool {
	x := new(big.Int).SetBytes(xb)
	if x.Cmp(p256P) >= 0 {
		return false
	}
	rhs := new(big.Int).Exp(x, big.NewInt(3), p256P)
	rhs.Sub(rhs, new(big.Int).Mul(big.NewInt(3), x))
	rhs.Add(rhs, p256B)
	rhs.Mod(rhs, p256P)
	return rhs.Sign() == 0 || big.Jacobi(rhs, p256P) == 1
}
