// Package frame protects application messages between an EDHOC Initiator
// (the gateway or a phone) and an EDHOC Responder (the lock) once the EDHOC
// handshake (RFC 9528, method 0, cipher suite 0) has completed.
//
// It owns, and nothing else in the project re-implements:
//
//   - the derivation of the frame keys and Common IV from EDHOC_Exporter
//     (private-use exporter labels 32768, 32769 and 32770, empty context, the CBOR byte string 0x40);
//   - the mapping of the EDHOC connection identifiers to Sender IDs
//     (RFC 9528 Appendix A.1: the Initiator sends with C_R, the Responder
//     with C_I);
//   - the AEAD nonce, built exactly as OSCORE builds it (RFC 8613 §5.2) from
//     the Sender ID, the frame's sequence number and the Common IV;
//   - the frame layout (type | seq | ciphertext | tag), the frame types and
//     which direction each may travel in, and the additional authenticated
//     data that binds the protocol version, the direction, the type and the
//     sequence number;
//   - the receiver's 64-frame sliding replay window (RFC 4303 §3.4.3,
//     RFC 6347 §4.1.2.6), and the session limits: the sequence-number
//     (confidentiality) limit, the failed-frame (integrity) limit, the idle
//     timeout and the maximum plaintext size.
//
// It does no I/O: it turns plaintext into frames and frames into plaintext.
// Fragmentation to the ATT MTU belongs to firmware/fragment, the handshake to
// firmware/edhoc, and the meaning of the plaintext (CBOR commands) to the
// layers above. The byte-level specification that the lock's C firmware
// implements is docs/protocol.md §6; this package is its reference
// implementation, and its tests pin the worked example printed there.
//
// # Dependencies
//
// This is the code a lock's firmware mirrors, so it may import only the
// standard library and firmware/internal/ccm. It knows nothing of the
// gateway, BlueZ or MQTT.
//
// # Why our own CCM on crypto/aes
//
// The Go standard library has no CCM mode (golang/go#27484). This package
// used pion/dtls's pkg/crypto/ccm until it showed up in the benchmarks: it
// allocates 9 times per Seal+Open of a frame (a tag buffer, a plaintext
// copy, a counter-mode stream per call), and a protected frame cost 2.24
// times bare CCM. firmware/internal/ccm is CCM exactly as RFC 3610 and NIST
// SP 800-38C define it, on crypto/aes (hardware AES where the CPU has it),
// and nothing more: no new construction, 300 lines with comments. It does not
// allocate when the output buffer has room, compares tags with
// crypto/subtle.ConstantTimeCompare, zeroes the bytes it decrypted when the
// tag fails, refuses messages its length field cannot encode, and follows
// cipher.AEAD's aliasing rules (in place or apart). Its tests pin it to the
// 24 packet vectors of RFC 3610 §8, the examples of SP 800-38C Appendix C,
// the AES-CCM-16-64-128 vectors of RFC 8613 Appendix C.7 and C.8 and, byte
// for byte, to pion's outputs over every tag and nonce size; the RFC 9529
// trace (firmware/edhoc) and the vectors of firmware/testdata still match.
// This package uses it as AES-CCM-16-64-128 (COSE algorithm 10: 16-byte
// key, 8-byte tag, 13-byte nonce, L = 2), through ccm.New(aes.NewCipher(key),
// 8, 13), and TestCCMMatchesRFC8613 checks it so configured.
//
// # Concurrency
//
// A Session is safe for concurrent use. Seal calls are serialised with each
// other by one mutex and Open calls with each other by another, so one
// goroutine may send while another receives without contention; the replay
// check and the window update of an Open are atomic (RFC 8613 §7.4). Close
// may be called from any goroutine, any number of times.
//
// # Errors
//
// Every error returned wraps one of the sentinel errors in errors.go; match
// them with errors.Is. Errors carry frame types, sequence numbers and lengths,
// never key material, nonces or plaintext.
package frame
