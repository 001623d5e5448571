package frame

import (
	"encoding/binary"
	"strconv"
	"time"
)

// EDHOC_Exporter labels (RFC 9528 §4.2.1) of the frame keying material. They
// are in the Private Use range 32768-65535 of the EDHOC Exporter Label
// registry (RFC 9528 §10.1); the context is always the empty byte string (CBOR 0x40).
const (
	// LabelKeyI2R derives K_I2R, the key of frames sent by the Initiator.
	LabelKeyI2R uint = 32768
	// LabelKeyR2I derives K_R2I, the key of frames sent by the Responder.
	LabelKeyR2I uint = 32769
	// LabelCommonIV derives COMMON_IV, shared by both directions.
	LabelCommonIV uint = 32770
)

// Sizes of the AEAD, AES-CCM-16-64-128 (COSE algorithm 10), and of the frame.
const (
	KeyLen      = 16 // AES-128 key, bytes
	TagLen      = 8  // CCM tag (M), bytes
	NonceLen    = 13 // CCM nonce, bytes (L = 15 - 13 = 2)
	CommonIVLen = NonceLen

	// HeaderLen is the cleartext header: type (1) and seq (4).
	HeaderLen = 5
	// Overhead is the number of bytes a frame adds to its plaintext.
	Overhead = HeaderLen + TagLen
	// AADLen is the length of the additional authenticated data.
	AADLen = 11

	// MaxConnIDLen is the longest connection identifier (Sender ID) the
	// nonce can hold: NonceLen - 6 (RFC 8613 §5.2).
	MaxConnIDLen = NonceLen - 6

	// Version is the frame protocol version bound into the AAD.
	Version = 0x01
)

// aadMagic starts every AAD: ASCII "GWLK".
const aadMagic = "GWLK"

// Defaults of Options.
const (
	// DefaultMaxSeq is the number of frames one direction may send under one
	// key: q = 2^20, the confidentiality limit for AES-CCM-16-64-128 of the
	// OSCORE key-limits work (draft-ietf-core-oscore-key-limits).
	DefaultMaxSeq = 1 << 20
	// DefaultMaxAuthFailures is the number of refused frames after which
	// the session closes: the integrity limit.
	DefaultMaxAuthFailures = 8
	// DefaultIdleTimeout closes a session with no successful Seal or Open.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultMaxPlaintext makes a frame fit the 2048-byte maximum message
	// of the fragmentation layer: 2048 - Overhead.
	DefaultMaxPlaintext = 2048 - Overhead
	// maxCCMPlaintext is the CCM limit for L = 2: 2^16 - 1 bytes.
	maxCCMPlaintext = 1<<16 - 1
)

// Role is the EDHOC role of the local endpoint.
type Role uint8

// Roles. The zero Role is invalid.
const (
	// Initiator is the gateway or the phone: it sends Requests.
	Initiator Role = iota + 1
	// Responder is the lock: it sends Responses and Events.
	Responder
)

func (r Role) String() string {
	switch r {
	case Initiator:
		return "Initiator"
	case Responder:
		return "Responder"
	}
	return "Role(" + strconv.Itoa(int(r)) + ")"
}

// Type is the frame type, the first byte of a frame.
type Type uint8

// Frame types. Any other value is refused.
const (
	// TypeRequest carries a command, Initiator to Responder only.
	TypeRequest Type = 0x10
	// TypeResponse carries a result, Responder to Initiator only.
	TypeResponse Type = 0x11
	// TypeEvent is an unsolicited notification, Responder to Initiator only.
	TypeEvent Type = 0x12
	// TypeClose ends the session, either direction. Its plaintext is exactly
	// one byte, a CloseReason.
	TypeClose Type = 0x1F
)

func (t Type) String() string {
	switch t {
	case TypeRequest:
		return "Request"
	case TypeResponse:
		return "Response"
	case TypeEvent:
		return "Event"
	case TypeClose:
		return "Close"
	}
	return "Type(0x" + strconv.FormatUint(uint64(t), 16) + ")"
}

// CloseReason is the one-byte plaintext of a Close frame. A receiver treats
// an unknown value as CloseNormal.
type CloseReason uint8

// Close reasons.
const (
	CloseNormal          CloseReason = 0x00 // work done
	CloseIdle            CloseReason = 0x01 // about to time out
	CloseRekey           CloseReason = 0x02 // NeedsRekey: re-handshake
	CloseTooManyFailures CloseReason = 0x03 // integrity limit reached
	CloseProtocolError   CloseReason = 0x04 // unexpected or malformed plaintext
)

// direction is the direction byte of the AAD.
type direction uint8

const (
	dirI2R direction = 0x00 // Initiator -> Responder
	dirR2I direction = 0x01 // Responder -> Initiator
)

// allowed reports whether frames of type t may travel in direction d.
func allowed(t Type, d direction) bool {
	switch t {
	case TypeRequest:
		return d == dirI2R
	case TypeResponse, TypeEvent:
		return d == dirR2I
	case TypeClose:
		return true
	}
	return false
}

// nonceBase returns the AEAD nonce of sequence number 0 for a sender, per
// RFC 8613 §5.2: (S || ID_PIV left-padded to NonceLen-6 bytes || PIV
// left-padded to 5 bytes) XOR COMMON_IV, with PIV = 0. The caller checked
// len(senderID) <= MaxConnIDLen and len(commonIV) == NonceLen.
func nonceBase(senderID, commonIV []byte) [NonceLen]byte {
	var n [NonceLen]byte
	n[0] = byte(len(senderID))
	copy(n[1+MaxConnIDLen-len(senderID):1+MaxConnIDLen], senderID)
	for i := range n {
		n[i] ^= commonIV[i]
	}
	return n
}

// makeNonce writes into dst the nonce of sequence number seq given the
// sender's base. The PIV is the shortest big-endian encoding of seq, and
// left-padded to 5 bytes it is 0x00 followed by seq as uint32 big-endian, so
// byte 8 of the base is unchanged and bytes 9..12 are XORed with seq.
func makeNonce(dst *[NonceLen]byte, base *[NonceLen]byte, seq uint32) {
	*dst = *base
	dst[9] ^= byte(seq >> 24)
	dst[10] ^= byte(seq >> 16)
	dst[11] ^= byte(seq >> 8)
	dst[12] ^= byte(seq)
}

// makeAAD writes the additional authenticated data:
// "GWLK" || Version || direction || type || seq (uint32 big-endian).
func makeAAD(dst *[AADLen]byte, d direction, t Type, seq uint32) {
	copy(dst[0:4], aadMagic)
	dst[4] = Version
	dst[5] = byte(d)
	dst[6] = byte(t)
	binary.BigEndian.PutUint32(dst[7:11], seq)
}

// windowSize is the number of sequence numbers the replay window remembers.
const windowSize = 64

// window is the receiver's sliding anti-replay window (RFC 4303 §3.4.3,
// RFC 6347 §4.1.2.6). top is the highest accepted sequence number, -1 before
// any; bit i of bits is set when top-i has been accepted.
type window struct {
	top  int64
	bits uint64
}

func newWindow() window { return window{top: -1} }

// check reports whether seq may be accepted, without changing the window.
func (w *window) check(seq uint32) error {
	s := int64(seq)
	if s > w.top {
		return nil
	}
	d := w.top - s
	if d >= windowSize {
		return ErrStale
	}
	if w.bits&(1<<uint(d)) != 0 {
		return ErrReplay
	}
	return nil
}

// accept records seq, which check allowed and whose frame authenticated.
func (w *window) accept(seq uint32) {
	s := int64(seq)
	if s > w.top {
		if d := s - w.top; d >= windowSize {
			w.bits = 1
		} else {
			w.bits = w.bits<<uint(d) | 1
		}
		w.top = s
		return
	}
	w.bits |= 1 << uint(w.top-s)
}
