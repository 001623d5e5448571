package ccm

import "errors"

// Sentinel errors; match them with errors.Is.
var (
	// ErrOpen is returned by Open when the tag does not verify (or the
	// ciphertext is shorter than the tag): the ciphertext, the nonce, the
	// additional data or the key is not the one sealed with.
	ErrOpen = errors.New("ccm: message authentication failed")

	// ErrTooLong is returned by Open when the ciphertext carries a message
	// of 2^(8L) bytes or more, which CCM's length field cannot encode.
	ErrTooLong = errors.New("ccm: ciphertext too long for the length field")

	// ErrBlockSize is returned by New when the block cipher's block is not
	// 16 bytes.
	ErrBlockSize = errors.New("ccm: block cipher with 16-byte blocks required")

	// ErrTagSize is returned by New when the tag size is not 4, 6, ..., 16.
	ErrTagSize = errors.New("ccm: invalid tag size")

	// ErrNonceSize is returned by New when the nonce size is not 7 to 13
	// bytes (L = 15 - nonce size must be 2 to 8).
	ErrNonceSize = errors.New("ccm: invalid nonce size")
)
