package frame

import (
	"bytes"
	"errors"
	"testing"
)

// fuzzExporter returns fixed keying material (precomputed once, copied on
// each call because NewSession wipes what it is given), so that a fresh
// Responder per fuzz input is cheap.
func fuzzExporter(t testing.TB) Exporter {
	e := &hkdfExporter{prk: bytes.Repeat([]byte{0x5a}, 32)}
	out := map[uint][]byte{}
	for _, c := range []exportCall{{LabelKeyI2R, nil, KeyLen}, {LabelKeyR2I, nil, KeyLen}, {LabelCommonIV, nil, CommonIVLen}} {
		b, err := e.export(c.label, nil, c.length)
		if err != nil {
			t.Fatal(err)
		}
		out[c.label] = b
	}
	return func(label uint, _ []byte, n int) ([]byte, error) {
		return bytes.Clone(out[label][:n]), nil
	}
}

// FuzzOpen feeds arbitrary bytes to a fresh Responder, after it has opened
// the first pre%len(genuine) genuine frames in order. Open must never panic,
// and may succeed only on a genuine frame, produced by Seal, that it has not
// opened yet, returning exactly that frame's type and plaintext.
func FuzzOpen(f *testing.F) {
	exp := fuzzExporter(f)
	ini, err := NewSession(Initiator, exp, testCI, testCR, Options{})
	if err != nil {
		f.Fatal(err)
	}
	plains := [][]byte{nil, {0}, []byte("unlock"), bytes.Repeat([]byte{0xee}, 40), make([]byte, 300)}
	type sealed struct {
		typ   Type
		plain []byte
		index int // position in the send order
	}
	var genuine [][]byte
	byFrame := map[string]sealed{}
	for i, p := range plains {
		fr := mustSeal(f, ini, TypeRequest, p)
		genuine = append(genuine, fr)
		byFrame[string(fr)] = sealed{TypeRequest, p, i}
	}
	closeFrame := mustSeal(f, ini, TypeClose, []byte{byte(CloseNormal)})
	byFrame[string(closeFrame)] = sealed{TypeClose, []byte{0}, len(plains)}

	for i, fr := range genuine {
		f.Add(uint8(0), fr)
		f.Add(uint8(i), fr)
		f.Add(uint8(i+1), fr) // already opened: a replay
		g := bytes.Clone(fr)
		g[len(g)-1] ^= 0x80
		f.Add(uint8(0), g)
	}
	f.Add(uint8(0), closeFrame)
	f.Add(uint8(3), closeFrame)
	f.Add(uint8(0), []byte{})
	f.Add(uint8(0), []byte{0x10, 0, 0, 0, 0})
	f.Add(uint8(2), make([]byte, Overhead))
	f.Add(uint8(0), append([]byte{0x11}, genuine[2][1:]...))

	sentinels := []error{ErrShortFrame, ErrFrameTooLarge, ErrBadType, ErrBadClose, ErrReplay, ErrStale, ErrAuth}
	f.Fuzz(func(t *testing.T, pre uint8, frame []byte) {
		rsp, err := NewSession(Responder, exp, testCI, testCR, Options{MaxPlaintext: 512})
		if err != nil {
			t.Fatal(err)
		}
		opened := int(pre) % len(genuine)
		for _, g := range genuine[:opened] {
			if _, _, err := rsp.Open(nil, g); err != nil {
				t.Fatalf("genuine frame refused: %v", err)
			}
		}
		dst := []byte("dst")
		typ, out, err := rsp.Open(dst, frame)
		if err != nil {
			if typ != 0 || !bytes.Equal(out, []byte("dst")) {
				t.Fatalf("refused frame returned %v %x", typ, out)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error matches no sentinel: %v", err)
		}
		s, ok := byFrame[string(frame)]
		if !ok {
			t.Fatalf("Open accepted a frame Seal never produced: %x -> %v %x", frame, typ, out)
		}
		if s.index < opened {
			t.Fatalf("Open accepted frame %d twice", s.index)
		}
		if typ != s.typ || !bytes.Equal(out, append([]byte("dst"), s.plain...)) {
			t.Fatalf("Open = %v %x, want %v dst||%x", typ, out, s.typ, s.plain)
		}
	})
}
