package edhoc

import (
	"bytes"
	"testing"
)

// Fuzz targets for every EDHOC message parser. `go test` runs their seed
// corpora (f.Add and testdata/fuzz); `go test -fuzz=FuzzX` explores.

func FuzzMessage1(f *testing.F) {
	in, _ := newPair(f)
	m1, _ := in.Message1()
	f.Add(m1)
	f.Add([]byte{0x00, 0x82, 0x00, 0x06, 0x58, 0x20})
	f.Add([]byte{0x19, 0x00, 0x03})
	f.Add([]byte{0x03, 0x9f, 0x06, 0x02, 0xff})
	resp := newParty(f)
	peer := newParty(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		re, err := NewResponder(Options{Cred: resp.cred, AuthKey: resp.sk, Peer: resolverOf(peer)})
		if err != nil {
			t.Fatal(err)
		}
		if err := re.ProcessMessage1(msg); err != nil {
			if len(ErrorMessage(err)) == 0 {
				t.Fatal("no error message")
			}
			return
		}
		// Anything accepted must be answerable.
		if _, err := re.Message2(); err != nil {
			t.Fatalf("accepted message_1 %x but Message2 failed: %v", msg, err)
		}
	})
}

// FuzzMessage2 feeds arbitrary message_2 bytes to an Initiator that sent a
// real message_1. Mutations of a real message_2 mostly reach the
// decrypted PLAINTEXT_2 parser, since CIPHERTEXT_2 is a plain XOR.
func FuzzMessage2(f *testing.F) {
	i, r := newParty(f), newParty(f)
	fixed := func() *Initiator {
		in, err := NewInitiator(Options{Cred: i.cred, AuthKey: i.sk, Peer: resolverOf(r),
			Rand: bytes.NewReader(bytes.Repeat([]byte{7}, 64)), ConnID: []byte{0x01}})
		if err != nil {
			f.Fatal(err)
		}
		return in
	}
	in := fixed()
	m1, _ := in.Message1()
	re, _ := NewResponder(Options{Cred: r.cred, AuthKey: r.sk, Peer: resolverOf(i),
		Rand: bytes.NewReader(bytes.Repeat([]byte{9}, 64)), ConnID: []byte{0x02}})
	_ = re.ProcessMessage1(m1)
	m2, _ := re.Message2()
	f.Add(m2)
	f.Add([]byte{0x02, 0x00})
	f.Add([]byte{0x01, 0x63, 'a', 'b', 'c'})
	f.Fuzz(func(t *testing.T, msg []byte) {
		in := fixed()
		if _, err := in.Message1(); err != nil {
			t.Fatal(err)
		}
		if _, err := in.ProcessMessage2(msg); err == nil && !bytes.Equal(msg, m2) {
			t.Fatalf("accepted a forged message_2 %x", msg)
		}
	})
}

// FuzzPlaintext2 feeds arbitrary PLAINTEXT_2 through a real keystream.
func FuzzPlaintext2(f *testing.F) {
	f.Add([]byte{0x27, 0xa1, 0x04, 0x42, 0x32, 0x10, 0x48, 0xfa, 0x5e, 0xfa, 0x2e, 0xbf, 0x92, 0x0b, 0xf3})
	f.Add([]byte{0x27, 0x41, 0x32, 0x48, 0xfa, 0x5e, 0xfa, 0x2e, 0xbf, 0x92, 0x0b, 0xf3})
	f.Add([]byte{0x27, 0x32, 0x44, 0xfa, 0x5e, 0xfa, 0x2e})
	i, r := newParty(f), newParty(f)
	f.Fuzz(func(t *testing.T, pt2 []byte) {
		in, re := newPairOf(t, i, r, Options{}, Options{})
		m1, _ := in.Message1()
		if err := re.ProcessMessage1(m1); err != nil {
			t.Fatal(err)
		}
		if _, err := re.Message2(); err != nil {
			t.Fatal(err)
		}
		if _, err := in.ProcessMessage2(forgeMessage2(re, pt2)); err == nil {
			t.Fatalf("accepted a PLAINTEXT_2 without the Responder's signature: %x", pt2)
		}
	})
}

func FuzzMessage3(f *testing.F) {
	i, r := newParty(f), newParty(f)
	in, re := newPairOf(f, i, r, Options{}, Options{})
	m1, _ := in.Message1()
	_ = re.ProcessMessage1(m1)
	m2, _ := re.Message2()
	_, _ = in.ProcessMessage2(m2)
	m3, _ := in.Message3()
	f.Add(m3)
	f.Add([]byte{0x40})
	f.Fuzz(func(t *testing.T, msg []byte) {
		in, re := newPairOf(t, i, r, Options{}, Options{})
		m1, _ := in.Message1()
		_ = re.ProcessMessage1(m1)
		if _, err := re.Message2(); err != nil {
			t.Fatal(err)
		}
		if _, err := re.ProcessMessage3(msg); err == nil {
			t.Fatalf("accepted a message_3 from another session: %x", msg)
		}
	})
}

func FuzzParseError(f *testing.F) {
	f.Add([]byte{0x01, 0x63, 'a', 'b', 'c'})
	f.Add([]byte{0x02, 0x82, 0x00, 0x02})
	f.Add([]byte{0x03, 0xf5})
	f.Fuzz(func(t *testing.T, msg []byte) {
		pe, err := ParseError(msg)
		if err != nil {
			return
		}
		if len(pe.Info) > 128 {
			t.Fatalf("diagnostic not bounded: %d bytes", len(pe.Info))
		}
		_ = pe.Error()
	})
}
