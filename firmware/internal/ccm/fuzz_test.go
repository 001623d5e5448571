package ccm

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzOpen: for any key, nonce, associated data and message, Open of what
// Seal made gives the message back (in place and not), Seal in place gives
// the same bytes, and the sealed message with any one byte changed does not
// open. Tag and nonce sizes come from the input too, so every (M, L) runs.
func FuzzOpen(f *testing.F) {
	f.Add(byte(8), byte(13), []byte("0123456789abcdef"), []byte("GWLK\x01\x00\x10\x00\x00\x00\x00"), []byte("hello, lock"), uint16(3))
	f.Add(byte(8), byte(13), make([]byte, 16), []byte{}, []byte{}, uint16(0))
	f.Add(byte(16), byte(7), make([]byte, 32), bytes.Repeat([]byte{1}, 40), bytes.Repeat([]byte{2}, 100), uint16(99))
	f.Add(byte(4), byte(10), make([]byte, 24), []byte{0xff}, bytes.Repeat([]byte{3}, 16), uint16(19))
	f.Fuzz(func(t *testing.T, tagSel, nonceSel byte, keySeed, aad, pt []byte, flip uint16) {
		tag := 4 + 2*int(tagSel%7)
		nonceSize := 7 + int(nonceSel%7)
		key := make([]byte, []int{16, 24, 32}[len(keySeed)%3])
		copy(key, keySeed)
		a := newAES(t, key, tag, nonceSize)
		nonce := make([]byte, nonceSize)
		copy(nonce, keySeed)

		sealed := a.Seal(nil, nonce, pt, aad)
		if len(sealed) != len(pt)+tag {
			t.Fatalf("sealed %d bytes, want %d", len(sealed), len(pt)+tag)
		}
		buf := make([]byte, len(pt), len(pt)+tag)
		copy(buf, pt)
		if inPlace := a.Seal(buf[:0], nonce, buf, aad); !bytes.Equal(inPlace, sealed) {
			t.Fatal("Seal in place differs")
		}
		out, err := a.Open(nil, nonce, sealed, aad)
		if err != nil || !bytes.Equal(out, pt) {
			t.Fatalf("Open = %x, %v", out, err)
		}
		out, err = a.Open(buf[:0], nonce, buf[:len(sealed)], aad)
		if err != nil || !bytes.Equal(out, pt) {
			t.Fatalf("Open in place = %x, %v", out, err)
		}
		bad := bytes.Clone(sealed)
		bad[int(flip)%len(bad)] ^= byte(flip>>8) | 1
		if out, err := a.Open(nil, nonce, bad, aad); !errors.Is(err, ErrOpen) || out != nil {
			t.Fatalf("tampered message opened: %x, %v", out, err)
		}
	})
}
