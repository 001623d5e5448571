package frame

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRoundTripBothDirections(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), Options{})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		n := rng.IntN(200)
		if i%500 == 0 {
			n = DefaultMaxPlaintext // the largest allowed
		}
		pt := make([]byte, n)
		for j := range pt {
			pt[j] = byte(rng.Uint32())
		}

		f := mustSeal(t, ini, TypeRequest, pt)
		if len(f) != len(pt)+Overhead || Type(f[0]) != TypeRequest || binary.BigEndian.Uint32(f[1:5]) != uint32(i) {
			t.Fatalf("frame %d: len %d, header %x", i, len(f), f[:5])
		}
		if n >= 8 && bytes.Contains(f, pt) {
			t.Fatalf("frame %d carries its plaintext in clear", i)
		}
		mustOpen(t, rsp, f, TypeRequest, pt)

		typ := TypeResponse
		if i%3 == 0 {
			typ = TypeEvent
		}
		g := mustSeal(t, rsp, typ, pt)
		if binary.BigEndian.Uint32(g[1:5]) != uint32(i) {
			t.Fatalf("response %d has seq %x", i, g[1:5])
		}
		mustOpen(t, ini, g, typ, pt)
	}
	// Close works in either direction.
	mustOpen(t, rsp, mustSeal(t, ini, TypeClose, []byte{byte(CloseNormal)}), TypeClose, []byte{0})
}

func TestWrongDirectionTypesRefused(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), lenient)

	// Seal: a type the local role may not send, or an unknown type.
	for _, c := range []struct {
		s   *Session
		typ Type
	}{
		{ini, TypeResponse}, {ini, TypeEvent}, {rsp, TypeRequest},
		{ini, 0x00}, {ini, 0x13}, {rsp, 0x1e}, {rsp, 0xff},
	} {
		dst := []byte("keep")
		out, err := c.s.Seal(dst, c.typ, []byte{1})
		wantErr(t, err, ErrBadType)
		if string(out) != "keep" {
			t.Fatalf("Seal changed dst on error: %q", out)
		}
	}

	// Open: a Response or Event sent to the Responder, a Request sent to the
	// Initiator, or an unknown type, is refused before decryption, and does
	// not disturb the replay window.
	req := mustSeal(t, ini, TypeRequest, []byte("req"))
	ev := mustSeal(t, rsp, TypeEvent, []byte("ev"))
	for _, typ := range []Type{TypeResponse, TypeEvent, 0x00, 0x13, 0x20, 0xff} {
		f := bytes.Clone(req)
		f[0] = byte(typ)
		_, _, err := rsp.Open(nil, f)
		wantErr(t, err, ErrBadType)
	}
	_, _, err := rsp.Open(nil, ev) // an Event travelling the wrong way
	wantErr(t, err, ErrBadType)
	f := bytes.Clone(ev)
	f[0] = byte(TypeRequest)
	_, _, err = ini.Open(nil, f)
	wantErr(t, err, ErrBadType)

	mustOpen(t, rsp, req, TypeRequest, []byte("req"))
	mustOpen(t, ini, ev, TypeEvent, []byte("ev"))
}

func TestReplayedFrame(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), lenient)
	f0 := mustSeal(t, ini, TypeRequest, []byte("unlock"))
	mustOpen(t, rsp, f0, TypeRequest, []byte("unlock"))
	_, _, err := rsp.Open(nil, f0)
	wantErr(t, err, ErrReplay)

	// Still a replay once newer frames have moved the window on.
	for i := range 10 {
		mustOpen(t, rsp, mustSeal(t, ini, TypeRequest, []byte{byte(i)}), TypeRequest, []byte{byte(i)})
	}
	dst := []byte("keep")
	typ, out, err := rsp.Open(dst, f0)
	wantErr(t, err, ErrReplay)
	if typ != 0 || string(out) != "keep" {
		t.Fatalf("refused Open returned %v %q", typ, out)
	}
}

func TestSeqBelowWindow(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), lenient)
	var frames [][]byte
	for i := range 70 {
		frames = append(frames, mustSeal(t, ini, TypeRequest, []byte{byte(i)}))
	}
	mustOpen(t, rsp, frames[69], TypeRequest, []byte{69})
	// 5 = 69 - 64: at highest-64, stale. 0..4 are further below.
	for i := 0; i <= 5; i++ {
		_, _, err := rsp.Open(nil, frames[i])
		wantErr(t, err, ErrStale)
	}
	// 6 = 69 - 63 is the oldest sequence number the window still covers.
	mustOpen(t, rsp, frames[6], TypeRequest, []byte{6})
}

func TestOutOfOrderWithinWindowAcceptedOnce(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), lenient)
	var frames [][]byte
	for i := range 64 {
		frames = append(frames, mustSeal(t, ini, TypeRequest, []byte{byte(i)}))
	}
	order := rand.New(rand.NewPCG(3, 4)).Perm(64)
	newest := slices.Index(order, 63)
	order[0], order[newest] = order[newest], order[0] // newest first: all others are behind it
	for _, i := range order {
		mustOpen(t, rsp, frames[i], TypeRequest, []byte{byte(i)})
	}
	for _, i := range order {
		_, _, err := rsp.Open(nil, frames[i])
		wantErr(t, err, ErrReplay)
	}
}

// bitFlips opens every one-bit variant of f[from:to] on a fresh Responder
// that has accepted nothing, and returns the errors.
func bitFlips(t *testing.T, from, to int) []error {
	exp := randomExporter(t)
	ini, _ := pair(t, exp, Options{})
	f := mustSeal(t, ini, TypeRequest, bytes.Repeat([]byte{0xa5}, 20))
	if to < 0 {
		to += len(f) + 1
	}
	nbits := 8 * (to - from)
	_, rsp := pair(t, exp, Options{MaxAuthFailures: nbits})
	var errs []error
	for i := from * 8; i < to*8; i++ {
		g := bytes.Clone(f)
		g[i/8] ^= 1 << (i % 8)
		typ, pt, err := rsp.Open(nil, g)
		if err == nil || pt != nil || typ != 0 {
			t.Fatalf("bit %d: Open = %v %x %v", i, typ, pt, err)
		}
		errs = append(errs, err)
	}
	// Every refusal counted: the last one reached the integrity limit.
	wantErr(t, errs[len(errs)-1], ErrTooManyFailures, ErrClosed)
	for _, err := range errs[:len(errs)-1] {
		if errors.Is(err, ErrClosed) {
			t.Fatalf("closed before the limit: %v", err)
		}
	}
	_, _, err := rsp.Open(nil, f)
	wantErr(t, err, ErrClosed, ErrTooManyFailures)
	return errs
}

func TestBitFlipCiphertext(t *testing.T) {
	for _, err := range bitFlips(t, HeaderLen, HeaderLen+20) {
		wantErr(t, err, ErrAuth)
	}
}

func TestBitFlipTag(t *testing.T) {
	for _, err := range bitFlips(t, HeaderLen+20, -1) {
		wantErr(t, err, ErrAuth)
	}
}

func TestBitFlipHeader(t *testing.T) {
	errs := bitFlips(t, 0, HeaderLen)
	// Type byte: no single-bit change of 0x10 is a type the Initiator may
	// send, so all are refused before decryption.
	for _, err := range errs[:8] {
		wantErr(t, err, ErrBadType)
	}
	// Sequence number: a fresh Responder accepts any new number, so the
	// AAD/nonce binding is what refuses these.
	for _, err := range errs[8:] {
		wantErr(t, err, ErrAuth)
	}

	// The AAD binds the type too: Response and Event are both valid from
	// the Responder, so swapping one for the other reaches the tag check.
	ini, rsp := pair(t, randomExporter(t), Options{})
	f := mustSeal(t, rsp, TypeResponse, []byte("ok"))
	g := bytes.Clone(f)
	g[0] = byte(TypeEvent)
	_, _, err := ini.Open(nil, g)
	wantErr(t, err, ErrAuth)
	mustOpen(t, ini, f, TypeResponse, []byte("ok"))
}

// TestAADBindsVersionAndMagic checks the parts of the AAD that are not on
// the wire: a frame sealed under another version, magic or direction byte,
// with the right key and nonce, does not open.
func TestAADBindsVersionAndMagic(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), lenient)
	pt := []byte("cmd")
	for i := range AADLen - 5 { // magic, version, direction
		var aad [AADLen]byte
		makeAAD(&aad, dirI2R, TypeRequest, 0)
		aad[i] ^= 0x01
		var nonce [NonceLen]byte
		makeNonce(&nonce, &ini.snd.base, 0)
		f := append([]byte{byte(TypeRequest), 0, 0, 0, 0}, ini.snd.aead.Seal(nil, nonce[:], pt, aad[:])...)
		_, _, err := rsp.Open(nil, f)
		wantErr(t, err, ErrAuth)
	}
	mustOpen(t, rsp, mustSeal(t, ini, TypeRequest, pt), TypeRequest, pt)
}

func TestAuthFailuresCloseSession(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), Options{}) // default limit, 8
	good := mustSeal(t, ini, TypeRequest, []byte("a"))
	mustOpen(t, rsp, good, TypeRequest, []byte("a"))
	next := mustSeal(t, ini, TypeRequest, []byte("b"))
	flipped := bytes.Clone(next)
	flipped[len(flipped)-1] ^= 1
	wrongType := bytes.Clone(next)
	wrongType[0] = byte(TypeEvent)

	// Eight refusals, for assorted reasons; each one counts.
	bad := [][]byte{flipped, nil, next[:7], good, wrongType, flipped, flipped, flipped}
	for i, f := range bad {
		_, _, err := rsp.Open(nil, f)
		if i < DefaultMaxAuthFailures-1 {
			if err == nil || errors.Is(err, ErrClosed) {
				t.Fatalf("refusal %d: %v", i, err)
			}
			continue
		}
		wantErr(t, err, ErrAuth, ErrTooManyFailures, ErrClosed)
	}
	// The genuine frame is now refused, and so is sending.
	_, _, err := rsp.Open(nil, next)
	wantErr(t, err, ErrClosed, ErrTooManyFailures)
	_, err = rsp.Seal(nil, TypeResponse, []byte("x"))
	wantErr(t, err, ErrClosed, ErrTooManyFailures)
}

func TestTruncatedFrame(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), lenient)
	f := mustSeal(t, ini, TypeRequest, []byte("truncate me"))
	for n := range len(f) {
		_, _, err := rsp.Open(nil, f[:n])
		if n < Overhead {
			wantErr(t, err, ErrShortFrame)
		} else {
			wantErr(t, err, ErrAuth)
		}
	}
	mustOpen(t, rsp, f, TypeRequest, []byte("truncate me"))
}

func TestOversizedFrame(t *testing.T) {
	const maxPT = 100
	ini, rsp := pair(t, randomExporter(t), Options{MaxPlaintext: maxPT, MaxAuthFailures: 100})
	_, err := ini.Seal(nil, TypeRequest, make([]byte, maxPT+1))
	wantErr(t, err, ErrFrameTooLarge)

	f := mustSeal(t, ini, TypeRequest, make([]byte, maxPT)) // the largest allowed
	g := append(bytes.Clone(f), 0)
	_, _, err = rsp.Open(nil, g)
	wantErr(t, err, ErrFrameTooLarge)
	_, _, err = rsp.Open(nil, make([]byte, 1<<16+Overhead))
	wantErr(t, err, ErrFrameTooLarge)
	mustOpen(t, rsp, f, TypeRequest, make([]byte, maxPT))

	// The default makes the largest frame exactly 2048 bytes.
	ini, rsp = pair(t, randomExporter(t), Options{})
	f = mustSeal(t, ini, TypeRequest, make([]byte, DefaultMaxPlaintext))
	if len(f) != 2048 {
		t.Fatalf("largest frame is %d bytes", len(f))
	}
	_, _, err = rsp.Open(nil, append(f, 0))
	wantErr(t, err, ErrFrameTooLarge)
}

func TestEmptyFrame(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), lenient)
	for _, f := range [][]byte{nil, {}} {
		_, _, err := rsp.Open(nil, f)
		wantErr(t, err, ErrShortFrame)
	}
	// An empty plaintext is a valid, 13-byte frame.
	f := mustSeal(t, ini, TypeRequest, nil)
	if len(f) != Overhead {
		t.Fatalf("empty frame is %d bytes", len(f))
	}
	typ, pt, err := rsp.Open(nil, f)
	if err != nil || typ != TypeRequest || len(pt) != 0 {
		t.Fatalf("Open = %v %x %v", typ, pt, err)
	}
}

func TestReflectedFrameRefused(t *testing.T) {
	exp := randomExporter(t)
	ini, rsp := pair(t, exp, lenient)

	// Single-direction types come back with the wrong type for the direction.
	_, _, err := ini.Open(nil, mustSeal(t, ini, TypeRequest, []byte("r")))
	wantErr(t, err, ErrBadType)
	_, _, err = rsp.Open(nil, mustSeal(t, rsp, TypeResponse, []byte("r")))
	wantErr(t, err, ErrBadType)
	_, _, err = rsp.Open(nil, mustSeal(t, rsp, TypeEvent, []byte("r")))
	wantErr(t, err, ErrBadType)

	// Close travels both ways, so key, nonce and AAD direction must refuse
	// it. Sealing Close closes the sender, so reflect into a twin session
	// with the same keys.
	for _, role := range []Role{Initiator, Responder} {
		a, _ := NewSession(role, exp, testCI, testCR, lenient)
		b, _ := NewSession(role, exp, testCI, testCR, lenient)
		_, _, err = b.Open(nil, mustSeal(t, a, TypeClose, []byte{0}))
		wantErr(t, err, ErrAuth)
	}

	// Even if the exporter returned the same key for both directions, the
	// Sender ID in the nonce and the direction byte in the AAD refuse it.
	same := func(label uint, context []byte, length int) ([]byte, error) {
		if label == LabelKeyR2I {
			label = LabelKeyI2R
		}
		return exp(label, context, length)
	}
	a, _ := NewSession(Initiator, same, testCI, testCR, lenient)
	b, _ := NewSession(Initiator, same, testCI, testCR, lenient)
	_, _, err = b.Open(nil, mustSeal(t, a, TypeClose, []byte{0}))
	wantErr(t, err, ErrAuth)
}

func TestFrameFromOtherSessionRefused(t *testing.T) {
	iniA, _ := pair(t, randomExporter(t), Options{})
	_, rspB := pair(t, randomExporter(t), lenient)
	for i := range 5 {
		_, _, err := rspB.Open(nil, mustSeal(t, iniA, TypeRequest, []byte{byte(i)}))
		wantErr(t, err, ErrAuth)
	}

	// Same exporter output but other connection identifiers: other nonces.
	exp := randomExporter(t)
	ini, err := NewSession(Initiator, exp, []byte{1}, []byte{2}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rsp, err := NewSession(Responder, exp, []byte{1}, []byte{3}, lenient)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = rsp.Open(nil, mustSeal(t, ini, TypeRequest, []byte("x")))
	wantErr(t, err, ErrAuth)
}

func TestFreshKeysPerSession(t *testing.T) {
	iniA, _ := pair(t, randomExporter(t), Options{})
	iniB, _ := pair(t, randomExporter(t), Options{})
	pt := []byte("same plaintext, same seq")
	for seq := range 3 {
		a := mustSeal(t, iniA, TypeRequest, pt)
		b := mustSeal(t, iniB, TypeRequest, pt)
		if !bytes.Equal(a[:HeaderLen], b[:HeaderLen]) {
			t.Fatalf("seq %d: headers differ: %x %x", seq, a[:HeaderLen], b[:HeaderLen])
		}
		if bytes.Equal(a[HeaderLen:], b[HeaderLen:]) {
			t.Fatalf("seq %d: two sessions produced the same ciphertext", seq)
		}
	}
	if iniA.snd.base == iniB.snd.base {
		t.Fatal("two sessions share a Common IV")
	}
}

func TestSeqExhaustion(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), Options{MaxSeq: 5})
	for i := range 5 {
		mustOpen(t, rsp, mustSeal(t, ini, TypeRequest, []byte{byte(i)}), TypeRequest, []byte{byte(i)})
	}
	for range 2 {
		out, err := ini.Seal([]byte("keep"), TypeRequest, []byte{5})
		wantErr(t, err, ErrSeqExhausted)
		if string(out) != "keep" {
			t.Fatalf("dst changed: %q", out)
		}
	}
	// Exhaustion stops sending only: the other direction still works, so a
	// pending response can be read before the re-handshake.
	mustOpen(t, ini, mustSeal(t, rsp, TypeResponse, []byte("r")), TypeResponse, []byte("r"))

	// The whole 32-bit sequence space can be allowed, but no more.
	s, err := NewSession(Initiator, randomExporter(t), testCI, testCR, Options{MaxSeq: 1 << 32})
	if err != nil {
		t.Fatal(err)
	}
	s.snd.next = 1<<32 - 1
	f := mustSeal(t, s, TypeRequest, nil)
	if binary.BigEndian.Uint32(f[1:5]) != 0xffffffff {
		t.Fatalf("last seq %x", f[1:5])
	}
	_, err = s.Seal(nil, TypeRequest, nil)
	wantErr(t, err, ErrSeqExhausted)
}

func TestNeedsRekey(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), Options{MaxSeq: 20}) // 90%: 18
	for i := range 20 {
		if got, want := ini.NeedsRekey(), i >= 18; got != want {
			t.Fatalf("after %d frames sent: NeedsRekey = %v", i, got)
		}
		if got, want := rsp.NeedsRekey(), i >= 18; got != want {
			t.Fatalf("after %d frames received: NeedsRekey = %v", i, got)
		}
		mustOpen(t, rsp, mustSeal(t, ini, TypeRequest, nil), TypeRequest, nil)
	}
	d, _ := pair(t, randomExporter(t), Options{})
	if d.rekeyAt != 943719 {
		t.Fatalf("default rekey threshold %d", d.rekeyAt)
	}
}

func TestIdleTimeout(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	opts := Options{Now: clock.now}
	ini, rsp := pair(t, randomExporter(t), opts)

	// Each success restarts the 30 s.
	for range 3 {
		clock.advance(DefaultIdleTimeout - time.Millisecond)
		f := mustSeal(t, ini, TypeRequest, []byte("ping"))
		mustOpen(t, rsp, f, TypeRequest, []byte("ping"))
	}
	// A refused frame does not.
	clock.advance(20 * time.Second)
	f := mustSeal(t, ini, TypeRequest, []byte("late"))
	_, _, err := rsp.Open(nil, []byte("junk"))
	wantErr(t, err, ErrShortFrame)
	clock.advance(10 * time.Second) // rsp: exactly 30 s since its last success
	_, _, err = rsp.Open(nil, f)
	wantErr(t, err, ErrIdle, ErrClosed)
	_, err = rsp.Seal(nil, TypeResponse, nil)
	wantErr(t, err, ErrClosed, ErrIdle)

	// ini sealed 10 s ago: still open, until 30 s pass without success.
	mustSeal(t, ini, TypeRequest, nil)
	clock.advance(DefaultIdleTimeout)
	_, err = ini.Seal(nil, TypeRequest, nil)
	wantErr(t, err, ErrIdle, ErrClosed)
	_, _, err = ini.Open(nil, nil)
	wantErr(t, err, ErrClosed, ErrIdle)

	// A custom timeout.
	ini, _ = pair(t, randomExporter(t), Options{Now: clock.now, IdleTimeout: time.Second})
	clock.advance(time.Second)
	_, err = ini.Seal(nil, TypeRequest, nil)
	wantErr(t, err, ErrIdle)
}

func TestCloseFrame(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), lenient)
	for _, pt := range [][]byte{nil, {1, 2}} {
		_, err := rsp.Seal(nil, TypeClose, pt)
		wantErr(t, err, ErrBadClose)
	}
	// A Close frame whose length is not Overhead+1 is refused unopened.
	var nonce [NonceLen]byte
	var aad [AADLen]byte
	makeNonce(&nonce, &ini.snd.base, 0)
	makeAAD(&aad, dirI2R, TypeClose, 0)
	long := append([]byte{byte(TypeClose), 0, 0, 0, 0}, ini.snd.aead.Seal(nil, nonce[:], []byte{0, 0}, aad[:])...)
	_, _, err := rsp.Open(nil, long)
	wantErr(t, err, ErrBadClose)

	f := mustSeal(t, rsp, TypeClose, []byte{byte(CloseRekey)})
	_, err = rsp.Seal(nil, TypeResponse, nil)
	wantErr(t, err, ErrClosed)
	mustOpen(t, ini, f, TypeClose, []byte{byte(CloseRekey)})
	_, err = ini.Seal(nil, TypeRequest, nil)
	wantErr(t, err, ErrClosed, ErrPeerClosed)
	_, _, err = ini.Open(nil, f)
	wantErr(t, err, ErrClosed, ErrPeerClosed)
}

func TestExplicitClose(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), Options{})
	f := mustSeal(t, ini, TypeRequest, []byte("x"))
	rsp.Close()
	rsp.Close()
	_, _, err := rsp.Open(nil, f)
	wantErr(t, err, ErrClosed)
	_, err = rsp.Seal(nil, TypeResponse, nil)
	wantErr(t, err, ErrClosed)
	if rsp.snd.aead != nil || rsp.rcv.aead != nil || rsp.snd.base != [NonceLen]byte{} {
		t.Fatal("Close kept key material")
	}
}

func TestNewSessionErrors(t *testing.T) {
	exp := randomExporter(t)
	long := make([]byte, MaxConnIDLen+1)
	for _, c := range []struct {
		name   string
		role   Role
		exp    Exporter
		cI, cR []byte
		opts   Options
		want   error
	}{
		{"C_I too long", Initiator, exp, long, nil, Options{}, ErrBadConnID},
		{"C_R too long", Responder, exp, nil, long, Options{}, ErrBadConnID},
		{"C_I = C_R", Initiator, exp, []byte{7}, []byte{7}, Options{}, ErrBadConnID},
		{"both empty", Initiator, exp, nil, []byte{}, Options{}, ErrBadConnID},
		{"zero role", 0, exp, testCI, testCR, Options{}, ErrBadConfig},
		{"nil exporter", Initiator, nil, testCI, testCR, Options{}, ErrBadConfig},
		{"MaxSeq", Initiator, exp, testCI, testCR, Options{MaxSeq: 1<<32 + 1}, ErrBadConfig},
		{"MaxAuthFailures", Initiator, exp, testCI, testCR, Options{MaxAuthFailures: -1}, ErrBadConfig},
		{"IdleTimeout", Initiator, exp, testCI, testCR, Options{IdleTimeout: -1}, ErrBadConfig},
		{"MaxPlaintext", Initiator, exp, testCI, testCR, Options{MaxPlaintext: 1 << 16}, ErrBadConfig},
		{"exporter fails", Initiator, func(uint, []byte, int) ([]byte, error) { return nil, errors.New("boom") },
			testCI, testCR, Options{}, ErrExporter},
		{"exporter short", Initiator, func(_ uint, _ []byte, n int) ([]byte, error) { return make([]byte, n-1), nil },
			testCI, testCR, Options{}, ErrExporter},
	} {
		s, err := NewSession(c.role, c.exp, c.cI, c.cR, c.opts)
		if s != nil || !errors.Is(err, c.want) {
			t.Errorf("%s: NewSession = %v, %v; want %v", c.name, s, err, c.want)
		}
	}
	// The longest identifiers, and an empty one, are fine.
	if _, err := NewSession(Responder, exp, []byte{1, 2, 3, 4, 5, 6, 7}, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	// The exporter is asked for exactly the three outputs of the spec.
	e := &hkdfExporter{prk: make([]byte, 32)}
	if _, err := NewSession(Initiator, e.export, testCI, testCR, Options{}); err != nil {
		t.Fatal(err)
	}
	want := []exportCall{{32768, nil, 16}, {32769, nil, 16}, {32770, nil, 13}}
	if len(e.calls) != len(want) {
		t.Fatalf("exporter calls %+v", e.calls)
	}
	for i, c := range e.calls {
		if c.label != want[i].label || len(c.context) != 0 || c.length != want[i].length {
			t.Fatalf("exporter call %d = %+v, want %+v", i, c, want[i])
		}
	}
}

// TestErrorsCarryNoKeyMaterial collects the errors of many failure paths
// and checks that none contains a key, the Common IV or a nonce.
func TestErrorsCarryNoKeyMaterial(t *testing.T) {
	e := &hkdfExporter{prk: bytes.Repeat([]byte{0x42}, 32)}
	var secrets [][]byte
	for _, c := range []exportCall{{LabelKeyI2R, nil, KeyLen}, {LabelKeyR2I, nil, KeyLen}, {LabelCommonIV, nil, CommonIVLen}} {
		b, _ := e.export(c.label, nil, c.length)
		secrets = append(secrets, b)
	}
	ini, rsp := pair(t, e.export, Options{MaxAuthFailures: 4})
	secrets = append(secrets, ini.snd.base[:], ini.rcv.base[:])
	f := mustSeal(t, ini, TypeRequest, []byte("x"))
	g := bytes.Clone(f)
	g[6] ^= 1
	var errs []error
	collect := func(err error) { errs = append(errs, err) }
	_, _, err := rsp.Open(nil, g)
	collect(err)
	_, _, err = rsp.Open(nil, f[:3])
	collect(err)
	mustOpen(t, rsp, f, TypeRequest, []byte("x"))
	_, _, err = rsp.Open(nil, f)
	collect(err)
	_, _, err = rsp.Open(nil, g)
	collect(err)
	_, err = ini.Seal(nil, TypeEvent, nil)
	collect(err)
	for _, err := range errs {
		msg := err.Error()
		for _, s := range secrets {
			if strings.Contains(msg, string(s)) || strings.Contains(strings.ToLower(msg), hex.EncodeToString(s)) {
				t.Fatalf("error %q carries key material", msg)
			}
		}
	}
}

func TestInPlace(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), Options{})
	pt := []byte("seal and open in one buffer")
	buf := make([]byte, HeaderLen+len(pt), 256)
	copy(buf[HeaderLen:], pt)
	f, err := ini.Seal(buf[:0], TypeRequest, buf[HeaderLen:])
	if err != nil {
		t.Fatal(err)
	}
	if &f[0] != &buf[0] || len(f) != len(pt)+Overhead {
		t.Fatal("Seal did not work in place")
	}
	typ, out, err := rsp.Open(f[:0], f)
	if err != nil || typ != TypeRequest || !bytes.Equal(out, pt) || &out[0] != &buf[0] {
		t.Fatalf("Open in place = %v %q %v", typ, out, err)
	}
	// dst anywhere else over the frame: before its ciphertext, exactly on
	// it, or inside it.
	for _, at := range []int{1, HeaderLen, HeaderLen + 2, 20, 40} {
		f, err := ini.Seal(buf[:0], TypeRequest, pt)
		if err != nil {
			t.Fatal(err)
		}
		typ, out, err := rsp.Open(buf[at:at], f)
		if err != nil || typ != TypeRequest || !bytes.Equal(out, pt) || &out[0] != &buf[:cap(buf)][at] {
			t.Fatalf("Open into buf[%d:] = %v %q %v", at, typ, out, err)
		}
	}
	// A refused frame leaves dst as it was.
	f, err = ini.Seal(buf[:0], TypeRequest, pt)
	if err != nil {
		t.Fatal(err)
	}
	f[len(f)-1] ^= 1
	if _, out, err := rsp.Open(f[:2], f); !errors.Is(err, ErrAuth) || len(out) != 2 || &out[0] != &buf[0] {
		t.Fatalf("Open of a bad frame in place = %q, %v", out, err)
	}
}

// TestNoAllocs checks that Seal and Open through two sessions allocate
// nothing when the buffers have room, in place or not.
func TestNoAllocs(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), Options{MaxSeq: 1 << 32})
	pt := make([]byte, 64)
	fbuf := make([]byte, 0, 64+Overhead)
	pbuf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(1000, func() {
		f, err := ini.Seal(fbuf[:0], TypeRequest, pt)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := rsp.Open(pbuf[:0], f); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Seal+Open allocates %.1f times", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		buf := fbuf[:HeaderLen+len(pt)]
		f, err := ini.Seal(buf[:0], TypeRequest, buf[HeaderLen:])
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := rsp.Open(f[:0], f); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Seal+Open in place allocates %.1f times", n)
	}
	// The replay window and the checks themselves never allocate.
	var w window = newWindow()
	if n := testing.AllocsPerRun(1000, func() {
		if w.check(uint32(w.top+1)) == nil {
			w.accept(uint32(w.top + 1))
		}
	}); n != 0 {
		t.Fatalf("window allocates %.0f", n)
	}
}

func TestConcurrentSealOpen(t *testing.T) {
	ini, rsp := pair(t, randomExporter(t), Options{})
	const n = 500
	var wg sync.WaitGroup
	toRsp, toIni := make(chan []byte, 16), make(chan []byte, 16)
	errs := make(chan error, 8)
	send := func(s *Session, typ Type, ch chan<- []byte) {
		defer wg.Done()
		defer close(ch)
		for i := range n {
			f, err := s.Seal(nil, typ, []byte{byte(i)})
			if err != nil {
				errs <- err
				return
			}
			ch <- f
		}
	}
	recv := func(s *Session, ch <-chan []byte) {
		defer wg.Done()
		i := 0
		for f := range ch {
			if _, pt, err := s.Open(nil, f); err != nil || pt[0] != byte(i) {
				errs <- err
				return
			}
			i++
			_ = s.NeedsRekey()
		}
	}
	wg.Add(4)
	go send(ini, TypeRequest, toRsp)
	go send(rsp, TypeEvent, toIni)
	go recv(rsp, toRsp)
	go recv(ini, toIni)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Close racing with use.
	wg.Add(2)
	go func() { defer wg.Done(); ini.Close() }()
	go func() { defer wg.Done(); _, _ = ini.Seal(nil, TypeRequest, nil); _, _, _ = ini.Open(nil, nil) }()
	wg.Wait()
}

// TestWindowModel compares the replay window with a plain set of accepted
// sequence numbers over random traffic.
func TestWindowModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	w := newWindow()
	seen := map[uint32]bool{}
	top := int64(-1)
	for range 100000 {
		var seq uint32
		switch rng.IntN(4) {
		case 0:
			seq = uint32(top + 1 + int64(rng.IntN(100)))
		case 1:
			seq = uint32(max(0, top-int64(rng.IntN(80))))
		case 2:
			seq = uint32(max(0, top-63))
		default:
			seq = uint32(max(0, top-64))
		}
		var want error
		switch {
		case int64(seq) <= top-windowSize:
			want = ErrStale
		case seen[seq]:
			want = ErrReplay
		}
		if got := w.check(seq); got != want {
			t.Fatalf("top %d seq %d: check = %v, want %v", top, seq, got, want)
		}
		if want == nil && rng.IntN(5) != 0 { // some frames fail to authenticate
			w.accept(seq)
			seen[seq] = true
			top = max(top, int64(seq))
		}
	}
}
