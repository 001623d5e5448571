package edhoc

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
)

// party is a test identity: an Ed25519 key and a credential naming it.
type party struct {
	sk   ed25519.PrivateKey
	cred Credential
}

// newParty makes a credential that is a CBOR bstr of the public key,
// identified by an 8-byte kid (sent compactly).
func newParty(t testing.TB) party {
	t.Helper()
	pub, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(pub)
	return party{sk: sk, cred: Credential{
		IDCred:    KIDIDCred(h[:8]),
		Cred:      appendBstr(nil, pub),
		PublicKey: pub,
	}}
}

// kidResolver knows a fixed set of credentials by ID_CRED.
type kidResolver struct {
	mu    sync.Mutex
	known map[string]Credential
	calls int
}

func resolverOf(ps ...party) *kidResolver {
	r := &kidResolver{known: map[string]Credential{}}
	for _, p := range ps {
		r.known[string(p.cred.IDCred)] = p.cred
	}
	return r
}

func (r *kidResolver) ResolveCredential(idCred []byte) (Credential, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	c, ok := r.known[string(idCred)]
	if !ok {
		return Credential{}, fmt.Errorf("%w: %x", ErrUnknownCredential, idCred)
	}
	return c, nil
}

// newPair returns an Initiator and a Responder that trust each other.
func newPair(t testing.TB) (*Initiator, *Responder) {
	t.Helper()
	i, r := newParty(t), newParty(t)
	return newPairOf(t, i, r, Options{}, Options{})
}

func newPairOf(t testing.TB, i, r party, io, ro Options) (*Initiator, *Responder) {
	t.Helper()
	io.Cred, io.AuthKey = i.cred, i.sk
	if io.Peer == nil {
		io.Peer = resolverOf(r)
	}
	ro.Cred, ro.AuthKey = r.cred, r.sk
	if ro.Peer == nil {
		ro.Peer = resolverOf(i)
	}
	in, err := NewInitiator(io)
	if err != nil {
		t.Fatal(err)
	}
	re, err := NewResponder(ro)
	if err != nil {
		t.Fatal(err)
	}
	return in, re
}

// run drives a whole handshake and fails the test on any error.
func run(t testing.TB, in *Initiator, re *Responder) {
	t.Helper()
	if err := handshake(in, re); err != nil {
		t.Fatal(err)
	}
}

func handshake(in *Initiator, re *Responder) error {
	m1, err := in.Message1()
	if err != nil {
		return err
	}
	if err := re.ProcessMessage1(m1); err != nil {
		return err
	}
	m2, err := re.Message2()
	if err != nil {
		return err
	}
	if _, err := in.ProcessMessage2(m2); err != nil {
		return err
	}
	m3, err := in.Message3()
	if err != nil {
		return err
	}
	if _, err := re.ProcessMessage3(m3); err != nil {
		return err
	}
	m4, err := re.Message4()
	if err != nil {
		return err
	}
	return in.ProcessMessage4(m4)
}
