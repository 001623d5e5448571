package audit

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/lock/flash"
)

// FuzzPage decodes arbitrary bytes as a read-audit page and, when they
// decode, verifies them every way a reader would. It never panics; decoding
// either fails with ErrMalformed or returns a page that encodes back to the
// same bytes; Verify and Advance fail only with the package's errors, and
// a refused page never moves the cursor.
func FuzzPage(f *testing.F) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	pub := priv.Public().(ed25519.PublicKey)
	l, err := Open(flash.NewMem(), Options{Size: 8, LockID: lockA, Now: clock(), Signer: priv})
	if err != nil {
		f.Fatal(err)
	}
	for i := range 12 {
		if _, err := l.Append(sample(i)); err != nil {
			f.Fatal(err)
		}
		for _, from := range []uint64{0, uint64(i)} {
			p, _ := l.Page(from, 1+i%4)
			b, _ := EncodePage(p)
			f.Add(b)
		}
	}
	p, _ := l.Page(5, 1)
	e, _ := p.Entries[0].Encode()
	f.Add(e)
	f.Add([]byte{0xa4, 0x01, 0x00, 0x02, 0x00, 0x03, 0x80, 0x04, 0x58, 0x20})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodePage(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodePage: %v", err)
			}
			_, _ = DecodeEntry(data)
			return
		}
		b, err := EncodePage(p)
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("EncodePage(DecodePage(x)) = %x, %v; want x", b, err)
		}
		for _, prev := range [][]byte{nil, Genesis(lockA), p.Head} {
			if _, err := Verify(prev, p); err != nil && !errors.Is(err, ErrTampered) && !errors.Is(err, ErrGap) {
				t.Fatalf("Verify: %v", err)
			}
		}
		for _, c := range []Cursor{NewCursor(lockA), {}, {Next: p.Oldest + 1, Hash: p.Head}} {
			before := Cursor{Next: c.Next, Hash: bytes.Clone(c.Hash)}
			if _, err := c.Advance(p); err != nil {
				if !errors.Is(err, ErrTampered) && !errors.Is(err, ErrGap) {
					t.Fatalf("Advance: %v", err)
				}
				if c.Next != before.Next || !bytes.Equal(c.Hash, before.Hash) {
					t.Fatal("refused page moved the cursor")
				}
			}
		}
		if err := VerifySignature(pub, p); err != nil && !errors.Is(err, ErrBadSignature) {
			t.Fatalf("VerifySignature: %v", err)
		}
	})
}
