package frame

import (
	"crypto/aes"
	"crypto/cipher"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/internal/ccm"
	"github.com/gatewayd/gatewayd/firmware/internal/interleave"
)

// BenchmarkSealOpen64Interleaved is the one scripts/bench.sh judges: it
// runs a session's Seal+Open of a 64-byte frame (BenchmarkSealOpen64) and
// its floor, bare CCM Seal+Open of the same bytes (BenchmarkRawCCM64), in
// one loop, in batches of benchBatch, and reports the median per-round
// ratio of the session's time to the floor's ("sealopen/ccm"; see
// firmware/internal/interleave).
//
//	go test -run='^$' -bench='SealOpen64Interleaved' -count=6 ./firmware/frame/
func BenchmarkSealOpen64Interleaved(b *testing.B) {
	s := newSealOpenBench(b)
	r := newRawCCMBench(b)
	b.ReportAllocs()
	interleave.Run(b, benchBatch, "session", s.run, "ccm", r.run, "sealopen/ccm")
}

// benchBatch is how many Seal+Open pairs each side runs between two clock
// readings, so that reading the clock is a small part of what is timed.
const benchBatch = 32

const benchLen = 64

// BenchmarkSealOpen64 is Seal then Open of a 64-byte plaintext through two
// Sessions: the CCM work plus the checks, nonce, AAD, replay window, clock
// and locks.
func BenchmarkSealOpen64(b *testing.B) {
	s := newSealOpenBench(b)
	b.SetBytes(benchLen)
	b.ReportAllocs()
	for b.Loop() {
		s.run()
	}
}

// BenchmarkRawCCM64 is the floor: the same AEAD alone
// (firmware/internal/ccm on crypto/aes), Seal then Open of 64 bytes with a
// fixed nonce and an 11-byte AAD, and no frame header or replay window.
func BenchmarkRawCCM64(b *testing.B) {
	r := newRawCCMBench(b)
	b.SetBytes(benchLen)
	b.ReportAllocs()
	for b.Loop() {
		r.run()
	}
}

type sealOpenBench struct {
	b          *testing.B
	ini, rsp   *Session
	pt         []byte
	fbuf, pbuf []byte
}

func newSealOpenBench(b *testing.B) *sealOpenBench {
	ini, rsp := pair(b, randomExporter(b), Options{MaxSeq: 1 << 32})
	return &sealOpenBench{b: b, ini: ini, rsp: rsp, pt: make([]byte, benchLen),
		fbuf: make([]byte, 0, benchLen+Overhead), pbuf: make([]byte, 0, benchLen)}
}

func (s *sealOpenBench) run() {
	f, err := s.ini.Seal(s.fbuf[:0], TypeRequest, s.pt)
	if err != nil {
		s.b.Fatal(err)
	}
	if _, _, err := s.rsp.Open(s.pbuf[:0], f); err != nil {
		s.b.Fatal(err)
	}
}

type rawCCMBench struct {
	b              *testing.B
	aead           cipher.AEAD
	nonce, aad, pt []byte
	cbuf, pbuf     []byte
}

func newRawCCMBench(b *testing.B) *rawCCMBench {
	block, err := aes.NewCipher(make([]byte, KeyLen))
	if err != nil {
		b.Fatal(err)
	}
	aead, err := ccm.New(block, TagLen, NonceLen)
	if err != nil {
		b.Fatal(err)
	}
	return &rawCCMBench{b: b, aead: aead, nonce: make([]byte, NonceLen), aad: make([]byte, AADLen),
		pt: make([]byte, benchLen), cbuf: make([]byte, 0, benchLen+TagLen), pbuf: make([]byte, 0, benchLen)}
}

func (r *rawCCMBench) run() {
	c := r.aead.Seal(r.cbuf[:0], r.nonce, r.pt, r.aad)
	if _, err := r.aead.Open(r.pbuf[:0], r.nonce, c, r.aad); err != nil {
		r.b.Fatal(err)
	}
}
