package edhoc

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
)

// Options configure one handshake, in either role. The zero value is not
// usable: Cred, AuthKey and Peer are required.
type Options struct {
	// Cred is our credential and AuthKey the Ed25519 key it certifies.
	Cred    Credential
	AuthKey ed25519.PrivateKey
	// Peer decides whether the peer's credential is acceptable.
	Peer CredentialResolver
	// ConnID is our connection identifier (C_I or C_R). Nil draws a random
	// one-byte identifier; a Responder avoids C_I.
	ConnID []byte
	// Suites is SUITES_I, most preferred first, the selected suite last
	// (Initiator only). Nil means [0].
	Suites []Suite
	// EAD holds the EAD items to send, indexed by message number 1-4.
	EAD [5][]EADItem
	// AcceptEAD checks the EAD items received in message n. Nil accepts
	// non-critical items and refuses critical ones.
	AcceptEAD func(n int, items []EADItem) error
	// Rand is the source of ephemeral keys and connection identifiers; nil
	// means crypto/rand. Test vectors use a fixed stream.
	Rand io.Reader
	// Trace, if set, is called with each intermediate value under the name
	// RFC 9529 gives it ("TH_2", "PRK_2e", "K_3"…). It sees secret keys:
	// it exists only for the test-vector generator and must never be set
	// in a product.
	Trace func(name string, value []byte)
}

func (o *Options) trace(name string, v []byte) {
	if o.Trace != nil {
		o.Trace(name, v)
	}
}

func (o *Options) check() error {
	if len(o.AuthKey) != ed25519.PrivateKeySize {
		return errors.New("edhoc: Options.AuthKey must be an Ed25519 private key")
	}
	if len(o.Cred.IDCred) == 0 || len(o.Cred.Cred) == 0 {
		return errors.New("edhoc: Options.Cred needs IDCred and Cred")
	}
	if o.Peer == nil {
		return errors.New("edhoc: Options.Peer is required")
	}
	if len(o.ConnID) > MaxConnIDLen {
		return fmt.Errorf("edhoc: Options.ConnID longer than %d bytes", MaxConnIDLen)
	}
	return nil
}

func (o *Options) rand() io.Reader {
	if o.Rand != nil {
		return o.Rand
	}
	return rand.Reader
}

func (o *Options) accept(n int) func([]EADItem) error {
	if o.AcceptEAD == nil {
		return nil
	}
	return func(items []EADItem) error { return o.AcceptEAD(n, items) }
}

// newEphemeral draws an X25519 key from r. The bytes are read explicitly so
// that a fixed stream gives a fixed key (crypto/ecdh.GenerateKey ignores its
// reader since Go 1.26).
func newEphemeral(r io.Reader) (*ecdh.PrivateKey, error) {
	var seed [32]byte
	if _, err := io.ReadFull(r, seed[:]); err != nil {
		return nil, fmt.Errorf("edhoc: reading ephemeral key: %w", err)
	}
	return ecdh.X25519().NewPrivateKey(seed[:])
}

// randomConnID draws a one-byte identifier in -24..23 that differs from avoid.
func randomConnID(r io.Reader, avoid []byte) ([]byte, error) {
	for {
		var b [1]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("edhoc: reading connection identifier: %w", err)
		}
		id := b[0] % 48 // 0x00-0x17, then 0x20-0x37
		if id >= 24 {
			id += 8
		}
		if len(avoid) != 1 || avoid[0] != id {
			return []byte{id}, nil
		}
	}
}

// dh computes the X25519 shared secret, refusing the all-zero result of a
// low-order point (RFC 9528 §9.2).
func dh(priv *ecdh.PrivateKey, peer []byte) ([]byte, error) {
	if isLowOrderX25519(peer) {
		return nil, fmt.Errorf("%w: X25519 point of low order", ErrInvalidKey)
	}
	pub, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	s, err := priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return s, nil
}

// resolve asks the resolver for the peer's credential and makes sure any
// refusal matches one of our sentinels.
func resolve(p CredentialResolver, idCred []byte) (Credential, error) {
	c, err := p.ResolveCredential(idCred)
	if err != nil {
		if errors.Is(err, ErrUnknownCredential) || errors.Is(err, ErrCredentialRejected) {
			return Credential{}, err
		}
		return Credential{}, fmt.Errorf("%w: %w", ErrCredentialRejected, err)
	}
	if len(c.PublicKey) != ed25519.PublicKeySize || len(c.Cred) == 0 {
		return Credential{}, fmt.Errorf("%w: resolver returned no Ed25519 key", ErrCredentialRejected)
	}
	return c, nil
}

// firstIsInt reports whether msg starts with a CBOR integer, which marks an
// EDHOC error message where message_2/3/4 (a bstr) was expected (RFC 9528
// §6).
func firstIsInt(msg []byte) bool {
	return len(msg) > 0 && (msg[0]>>5 == majorUint || msg[0]>>5 == majorNint)
}

func peerError(msg []byte) error {
	pe, err := ParseError(msg)
	if err != nil {
		return err
	}
	return pe
}

// onlyBstr reads a message made of exactly one bstr (message_2/3/4).
func onlyBstr(msg []byte, what string) ([]byte, error) {
	if len(msg) > MaxMessageLen {
		return nil, fmt.Errorf("%w: %s is %d bytes, over %d", ErrMalformed, what, len(msg), MaxMessageLen)
	}
	r := &reader{b: msg, what: what}
	b, err := r.bstr(what)
	if err != nil {
		return nil, err
	}
	if !r.empty() {
		// RFC 9529 §4.1.5: wrong number of sequence elements.
		return nil, fmt.Errorf("%w: %s: more than one CBOR item", ErrMalformed, what)
	}
	return b, nil
}

// keys is the state both roles share after message_2.
type keys struct {
	th2, th3, th4 []byte
	prk3e2m       []byte // = PRK_2e = PRK_4e3m for method 0 (§4.1.1)
	prkOut        []byte
	prkExporter   []byte
	peer          Credential
	cI, cR        []byte
	eadIn         [5][]EADItem
}

// finish derives PRK_out and PRK_exporter from TH_4 (§4.1.3, §4.2.1).
func (k *keys) finish() {
	k.prkOut = kdf(k.prk3e2m, 7, k.th4, hashLen)
	k.prkExporter = kdf(k.prkOut, 10, nil, hashLen)
}

// exporter is EDHOC_Exporter(label, context, length) (RFC 9528 §4.2.1).
func (k *keys) exporter(done bool, label uint64, context []byte, length int) ([]byte, error) {
	if !done {
		return nil, fmt.Errorf("%w: exporter used before the handshake completed", ErrState)
	}
	if length <= 0 || length > 255*hashLen {
		return nil, fmt.Errorf("edhoc: exporter length %d out of range", length)
	}
	return kdf(k.prkExporter, label, context, length), nil
}

// k3 returns K_3, IV_3 (§5.4.2) and k4 K_4, IV_4 (§5.5.1).
func (k *keys) k3() ([]byte, []byte) {
	return kdf(k.prk3e2m, 3, k.th3, keyLen), kdf(k.prk3e2m, 4, k.th3, ivLen)
}

func (k *keys) k4() ([]byte, []byte) {
	return kdf(k.prk3e2m, 8, k.th4, keyLen), kdf(k.prk3e2m, 9, k.th4, ivLen)
}

func seal(key, iv, plaintext, th []byte) ([]byte, error) {
	a, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return a.Seal(nil, iv, plaintext, encrypt0AAD(th)), nil
}

func open(key, iv, ciphertext, th []byte, what string) ([]byte, error) {
	a, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	if len(ciphertext) < tagLen {
		return nil, fmt.Errorf("%w: %s shorter than the AEAD tag", ErrMalformed, what)
	}
	pt, err := a.Open(nil, iv, ciphertext, encrypt0AAD(th))
	if err != nil {
		return nil, fmt.Errorf("%w: %s does not decrypt", ErrAuthentication, what)
	}
	return pt, nil
}

// hashMessage1 is H(message_1).
func hashMessage1(m1 []byte) []byte {
	h := sha256.Sum256(m1)
	return h[:]
}

// verifySig checks the peer's Signature_or_MAC (method 0: a signature
// over MAC_x, §5.3.3 step 4, §5.4.3 step 4).
func verifySig(pub ed25519.PublicKey, idCred, th, cred, ead, mac, sig []byte) error {
	if !ed25519.Verify(pub, sigStructure(idCred, th, cred, ead, mac), sig) {
		return fmt.Errorf("%w: signature does not verify", ErrAuthentication)
	}
	return nil
}

func xorInto(dst, a, b []byte) {
	subtle.XORBytes(dst, a, b)
}

// supportedSuite is the profile check: method 0, suite 0.
func supportedSuite(s Suite) bool { return s == Suite0 }

// SupportedSuites is SUITES_R as sent in an ERR_CODE 2 error message.
var SupportedSuites = []Suite{Suite0}
