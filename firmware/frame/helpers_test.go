package frame

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"
)

// cborHead encodes a CBOR head (RFC 8949 §3) of the given major type and
// argument, in the shortest form.
func cborHead(major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return []byte{m | byte(n)}
	case n <= 0xff:
		return []byte{m | 24, byte(n)}
	case n <= 0xffff:
		return []byte{m | 25, byte(n >> 8), byte(n)}
	case n <= 0xffffffff:
		return []byte{m | 26, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	return []byte{m | 27, byte(n >> 56), byte(n >> 48), byte(n >> 40), byte(n >> 32),
		byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// exporterInfo is the info of EDHOC_KDF (RFC 9528 §4.1.2) for the exporter:
// the CBOR sequence (label: uint, context: bstr, length: uint).
func exporterInfo(label uint, context []byte, length int) []byte {
	info := cborHead(0, uint64(label))
	info = append(info, cborHead(2, uint64(len(context)))...)
	info = append(info, context...)
	return append(info, cborHead(0, uint64(length))...)
}

// hkdfExporter is a fake EDHOC_Exporter built from HKDF (crypto/hkdf). It
// computes EDHOC_Exporter exactly as RFC 9528 §4.2.1 defines it for cipher
// suite 0, HKDF-Expand-SHA256(PRK_exporter, info, length), with prk standing
// in for the PRK_exporter of a handshake. calls records the requests.
type hkdfExporter struct {
	prk   []byte
	calls []exportCall
}

type exportCall struct {
	label   uint
	context []byte
	length  int
}

func (e *hkdfExporter) export(label uint, context []byte, length int) ([]byte, error) {
	e.calls = append(e.calls, exportCall{label, append([]byte(nil), context...), length})
	return hkdf.Expand(sha256.New, e.prk, string(exporterInfo(label, context, length)), length)
}

// randomExporter returns a fake exporter over a fresh random secret.
func randomExporter(t testing.TB) Exporter {
	t.Helper()
	prk := make([]byte, 32)
	if _, err := rand.Read(prk); err != nil {
		t.Fatal(err)
	}
	return (&hkdfExporter{prk: prk}).export
}

// Connection identifiers of the RFC 9529 §2 trace, used by default.
var (
	testCI = []byte{0x2d}
	testCR = []byte{0x18}
)

// pair returns an Initiator and a Responder that share exp.
func pair(t testing.TB, exp Exporter, opts Options) (ini, rsp *Session) {
	t.Helper()
	ini, err := NewSession(Initiator, exp, testCI, testCR, opts)
	if err != nil {
		t.Fatal(err)
	}
	rsp, err = NewSession(Responder, exp, testCI, testCR, opts)
	if err != nil {
		t.Fatal(err)
	}
	return ini, rsp
}

// lenient disables the integrity limit for tests that refuse many frames on
// purpose.
var lenient = Options{MaxAuthFailures: 1 << 30}

func mustSeal(t testing.TB, s *Session, typ Type, pt []byte) []byte {
	t.Helper()
	f, err := s.Seal(nil, typ, pt)
	if err != nil {
		t.Fatalf("Seal(%v, %d bytes): %v", typ, len(pt), err)
	}
	return f
}

func mustOpen(t testing.TB, s *Session, f []byte, wantTyp Type, wantPT []byte) {
	t.Helper()
	typ, pt, err := s.Open(nil, f)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if typ != wantTyp || string(pt) != string(wantPT) {
		t.Fatalf("Open = %v %x, want %v %x", typ, pt, wantTyp, wantPT)
	}
}

// wantErr fails unless err matches every target.
func wantErr(t testing.TB, err error, targets ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want %v", targets)
	}
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("error %q does not match %q", err, target)
		}
	}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeClock is an injectable Options.Now.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
