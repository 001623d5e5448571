package ccm

import (
	"bytes"
	"errors"
	"testing"
)

// TestAttackTamperedTag: flipping any single bit of the ciphertext or of the
// tag, of the nonce or of the associated data, truncating or extending the
// sealed message, or opening under another key fails with ErrOpen.
func TestAttackTamperedTag(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, 16)
	a := newAES(t, key, 8, 13)
	nonce := []byte("0123456789abc")
	aad := []byte("GWLK header")
	pt := []byte("unlock bike 17, the one by the lamp post")
	sealed := a.Seal(nil, nonce, pt, aad)
	open := func(name string, a2 interface {
		Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
	}, n, c, ad []byte) {
		t.Helper()
		if out, err := a2.Open(nil, n, c, ad); !errors.Is(err, ErrOpen) || out != nil {
			t.Errorf("%s: Open = %x, %v; want nil, ErrOpen", name, out, err)
		}
	}
	for i := range len(sealed) * 8 {
		c := bytes.Clone(sealed)
		c[i/8] ^= 1 << (i % 8)
		open("bit flip in sealed message", a, nonce, c, aad)
	}
	for i := range len(nonce) * 8 {
		n := bytes.Clone(nonce)
		n[i/8] ^= 1 << (i % 8)
		open("bit flip in nonce", a, n, sealed, aad)
	}
	for i := range len(aad) * 8 {
		ad := bytes.Clone(aad)
		ad[i/8] ^= 1 << (i % 8)
		open("bit flip in AAD", a, nonce, sealed, ad)
	}
	open("AAD dropped", a, nonce, sealed, nil)
	open("AAD extended", a, nonce, sealed, append(bytes.Clone(aad), 0))
	for n := range len(sealed) {
		open("truncated", a, nonce, sealed[:n], aad)
	}
	open("extended", a, nonce, append(bytes.Clone(sealed), 0), aad)
	other := newAES(t, bytes.Repeat([]byte{0x43}, 16), 8, 13)
	open("other key", other, nonce, sealed, aad)
	// A shorter tag of the same key is not a prefix that verifies.
	a4 := newAES(t, key, 4, 13)
	open("tag of M=8 cut to M=4", a4, nonce, sealed[:len(sealed)-4], aad)
	if out, err := a.Open(nil, nonce, sealed, aad); err != nil || !bytes.Equal(out, pt) {
		t.Fatalf("the untouched message does not open: %v", err)
	}
}

// TestAttackFailedOpenReleasesNothing: when the tag does not verify, Open
// returns nil and zeroes every byte it decrypted into dst's spare capacity,
// in place or not, so no unauthenticated plaintext is left for a caller that
// ignores the error.
func TestAttackFailedOpenReleasesNothing(t *testing.T) {
	a := newAES(t, make([]byte, 16), 8, 13)
	nonce := make([]byte, 13)
	pt := bytes.Repeat([]byte("secret! "), 8)
	sealed := a.Seal(nil, nonce, pt, nil)
	sealed[len(sealed)-1] ^= 1

	dst := make([]byte, 3, 3+len(pt))
	copy(dst, "abc")
	out, err := a.Open(dst, nonce, sealed, nil)
	if !errors.Is(err, ErrOpen) || out != nil {
		t.Fatalf("Open = %x, %v", out, err)
	}
	if spare := dst[:cap(dst)][3:]; !bytes.Equal(spare, make([]byte, len(pt))) || string(dst) != "abc" {
		t.Fatalf("dst after a failed Open: %q, spare %x", dst, spare)
	}

	buf := bytes.Clone(sealed)
	if out, err := a.Open(buf[:0], nonce, buf, nil); !errors.Is(err, ErrOpen) || out != nil {
		t.Fatalf("Open in place = %x, %v", out, err)
	}
	if !bytes.Equal(buf[:len(pt)], make([]byte, len(pt))) {
		t.Fatalf("in place: the decrypted bytes were left: %x", buf[:len(pt)])
	}
}

// TestAliasing: the output may be the input exactly (in place) or apart
// from it; any other overlap of output and input, and any overlap of output
// and associated data (or, for Open, the tag), panics, as crypto/cipher's
// AEADs do.
func TestAliasing(t *testing.T) {
	a := newAES(t, make([]byte, 16), 8, 13)
	nonce := make([]byte, 13)
	pt := []byte("in place, exactly where it was.")
	want := a.Seal(nil, nonce, pt, []byte("ad"))

	buf := make([]byte, len(pt), len(pt)+8)
	copy(buf, pt)
	got := a.Seal(buf[:0], nonce, buf, []byte("ad"))
	if !bytes.Equal(got, want) || &got[0] != &buf[0] {
		t.Fatalf("Seal in place = %x", got)
	}
	out, err := a.Open(got[:0], nonce, got, []byte("ad"))
	if err != nil || !bytes.Equal(out, pt) || &out[0] != &buf[0] {
		t.Fatalf("Open in place = %q, %v", out, err)
	}

	big := make([]byte, 256)
	copy(big[1:], pt)
	mustPanic(t, "Seal with output one byte before input", func() { a.Seal(big[:0], nonce, big[1:1+len(pt)], nil) })
	mustPanic(t, "Seal with output one byte after input", func() { a.Seal(big[:1], nonce, big[:len(pt)], nil) })
	mustPanic(t, "Seal with output over the AAD", func() { a.Seal(big[:0], nonce, pt, big[20:30]) })
	copy(big, want)
	mustPanic(t, "Open with output after input", func() { _, _ = a.Open(big[:1], nonce, big[:len(want)], []byte("ad")) })
	mustPanic(t, "Open with output over the AAD", func() { _, _ = a.Open(big[100:100], nonce, want, big[100:102]) })
	mustPanic(t, "Open with output over the tag", func() { _, _ = a.Open(big[:len(pt)+4], nonce, big[:len(want)], []byte("ad")) })
	// Apart, and empty slices, never count as overlapping.
	if anyOverlap(big[:10], big[10:20]) || anyOverlap(nil, big) || inexactOverlap(big[:0], big) {
		t.Fatal("adjacent or empty slices reported as overlapping")
	}
	if !inexactOverlap(big[:10], big[9:20]) || inexactOverlap(big[:10], big[:20]) || !anyOverlap(big[:10], big[:20]) {
		t.Fatal("overlap misjudged")
	}
}

// TestNoAllocs: Seal and Open allocate nothing when dst has room, for the
// protocol's parameters and for others, in place or not, and on failure.
func TestNoAllocs(t *testing.T) {
	for _, p := range []struct{ tag, nonce, n, ad int }{{8, 13, 64, 11}, {8, 13, 0, 0}, {16, 7, 1000, 300}, {4, 10, 17, 70000}} {
		a := newAES(t, make([]byte, 16), p.tag, p.nonce)
		nonce := make([]byte, p.nonce)
		pt, ad := make([]byte, p.n), make([]byte, p.ad)
		cbuf := make([]byte, 0, p.n+p.tag)
		pbuf := make([]byte, 0, p.n)
		var err error
		if n := testing.AllocsPerRun(200, func() { cbuf = a.Seal(cbuf[:0], nonce, pt, ad) }); n != 0 {
			t.Errorf("%+v: Seal allocates %.1f times", p, n)
		}
		if n := testing.AllocsPerRun(200, func() { pbuf, err = a.Open(pbuf[:0], nonce, cbuf, ad) }); n != 0 || err != nil {
			t.Errorf("%+v: Open allocates %.1f times (%v)", p, n, err)
		}
		if n := testing.AllocsPerRun(200, func() {
			cbuf = a.Seal(cbuf[:0], nonce, cbuf[:p.n], ad)
			_, err = a.Open(cbuf[:0], nonce, cbuf, ad)
		}); n != 0 || err != nil {
			t.Errorf("%+v: in place allocates %.1f times (%v)", p, n, err)
		}
		cbuf = a.Seal(cbuf[:0], nonce, pt, ad)
		cbuf[0] ^= 1
		if n := testing.AllocsPerRun(200, func() { _, err = a.Open(pbuf[:0], nonce, cbuf, ad) }); n != 0 || !errors.Is(err, ErrOpen) {
			t.Errorf("%+v: failed Open allocates %.1f times (%v)", p, n, err)
		}
	}
}
