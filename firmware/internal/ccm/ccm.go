// Package ccm is the CCM mode of RFC 3610 (NIST SP 800-38C): counter mode
// encryption with a CBC-MAC, over a 128-bit block cipher, as a cipher.AEAD.
//
// It is the AES-CCM of the protocol (AES-CCM-16-64-128, COSE algorithm 10:
// 16-byte key, 8-byte tag, 13-byte nonce, L = 2) for firmware/edhoc
// (message_3, message_4) and firmware/frame (every frame). The Go standard
// library has no CCM (golang/go#27484); this is the standard mode written
// on crypto/aes, not new cryptography, and its tests pin it to the packet
// vectors of RFC 3610 §8, the examples of SP 800-38C Appendix C, the
// AES-CCM-16-64-128 vectors of RFC 8613 Appendix C and outputs of an
// independent implementation (testdata/golden.json).
//
// It supports every parameter set of RFC 3610: tags of M = 4, 6, 8, 10, 12,
// 14 or 16 bytes, and length fields of L = 2 to 8 bytes (nonces of 15 - L =
// 13 to 7 bytes). Beyond the standard mode it promises:
//
//   - no allocation in Seal or Open when dst has room for the output and
//     the AEAD is not in use by another goroutine at that moment (the
//     working blocks live in the AEAD, wiped after each call; a concurrent
//     call gets fresh ones, so one AEAD is still safe for concurrent use);
//   - the tag is compared in constant time (crypto/subtle);
//   - Open releases nothing on failure: it zeroes the bytes it decrypted
//     into dst's spare capacity and returns dst unchanged;
//   - the aliasing rules of cipher.AEAD: the output may overlap the input
//     exactly (in place) or not at all, and must not overlap the
//     additional data; an inexact overlap panics, as in crypto/cipher;
//   - a plaintext of 2^(8L) bytes or more is refused (Seal panics, as
//     cipher.AEAD's Seal has no error; Open returns ErrTooLong).
//
// It imports only the standard library, as firmware/ must (DEVELOPERS.md).
package ccm

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"unsafe"
)

// BlockSize is the block size CCM requires of its cipher: 16 bytes.
const BlockSize = 16

// aead is CCM over one block cipher with one (M, L). It may be used from
// many goroutines at once.
type aead struct {
	b      cipher.Block
	m      int // tag length M in bytes
	l      int // length-field size L in bytes
	maxLen int // the longest plaintext: min(2^(8L) - 1, MaxInt - M)

	// mu guards s, the working blocks of the call that holds it.
	mu sync.Mutex
	s  scratch
}

// scratch is the per-call working state: the CBC-MAC block, the counter
// block and one block of key stream. The block cipher is an interface, so
// blocks passed to it escape to the heap; keeping them in the AEAD spares
// an allocation per call.
type scratch struct {
	mac, ctr, ks [BlockSize]byte
}

// acquire returns the AEAD's working blocks, or, while another call holds
// them, fresh ones (a concurrent call allocates; it never waits).
func (a *aead) acquire() (s *scratch, held bool) {
	if a.mu.TryLock() {
		return &a.s, true
	}
	return new(scratch), false
}

// release wipes s (it held key stream and MAC state) and gives it back.
func (a *aead) release(s *scratch, held bool) {
	*s = scratch{}
	if held {
		a.mu.Unlock()
	}
}

// New returns CCM over the block cipher b (whose block size must be 16
// bytes) with tagSize-byte tags and nonceSize-byte nonces: RFC 3610's
// M = tagSize (4, 6, ..., 16) and L = 15 - nonceSize (2 to 8, so nonceSize
// is 7 to 13). AES-CCM-16-64-128 is New(aesBlock, 8, 13).
func New(b cipher.Block, tagSize, nonceSize int) (cipher.AEAD, error) {
	if b == nil || b.BlockSize() != BlockSize {
		return nil, fmt.Errorf("%w: the cipher's block size must be %d bytes", ErrBlockSize, BlockSize)
	}
	if tagSize < 4 || tagSize > 16 || tagSize%2 != 0 {
		return nil, fmt.Errorf("%w: %d bytes, want 4, 6, 8, 10, 12, 14 or 16", ErrTagSize, tagSize)
	}
	if nonceSize < 7 || nonceSize > 13 {
		return nil, fmt.Errorf("%w: %d bytes, want 7 to 13", ErrNonceSize, nonceSize)
	}
	a := &aead{b: b, m: tagSize, l: 15 - nonceSize}
	a.maxLen = math.MaxInt - tagSize
	if a.l < 8 && uint64(1)<<(8*a.l)-1 < uint64(a.maxLen) {
		a.maxLen = 1<<(8*a.l) - 1
	}
	return a, nil
}

// NonceSize returns 15 - L.
func (a *aead) NonceSize() int { return 15 - a.l }

// Overhead returns the tag length M.
func (a *aead) Overhead() int { return a.m }

// Seal encrypts and authenticates plaintext, authenticates additionalData,
// appends ciphertext || tag to dst and returns the extended slice. The
// nonce must be NonceSize bytes and never repeat under one key. Seal
// panics on a nonce of the wrong size, a plaintext of 2^(8L) bytes or
// more, or an output (dst's spare capacity) that overlaps plaintext other
// than exactly, or overlaps additionalData at all.
func (a *aead) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	if len(nonce) != a.NonceSize() {
		panic("ccm: incorrect nonce length given to CCM")
	}
	if len(plaintext) > a.maxLen {
		panic("ccm: message too large for CCM")
	}
	ret, out := sliceForAppend(dst, len(plaintext)+a.m)
	if inexactOverlap(out, plaintext) {
		panic("ccm: invalid buffer overlap of output and input")
	}
	if anyOverlap(out, additionalData) {
		panic("ccm: invalid buffer overlap of output and additional data")
	}
	s, held := a.acquire()
	defer a.release(s, held)
	// MAC-then-encrypt: the CBC-MAC reads the plaintext before the counter
	// mode may overwrite it in place.
	a.cbcMAC(s, nonce, plaintext, additionalData)
	a.ctr(s, nonce, out[:len(plaintext)], plaintext)
	// The tag is the MAC encrypted with S_0, the key stream block of
	// counter 0 (RFC 3610 §2.3).
	a.counter(s, nonce, 0)
	a.b.Encrypt(s.ks[:], s.ctr[:])
	subtle.XORBytes(out[len(plaintext):], s.mac[:a.m], s.ks[:a.m])
	return ret
}

// Open checks the tag of ciphertext (ciphertext || tag, as Seal makes it)
// and additionalData, and if it verifies appends the plaintext to dst and
// returns the extended slice. Otherwise it returns nil and ErrOpen (or
// ErrTooLong), with every byte it wrote to dst's spare capacity zeroed.
// Open panics on a nonce of the wrong size, or on an output that overlaps
// ciphertext other than exactly or overlaps additionalData at all.
func (a *aead) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	if len(nonce) != a.NonceSize() {
		panic("ccm: incorrect nonce length given to CCM")
	}
	if len(ciphertext) < a.m {
		return nil, ErrOpen
	}
	if len(ciphertext)-a.m > a.maxLen {
		return nil, ErrTooLong
	}
	n := len(ciphertext) - a.m
	tag := ciphertext[n:]
	ret, out := sliceForAppend(dst, n)
	if inexactOverlap(out, ciphertext[:n]) {
		panic("ccm: invalid buffer overlap of output and input")
	}
	if anyOverlap(out, additionalData) || anyOverlap(out, tag) {
		panic("ccm: invalid buffer overlap of output and additional data")
	}
	s, held := a.acquire()
	defer a.release(s, held)
	// S_0 first: decrypting in place must not be able to touch the tag,
	// and the overlap checks above make sure it cannot.
	a.counter(s, nonce, 0)
	a.b.Encrypt(s.ks[:], s.ctr[:])
	var want [BlockSize]byte
	subtle.XORBytes(want[:a.m], tag, s.ks[:a.m])
	a.ctr(s, nonce, out, ciphertext[:n])
	a.cbcMAC(s, nonce, out, additionalData)
	ok := subtle.ConstantTimeCompare(s.mac[:a.m], want[:a.m]) == 1
	clear(want[:])
	if !ok {
		clear(out)
		return nil, ErrOpen
	}
	return ret, nil
}

// cbcMAC computes the CBC-MAC T of RFC 3610 §2.2 into s.mac (all 16
// bytes; the tag is its first M): B_0 = flags | nonce | l(m), then the
// encoded length of the additional data and the data itself, zero-padded
// to whole blocks, then the message, zero-padded.
func (a *aead) cbcMAC(s *scratch, nonce, msg, aad []byte) {
	x := &s.mac
	// B_0. Flags: Adata (bit 6), M' = (M-2)/2 (bits 5..3), L' = L-1.
	x[0] = byte((a.m-2)/2)<<3 | byte(a.l-1)
	if len(aad) > 0 {
		x[0] |= 1 << 6
	}
	copy(x[1:], nonce)
	putLen(x[16-a.l:], uint64(len(msg)))
	a.b.Encrypt(x[:], x[:])

	if len(aad) > 0 {
		// l(a) encoded as in RFC 3610 §2.2 / SP 800-38C A.2.2, then a.
		n := uint64(len(aad))
		pos := 0
		switch {
		case n < 0xff00:
			x[0] ^= byte(n >> 8)
			x[1] ^= byte(n)
			pos = 2
		case n <= math.MaxUint32:
			x[0] ^= 0xff
			x[1] ^= 0xfe
			for i := range 4 {
				x[2+i] ^= byte(n >> (24 - 8*i))
			}
			pos = 6
		default:
			x[0] ^= 0xff
			x[1] ^= 0xff
			for i := range 8 {
				x[2+i] ^= byte(n >> (56 - 8*i))
			}
			pos = 10
		}
		k := subtle.XORBytes(x[pos:], x[pos:], aad)
		a.b.Encrypt(x[:], x[:])
		a.absorb(x, aad[k:])
	}
	a.absorb(x, msg)
}

// absorb runs the CBC-MAC over data, zero-padded to whole blocks.
func (a *aead) absorb(x *[BlockSize]byte, data []byte) {
	for len(data) > 0 {
		k := subtle.XORBytes(x[:], x[:], data)
		a.b.Encrypt(x[:], x[:])
		data = data[k:]
	}
}

// counter sets s.ctr to A_i = flags | nonce | i (RFC 3610 §2.3), whose
// flags byte is L - 1.
func (a *aead) counter(s *scratch, nonce []byte, i uint64) {
	s.ctr[0] = byte(a.l - 1)
	copy(s.ctr[1:], nonce)
	putLen(s.ctr[16-a.l:], i)
}

// ctr encrypts (or decrypts) in into out with the key stream of counters
// 1, 2, ...; out and in are the same length and overlap exactly or not at
// all.
func (a *aead) ctr(s *scratch, nonce, out, in []byte) {
	a.counter(s, nonce, 1)
	for len(in) > 0 {
		a.b.Encrypt(s.ks[:], s.ctr[:])
		k := subtle.XORBytes(out, in, s.ks[:])
		out, in = out[k:], in[k:]
		// Increment the L-byte counter field. It cannot wrap: the message
		// is shorter than 2^(8L) bytes, so it has fewer than 2^(8L) blocks.
		for i := BlockSize - 1; i >= BlockSize-a.l; i-- {
			s.ctr[i]++
			if s.ctr[i] != 0 {
				break
			}
		}
	}
}

// putLen writes v big-endian into all of b (2 to 8 bytes).
func putLen(b []byte, v uint64) {
	var w [8]byte
	binary.BigEndian.PutUint64(w[:], v)
	copy(b, w[8-len(b):])
}

// sliceForAppend returns in extended by n bytes, reusing its capacity when
// it suffices, and the n new bytes (as crypto/cipher does).
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	tail = head[len(in):]
	return head, tail
}

// anyOverlap reports whether x and y share memory at any (not necessarily
// corresponding) index; empty slices share none. It is the check of
// golang.org/x/crypto/internal/alias.
func anyOverlap(x, y []byte) bool {
	return len(x) > 0 && len(y) > 0 &&
		uintptr(unsafe.Pointer(&x[0])) <= uintptr(unsafe.Pointer(&y[len(y)-1])) &&
		uintptr(unsafe.Pointer(&y[0])) <= uintptr(unsafe.Pointer(&x[len(x)-1]))
}

// inexactOverlap reports whether x and y share memory at any
// non-corresponding index: overlap other than "in place".
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	return anyOverlap(x, y)
}
