package edhoc

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"fmt"
)

type initState uint8

const (
	iStart initState = iota
	iSent1
	iGot2
	iSent3
	iDone
	iFailed
)

// Initiator runs the Initiator's side of one EDHOC handshake (the gateway
// or a phone). Call, in order: Message1, ProcessMessage2, Message3,
// ProcessMessage4; then Exporter. Any error ends the handshake; its
// ProtocolError's Message is the EDHOC error message to send the peer.
// An Initiator is not safe for concurrent use.
type Initiator struct {
	opts  Options
	state initState
	x     *ecdh.PrivateKey
	gx    []byte
	hm1   []byte
	keys
}

// NewInitiator prepares a handshake.
func NewInitiator(opts Options) (*Initiator, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if len(opts.Suites) == 0 {
		opts.Suites = []Suite{Suite0}
	}
	if !supportedSuite(opts.Suites[len(opts.Suites)-1]) {
		return nil, fmt.Errorf("%w: selected suite %d", ErrUnsupportedSuite, opts.Suites[len(opts.Suites)-1])
	}
	return &Initiator{opts: opts}, nil
}

func (in *Initiator) fail(err error) error {
	in.state = iFailed
	return fail(err)
}

// Message1 returns message_1 = (METHOD, SUITES_I, G_X, C_I, ? EAD_1)
// (RFC 9528 §5.2.1).
func (in *Initiator) Message1() ([]byte, error) {
	if in.state != iStart {
		return nil, fmt.Errorf("%w: Message1 called twice", ErrState)
	}
	var err error
	if in.x, err = newEphemeral(in.opts.rand()); err != nil {
		return nil, in.fail(err)
	}
	in.gx = in.x.PublicKey().Bytes()
	in.cI = in.opts.ConnID
	if in.cI == nil {
		if in.cI, err = randomConnID(in.opts.rand(), nil); err != nil {
			return nil, in.fail(err)
		}
	}
	m := make([]byte, 0, 64)
	m = appendInt(m, int64(MethodSigSig))
	m = appendSuites(m, in.opts.Suites)
	m = appendBstr(m, in.gx)
	m = appendConnID(m, in.cI)
	m = appendEAD(m, in.opts.EAD[1])
	in.hm1 = hashMessage1(m)
	in.opts.trace("G_X", in.gx)
	in.opts.trace("message_1", m)
	in.state = iSent1
	return m, nil
}

// ProcessMessage2 decrypts and verifies message_2 (RFC 9528 §5.3.3) and
// returns the Responder's verified credential. An EDHOC error message from
// the Responder is returned as a *PeerError.
func (in *Initiator) ProcessMessage2(m2 []byte) (Credential, error) {
	if in.state != iSent1 {
		return Credential{}, in.fail(fmt.Errorf("%w: ProcessMessage2 before Message1", ErrState))
	}
	if firstIsInt(m2) {
		in.state = iFailed
		return Credential{}, peerError(m2)
	}
	c, err := in.processMessage2(m2)
	if err != nil {
		return Credential{}, in.fail(err)
	}
	in.state = iGot2
	return c, nil
}

func (in *Initiator) processMessage2(m2 []byte) (Credential, error) {
	gyct, err := onlyBstr(m2, "message_2")
	if err != nil {
		return Credential{}, err
	}
	if len(gyct) <= ecdhLen {
		return Credential{}, fmt.Errorf("%w: message_2: G_Y_CIPHERTEXT_2 too short", ErrMalformed)
	}
	gy, ct2 := gyct[:ecdhLen], gyct[ecdhLen:]
	if bytes.Equal(gy, in.gx) {
		return Credential{}, fmt.Errorf("%w: G_Y equals our own G_X (reflection)", ErrInvalidKey)
	}
	gxy, err := dh(in.x, gy)
	if err != nil {
		return Credential{}, err
	}
	var hd [40]byte
	in.th2 = transcript(gy, appendBstr(hd[:0], in.hm1))
	prk2e := extract(in.th2, gxy)
	in.prk3e2m = prk2e

	pt2 := make([]byte, len(ct2))
	ks2 := kdf(prk2e, 0, in.th2, len(ct2))
	xorInto(pt2, ct2, ks2)
	in.opts.trace("G_XY", gxy)
	in.opts.trace("TH_2", in.th2)
	in.opts.trace("PRK_2e", prk2e)
	in.opts.trace("KEYSTREAM_2", ks2)
	in.opts.trace("PLAINTEXT_2", pt2)

	r := &reader{b: pt2, what: "PLAINTEXT_2"}
	if in.cR, err = r.connID("C_R"); err != nil {
		return Credential{}, err
	}
	if bytes.Equal(in.cR, in.cI) {
		return Credential{}, fmt.Errorf("%w: PLAINTEXT_2: C_R equals C_I", ErrMalformed)
	}
	idCredR, err := readIDCred(r, "ID_CRED_R")
	if err != nil {
		return Credential{}, err
	}
	sig, err := r.bstr("Signature_or_MAC_2")
	if err != nil {
		return Credential{}, err
	}
	if len(sig) != sigLen {
		// RFC 9529 §4.2.5.
		return Credential{}, fmt.Errorf("%w: PLAINTEXT_2: Signature_or_MAC_2 is %d bytes, want %d", ErrMalformed, len(sig), sigLen)
	}
	items, ead2, err := readEAD(r)
	if err != nil {
		return Credential{}, err
	}
	peer, err := resolve(in.opts.Peer, idCredR)
	if err != nil {
		return Credential{}, err
	}
	mac2 := kdf(in.prk3e2m, 2, macContext(in.cR, idCredR, in.th2, peer.Cred, ead2), macLenMethod)
	if err := verifySig(peer.PublicKey, idCredR, in.th2, peer.Cred, ead2, mac2, sig); err != nil {
		return Credential{}, err
	}
	if err := checkEAD(items, in.opts.accept(2)); err != nil {
		return Credential{}, err
	}
	in.eadIn[2] = items
	in.peer = peer
	in.th3 = transcript(in.th2, pt2, peer.Cred)
	in.opts.trace("MAC_2", mac2)
	in.opts.trace("TH_3", in.th3)
	return peer, nil
}

// Message3 returns message_3 (RFC 9528 §5.4.2).
func (in *Initiator) Message3() ([]byte, error) {
	if in.state != iGot2 {
		return nil, in.fail(fmt.Errorf("%w: Message3 before ProcessMessage2", ErrState))
	}
	cred := in.opts.Cred
	ead3 := appendEAD(nil, in.opts.EAD[3])
	mac3 := kdf(in.prk3e2m, 6, macContext(nil, cred.IDCred, in.th3, cred.Cred, ead3), macLenMethod)
	sig := ed25519.Sign(in.opts.AuthKey, sigStructure(cred.IDCred, in.th3, cred.Cred, ead3, mac3))

	pt3 := compactIDCred(make([]byte, 0, 80+len(ead3)), cred.IDCred)
	pt3 = appendBstr(pt3, sig)
	pt3 = append(pt3, ead3...)

	k3, iv3 := in.k3()
	ct3, err := seal(k3, iv3, pt3, in.th3)
	if err != nil {
		return nil, in.fail(err)
	}
	in.th4 = transcript(in.th3, pt3, cred.Cred)
	in.finish()
	m3 := appendBstr(make([]byte, 0, len(ct3)+3), ct3)
	for _, kv := range []struct {
		n string
		v []byte
	}{{"MAC_3", mac3}, {"Signature_or_MAC_3", sig}, {"PLAINTEXT_3", pt3}, {"K_3", k3}, {"IV_3", iv3},
		{"message_3", m3}, {"TH_4", in.th4}, {"PRK_out", in.prkOut}, {"PRK_exporter", in.prkExporter}} {
		in.opts.trace(kv.n, kv.v)
	}
	in.state = iSent3
	return m3, nil
}

// ProcessMessage4 verifies message_4 (RFC 9528 §5.5.3), which confirms
// that the Responder derived the same keys. Only then is the handshake
// complete.
func (in *Initiator) ProcessMessage4(m4 []byte) error {
	if in.state != iSent3 {
		return in.fail(fmt.Errorf("%w: ProcessMessage4 before Message3", ErrState))
	}
	if firstIsInt(m4) {
		in.state = iFailed
		return peerError(m4)
	}
	ct4, err := onlyBstr(m4, "message_4")
	if err != nil {
		return in.fail(err)
	}
	k4, iv4 := in.k4()
	pt4, err := open(k4, iv4, ct4, in.th4, "message_4")
	if err != nil {
		return in.fail(err)
	}
	items, _, err := readEAD(&reader{b: pt4, what: "PLAINTEXT_4"})
	if err != nil {
		return in.fail(err)
	}
	if err := checkEAD(items, in.opts.accept(4)); err != nil {
		return in.fail(err)
	}
	in.eadIn[4] = items
	in.state = iDone
	return nil
}

// Done reports whether the handshake completed.
func (in *Initiator) Done() bool { return in.state == iDone }

// Exporter is EDHOC_Exporter(label, context, length) (RFC 9528 §4.2.1),
// available once the handshake is done.
func (in *Initiator) Exporter(label uint64, context []byte, length int) ([]byte, error) {
	return in.exporter(in.state == iDone, label, context, length)
}

// Peer returns the Responder's verified credential.
func (in *Initiator) Peer() Credential { return in.peer }

// ConnIDs returns C_I and C_R.
func (in *Initiator) ConnIDs() (cI, cR []byte) { return in.cI, in.cR }

// EAD returns the EAD items received in message n (2 or 4).
func (in *Initiator) EAD(n int) []EADItem { return in.eadIn[n] }
