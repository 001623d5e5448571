package frame

import (
	"crypto/aes"
	"crypto/cipher"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/internal/ccm"
)

// BenchmarkSealOpen64Interleaved is the one scripts/bench.sh judges: it
// runs a session's Seal+Open of a 64-byte frame (BenchmarkSealOpen64) and
// its floor, bare CCM Seal+Open of the same bytes (BenchmarkRawCCM64), in
// one loop, in batches of benchBatch, alternating which goes first, and
// reports the session's time as a multiple of the floor's
// ("sealopen/ccm"). Measured side by side at the microsecond, both see the
// same machine; two benchmarks run one after the other may not.
//
//	go test -run='^$' -bench='SealOpen64Interleaved' -count=6 ./firmware/frame/
func BenchmarkSealOpen64Interleaved(b *testing.B) {
	s := newSealOpenBench(b)
	r := newRawCCMBench(b)
	var session, raw time.Duration
	timed := func(f func(), d *time.Duration) {
		t0 := time.Now()
		for range benchBatch {
			f()
		}
		*d += time.Since(t0)
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if i%2 == 0 {
			timed(s.run, &session)
			timed(r.run, &raw)
		} else {
			timed(r.run, &raw)
			timed(s.run, &session)
		}
		i++
	}
	n := float64(i * benchBatch)
	b.ReportMetric(float64(session)/n, "session-ns")
	b.ReportMetric(float64(raw)/n, "ccm-ns")
	b.ReportMetric(float64(session)/float64(raw), "sealopen/ccm")
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
