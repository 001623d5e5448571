package frame

import (
	"crypto/aes"
	"testing"

	"github.com/pion/dtls/v3/pkg/crypto/ccm"
)

// Both benchmarks are in this file so that one run measures them together:
//
//	go test -run='^$' -bench='SealOpen64|RawCCM64' -count=5 ./firmware/frame/
//
// BenchmarkRawCCM64 is the floor: pion's CCM alone, Seal then Open of 64
// bytes with a fixed nonce and an 11-byte AAD. BenchmarkSealOpen64 is the
// same work through two Sessions (checks, nonce, AAD, window, clock, locks).

const benchLen = 64

func BenchmarkSealOpen64(b *testing.B) {
	ini, rsp := pair(b, randomExporter(b), Options{MaxSeq: 1 << 32})
	pt := make([]byte, benchLen)
	fbuf := make([]byte, 0, benchLen+Overhead)
	pbuf := make([]byte, 0, benchLen)
	b.SetBytes(benchLen)
	b.ReportAllocs()
	for b.Loop() {
		f, err := ini.Seal(fbuf[:0], TypeRequest, pt)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := rsp.Open(pbuf[:0], f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawCCM64(b *testing.B) {
	block, err := aes.NewCipher(make([]byte, KeyLen))
	if err != nil {
		b.Fatal(err)
	}
	aead, err := ccm.NewCCM(block, TagLen, NonceLen)
	if err != nil {
		b.Fatal(err)
	}
	nonce := make([]byte, NonceLen)
	aad := make([]byte, AADLen)
	pt := make([]byte, benchLen)
	cbuf := make([]byte, 0, benchLen+TagLen)
	pbuf := make([]byte, 0, benchLen)
	b.SetBytes(benchLen)
	b.ReportAllocs()
	for b.Loop() {
		c := aead.Seal(cbuf[:0], nonce, pt, aad)
		if _, err := aead.Open(pbuf[:0], nonce, c, aad); err != nil {
			b.Fatal(err)
		}
	}
}
