package channel_test

import (
	"context"
	"crypto/aes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"runtime"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/frame"
	"github.com/gatewayd/gatewayd/firmware/internal/ccm"
	"github.com/gatewayd/gatewayd/firmware/internal/interleave"
)

// benchMTU is the ATT MTU of the benchmarks: the BlueZ emulator's default
// and what a phone-class central usually negotiates with an nRF52.
const benchMTU = 185

// BenchmarkHandshakeInterleaved is the handshake figure scripts/bench.sh
// judges (goal: at most 1.3 times its floor). Each round runs one
// handshake exactly as gatewayd runs it and one run of its floor, and it
// reports the median per-round ratio of the two ("handshake/floor"; see
// firmware/internal/interleave).
//
// The handshake (benchHandshake): channel.Dial (the gateway, as
// internal/bluelink calls it) against channel.Accept (a lock), with the
// fleet credentials sent by value and each verified against the fleet root
// by a cred.Verifier (CWT parse, signature, kind, validity), every message
// fragmented at an ATT MTU of 185 and reassembled (firmware/fragment), and
// both frame sessions derived. The floor (handshakeFloor) is the
// cryptography that cannot be avoided, at the sizes of this handshake.
//
// Both run with GOMAXPROCS=1: the two sides of the handshake are two
// goroutines passing messages, and on a loaded machine waking a goroutine
// on another OS thread costs more than the work measured; on one P the
// hand-off is a goroutine switch. What is measured is the CPU work of
// both ends, which on a dock are two machines.
func BenchmarkHandshakeInterleaved(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := newBenchHandshake(b)
	defer h.close()
	fl := newHandshakeFloor(b, h)
	b.ReportAllocs()
	interleave.Run(b, 1, "handshake", h.run, "floor", fl.run, "handshake/floor")
}

// BenchmarkHandshake is benchHandshake alone (for -cpuprofile and
// allocation counts).
func BenchmarkHandshake(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := newBenchHandshake(b)
	defer h.close()
	b.ReportAllocs()
	for b.Loop() {
		h.run()
	}
}

// BenchmarkHandshakeFloor is handshakeFloor alone.
func BenchmarkHandshakeFloor(b *testing.B) {
	h := newBenchHandshake(b)
	defer h.close()
	fl := newHandshakeFloor(b, h)
	b.ReportAllocs()
	for b.Loop() {
		fl.run()
	}
}

// benchHandshake is a gateway and a lock of one fleet on a packet link.
// The lock's side runs in a goroutine that accepts one handshake per run.
type benchHandshake struct {
	b        *testing.B
	fleet    *channeltest.Fleet
	gw, lk   channeltest.Party
	gwCfg    channel.Config
	lkCfg    channel.Config
	gl, ll   *benchLink
	start    chan *channel.FragmentTransport
	accepted chan error
}

func newBenchHandshake(b *testing.B) *benchHandshake {
	f := channeltest.NewFleet(b, "acme")
	h := &benchHandshake{b: b, fleet: f, gw: f.Gateway(b, "gw-dock-1"), lk: f.Lock(b, 0x0102030405060708),
		start: make(chan *channel.FragmentTransport), accepted: make(chan error)}
	// As internal/bluelink dials: bound to the lock's ID, by value.
	h.gwCfg = f.GatewayConfig(h.gw)
	h.gwCfg.Verifier.Subject = h.lk.Cert.Subject
	h.lkCfg = f.LockConfig(h.lk)
	// The sessions are real, on the real clock.
	h.gwCfg.Frame, h.lkCfg.Frame = frame.Options{}, frame.Options{}
	h.gl, h.ll = newBenchLink(benchMTU)
	go func() {
		for lt := range h.start {
			c, err := channel.Accept(context.Background(), lt, h.lkCfg)
			if err == nil && c.Peer().Subject != h.gw.Cert.Subject {
				err = errBench("lock sees the wrong peer")
			}
			h.accepted <- err
		}
	}()
	return h
}

// run is one connection's handshake: each connection has its own
// fragment transports (msg_ids and reassembly state), as on a BLE link.
func (h *benchHandshake) run() {
	h.start <- channel.NewFragmentTransport(h.ll, fragment.Options{})
	c, err := channel.Dial(context.Background(), channel.NewFragmentTransport(h.gl, fragment.Options{}), h.gwCfg)
	if err != nil {
		h.b.Fatalf("dial: %v", err)
	}
	if err := <-h.accepted; err != nil {
		h.b.Fatalf("accept: %v", err)
	}
	if c.Peer().Subject != h.lk.Cert.Subject || c.Session() == nil {
		h.b.Fatal("gateway sees the wrong peer")
	}
}

func (h *benchHandshake) close() { close(h.start) }

type errBench string

func (e errBench) Error() string { return string(e) }

// benchLink is an in-memory packet link: each write is copied (as a real
// link's write is) and queued for the other end.
type benchLink struct {
	mtu     int
	in, out chan []byte
}

func newBenchLink(mtu int) (a, z *benchLink) {
	ab, ba := make(chan []byte, 64), make(chan []byte, 64)
	return &benchLink{mtu: mtu, in: ba, out: ab}, &benchLink{mtu: mtu, in: ab, out: ba}
}

func (l *benchLink) MTU() int { return l.mtu }

func (l *benchLink) WritePacket(ctx context.Context, p []byte) error {
	if len(p) > l.mtu-3 {
		return errBench("packet longer than ATT_MTU-3")
	}
	select {
	case l.out <- append([]byte(nil), p...):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *benchLink) ReadPacket(ctx context.Context) ([]byte, error) {
	select {
	case p := <-l.in:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// handshakeFloor is the cryptography of one handshake of benchHandshake
// (EDHOC method 0, suite 0, both ends), at its sizes, and nothing else:
//
//   - per end, one X25519 key generation (32 bytes from crypto/rand) and
//     one X25519 shared secret;
//   - the two credential checks: Ed25519 verification of each CWT's
//     signature by the fleet root, over its COSE Sig_structure;
//   - Signature_or_MAC_2 and _3: one Ed25519 signature by each end, over a
//     message the size of EDHOC's Sig_structure with the credential by
//     value, and its verification by the other end;
//   - per end, the key schedule's hashing: SHA-256 of message_1 and of
//     TH_2, TH_3 and TH_4's inputs, HKDF-Extract for PRK_2e, and the
//     HKDF-Expands of KEYSTREAM_2 (as long as PLAINTEXT_2), MAC_2, MAC_3,
//     K_3, IV_3, K_4, IV_4, PRK_out, PRK_exporter and the three frame-key
//     exports;
//   - message_3 and message_4 sealed and opened with AES-CCM-16-64-128, and
//     the AES key schedules of those and of the four frame keys.
type handshakeFloor struct {
	b              *testing.B
	root           ed25519.PublicKey
	tbsI, tbsR     []byte // the credentials' signed payloads
	sigI, sigR     []byte
	skI, skR       ed25519.PrivateKey
	pkI, pkR       ed25519.PublicKey
	sig2, sig3     []byte // messages as long as EDHOC's Sig_structures
	m1, th2In      []byte
	th3In, th4In   []byte
	pt2, pt3, aad3 []byte
}

func newHandshakeFloor(b *testing.B, h *benchHandshake) *handshakeFloor {
	f := &handshakeFloor{b: b, root: h.fleet.Roots[string(h.fleet.RootKID)],
		skI: h.gw.Key, skR: h.lk.Key, pkI: h.gw.Cert.PublicKey, pkR: h.lk.Cert.PublicKey}
	f.tbsI, f.sigI = cwtSigned(b, h.gw.Cert.Raw)
	f.tbsR, f.sigR = cwtSigned(b, h.lk.Cert.Raw)
	credI, credR := h.gw.Cert.Raw, h.lk.Cert.Raw
	idCred := func(c []byte) int { return 2 + len(c) } // {13: CWT}
	// ["Signature1", bstr ID_CRED, bstr (bstr TH || CRED), bstr MAC] with
	// CBOR heads of 3 bytes at most.
	sigLen := func(c []byte) int { return 1 + 11 + 3 + idCred(c) + 3 + 34 + len(c) + 1 + 8 }
	f.sig2 = make([]byte, sigLen(credR))
	f.sig3 = make([]byte, sigLen(credI))
	f.m1 = make([]byte, 39)                          // method, suites, G_X, C_I
	f.th2In = make([]byte, 34+34)                    // bstr G_Y, bstr H(message_1)
	f.pt2 = make([]byte, 1+idCred(credR)+3+64)       // C_R, ID_CRED_R, bstr Signature_2
	f.th3In = make([]byte, 34+len(f.pt2)+len(credR)) // TH_2, PLAINTEXT_2, CRED_R
	f.pt3 = make([]byte, idCred(credI)+2+64)         // ID_CRED_I, bstr Signature_3
	f.th4In = make([]byte, 34+len(f.pt3)+len(credI)) // TH_3, PLAINTEXT_3, CRED_I
	f.aad3 = make([]byte, 1+9+1+34)                  // ["Encrypt0", h'', TH]
	return f
}

// cwtSigned returns the Sig_structure a credential's signature covers, and
// the signature.
func cwtSigned(b *testing.B, raw []byte) (tbs, sig []byte) {
	var env struct {
		_           struct{} `cbor:",toarray"`
		Protected   []byte
		Unprotected cbor.RawMessage
		Payload     []byte
		Signature   []byte
	}
	if err := cbor.Unmarshal(raw, &env); err != nil {
		b.Fatal(err)
	}
	return cred.SigStructure(env.Payload), env.Signature
}

func (f *handshakeFloor) run() {
	// Ephemeral keys and the shared secret, each end.
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	x, _ := ecdh.X25519().NewPrivateKey(seed[:])
	_, _ = rand.Read(seed[:])
	y, _ := ecdh.X25519().NewPrivateKey(seed[:])
	gxy, err := y.ECDH(x.PublicKey())
	if err != nil {
		f.b.Fatal(err)
	}
	if _, err := x.ECDH(y.PublicKey()); err != nil {
		f.b.Fatal(err)
	}
	// The credentials, each checked by the other end.
	if !ed25519.Verify(f.root, f.tbsR, f.sigR) || !ed25519.Verify(f.root, f.tbsI, f.sigI) {
		f.b.Fatal("credential signature")
	}
	// Signature_2 and Signature_3.
	if !ed25519.Verify(f.pkR, f.sig2, ed25519.Sign(f.skR, f.sig2)) ||
		!ed25519.Verify(f.pkI, f.sig3, ed25519.Sign(f.skI, f.sig3)) {
		f.b.Fatal("signature")
	}
	// The key schedule, each end.
	var k3, iv3, k4, iv4 []byte
	for range 2 {
		sha256.Sum256(f.m1)
		th2 := sha256.Sum256(f.th2In)
		prk, err := hkdf.Extract(sha256.New, gxy, th2[:])
		if err != nil {
			f.b.Fatal(err)
		}
		expand := func(n int) []byte {
			k, err := hkdf.Expand(sha256.New, prk, string(th2[:]), n)
			if err != nil {
				f.b.Fatal(err)
			}
			return k
		}
		expand(len(f.pt2)) // KEYSTREAM_2
		expand(8)          // MAC_2
		sha256.Sum256(f.th3In)
		expand(8) // MAC_3
		k3, iv3 = expand(16), expand(13)
		sha256.Sum256(f.th4In)
		k4, iv4 = expand(16), expand(13)
		expand(32) // PRK_out
		expand(32) // PRK_exporter
		kI2R, kR2I := expand(16), expand(16)
		expand(13) // Common IV
		// The frame keys' AES key schedules.
		_, _ = aes.NewCipher(kI2R)
		_, _ = aes.NewCipher(kR2I)
	}
	// message_3 and message_4: one end seals, the other opens.
	c3 := f.aead(k3).Seal(nil, iv3, f.pt3, f.aad3)
	if _, err := f.aead(k3).Open(nil, iv3, c3, f.aad3); err != nil {
		f.b.Fatal(err)
	}
	c4 := f.aead(k4).Seal(nil, iv4, nil, f.aad3)
	if _, err := f.aead(k4).Open(nil, iv4, c4, f.aad3); err != nil {
		f.b.Fatal(err)
	}
}

func (f *handshakeFloor) aead(key []byte) interface {
	Seal(dst, nonce, plaintext, additionalData []byte) []byte
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
} {
	blk, err := aes.NewCipher(key)
	if err != nil {
		f.b.Fatal(err)
	}
	a, err := ccm.New(blk, 8, 13)
	if err != nil {
		f.b.Fatal(err)
	}
	return a
}
