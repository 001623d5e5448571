package ccm

import (
	"crypto/aes"
	"testing"
)

// BenchmarkSealOpen64 is one Seal and one Open of a 64-byte message with
// the protocol's parameters (AES-128, M = 8, L = 2, 11 bytes of AAD as a
// frame has), into buffers with room: the floor firmware/frame's
// BenchmarkSealOpen64Interleaved measures a session against.
func BenchmarkSealOpen64(b *testing.B) {
	blk, _ := aes.NewCipher(make([]byte, 16))
	a, err := New(blk, 8, 13)
	if err != nil {
		b.Fatal(err)
	}
	nonce, aad, pt := make([]byte, 13), make([]byte, 11), make([]byte, 64)
	cbuf, pbuf := make([]byte, 0, 72), make([]byte, 0, 64)
	b.SetBytes(64)
	b.ReportAllocs()
	for b.Loop() {
		c := a.Seal(cbuf[:0], nonce, pt, aad)
		if _, err := a.Open(pbuf[:0], nonce, c, aad); err != nil {
			b.Fatal(err)
		}
	}
}
