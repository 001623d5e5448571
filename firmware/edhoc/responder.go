package edhoc

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"fmt"
)

type respState uint8

const (
	rStart respState = iota
	rGot1
	rSent2
	rGot3
	rDone
	rFailed
)

// Responder runs the Responder's side of one EDHOC handshake (the lock).
// Call, in order: ProcessMessage1, Message2, ProcessMessage3, Message4;
// then Exporter. Any error ends the handshake; its ProtocolError's Message
// is the EDHOC error message to send the peer. A Responder is not safe for
// concurrent use.
type Responder struct {
	opts  Options
	state respState
	gx    []byte
	hm1   []byte
	y     *ecdh.PrivateKey
	keys
}

// NewResponder prepares a handshake.
func NewResponder(opts Options) (*Responder, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	return &Responder{opts: opts}, nil
}

func (re *Responder) fail(err error) error {
	re.state = rFailed
	return fail(err)
}

// ProcessMessage1 parses and checks message_1 (RFC 9528 §5.2.3). Checks
// run in this order: strict CBOR structure, the ephemeral key against the
// suite it claims, the method, then suite support. An unsupported suite
// gives a ProtocolError with ERR_CODE 2 listing SUITES_R.
func (re *Responder) ProcessMessage1(m1 []byte) error {
	if re.state != rStart {
		return re.fail(fmt.Errorf("%w: ProcessMessage1 called twice", ErrState))
	}
	if err := re.processMessage1(m1); err != nil {
		return re.fail(err)
	}
	re.state = rGot1
	return nil
}

func (re *Responder) processMessage1(m1 []byte) error {
	if len(m1) > MaxMessageLen {
		return fmt.Errorf("%w: message_1 is %d bytes, over %d", ErrMalformed, len(m1), MaxMessageLen)
	}
	r := &reader{b: m1, what: "message_1"}
	method, err := r.int("METHOD")
	if err != nil {
		return err
	}
	suites, err := readSuites(r)
	if err != nil {
		return err
	}
	gx, err := r.bstr("G_X")
	if err != nil {
		return err
	}
	cI, err := r.connID("C_I")
	if err != nil {
		return err
	}
	items, _, err := readEAD(r)
	if err != nil {
		return err
	}
	selected := suites[len(suites)-1]
	if err := checkEphemeral(selected, gx); err != nil {
		return err
	}
	if Method(method) != MethodSigSig {
		return fmt.Errorf("%w: method %d", ErrUnsupportedMethod, method)
	}
	if !supportedSuite(selected) {
		return &ProtocolError{
			Code:   ErrCodeWrongSuite,
			Suites: SupportedSuites,
			Err:    fmt.Errorf("%w: selected suite %d", ErrUnsupportedSuite, selected),
		}
	}
	if err := checkEAD(items, re.opts.accept(1)); err != nil {
		return err
	}
	re.eadIn[1] = items
	re.gx, re.cI = gx, cI
	re.hm1 = hashMessage1(m1)
	return nil
}

// Message2 returns message_2 (RFC 9528 §5.3.2).
func (re *Responder) Message2() ([]byte, error) {
	if re.state != rGot1 {
		return nil, re.fail(fmt.Errorf("%w: Message2 before ProcessMessage1", ErrState))
	}
	m2, err := re.message2()
	if err != nil {
		return nil, re.fail(err)
	}
	re.state = rSent2
	return m2, nil
}

func (re *Responder) message2() ([]byte, error) {
	var err error
	re.cR = re.opts.ConnID
	if re.cR == nil {
		if re.cR, err = randomConnID(re.opts.rand(), re.cI); err != nil {
			return nil, err
		}
	}
	if bytes.Equal(re.cR, re.cI) {
		return nil, fmt.Errorf("%w: C_R must differ from C_I", ErrMalformed)
	}
	if re.y, err = newEphemeral(re.opts.rand()); err != nil {
		return nil, err
	}
	gy := re.y.PublicKey().Bytes()
	if bytes.Equal(gy, re.gx) {
		return nil, fmt.Errorf("%w: G_X equals our own G_Y (reflection)", ErrInvalidKey)
	}
	gxy, err := dh(re.y, re.gx)
	if err != nil {
		return nil, err
	}
	var hd [40]byte
	re.th2 = transcript(gy, appendBstr(hd[:0], re.hm1))
	prk2e := extract(re.th2, gxy)
	re.prk3e2m = prk2e

	cred := re.opts.Cred
	ead2 := appendEAD(nil, re.opts.EAD[2])
	mac2 := kdf(re.prk3e2m, 2, macContext(re.cR, cred.IDCred, re.th2, cred.Cred, ead2), macLenMethod)
	sig := ed25519.Sign(re.opts.AuthKey, sigStructure(cred.IDCred, re.th2, cred.Cred, ead2, mac2))

	pt2 := appendConnID(make([]byte, 0, 96+len(ead2)), re.cR)
	pt2 = compactIDCred(pt2, cred.IDCred)
	pt2 = appendBstr(pt2, sig)
	pt2 = append(pt2, ead2...)

	gyct := make([]byte, ecdhLen+len(pt2))
	copy(gyct, gy)
	xorInto(gyct[ecdhLen:], pt2, kdf(prk2e, 0, re.th2, len(pt2)))
	re.th3 = transcript(re.th2, pt2, cred.Cred)
	m2 := appendBstr(make([]byte, 0, len(gyct)+3), gyct)
	for _, kv := range []struct {
		n string
		v []byte
	}{{"G_Y", gy}, {"TH_2", re.th2}, {"PRK_2e", prk2e}, {"MAC_2", mac2}, {"Signature_or_MAC_2", sig},
		{"PLAINTEXT_2", pt2}, {"CIPHERTEXT_2", gyct[ecdhLen:]}, {"message_2", m2}, {"TH_3", re.th3}} {
		re.opts.trace(kv.n, kv.v)
	}
	return m2, nil
}

// ProcessMessage3 decrypts and verifies message_3 (RFC 9528 §5.4.3) and
// returns the Initiator's verified credential. An EDHOC error message from
// the Initiator is returned as a *PeerError.
func (re *Responder) ProcessMessage3(m3 []byte) (Credential, error) {
	if re.state != rSent2 {
		return Credential{}, re.fail(fmt.Errorf("%w: ProcessMessage3 before Message2", ErrState))
	}
	if firstIsInt(m3) {
		re.state = rFailed
		return Credential{}, peerError(m3)
	}
	c, err := re.processMessage3(m3)
	if err != nil {
		return Credential{}, re.fail(err)
	}
	re.state = rGot3
	return c, nil
}

func (re *Responder) processMessage3(m3 []byte) (Credential, error) {
	ct3, err := onlyBstr(m3, "message_3")
	if err != nil {
		return Credential{}, err
	}
	k3, iv3 := re.k3()
	pt3, err := open(k3, iv3, ct3, re.th3, "message_3")
	if err != nil {
		return Credential{}, err
	}
	r := &reader{b: pt3, what: "PLAINTEXT_3"}
	idCredI, err := readIDCred(r, "ID_CRED_I")
	if err != nil {
		return Credential{}, err
	}
	sig, err := r.bstr("Signature_or_MAC_3")
	if err != nil {
		return Credential{}, err
	}
	if len(sig) != sigLen {
		return Credential{}, fmt.Errorf("%w: PLAINTEXT_3: Signature_or_MAC_3 is %d bytes, want %d", ErrMalformed, len(sig), sigLen)
	}
	items, ead3, err := readEAD(r)
	if err != nil {
		return Credential{}, err
	}
	peer, err := resolve(re.opts.Peer, idCredI)
	if err != nil {
		return Credential{}, err
	}
	mac3 := kdf(re.prk3e2m, 6, macContext(nil, idCredI, re.th3, peer.Cred, ead3), macLenMethod)
	if err := verifySig(peer.PublicKey, idCredI, re.th3, peer.Cred, ead3, mac3, sig); err != nil {
		return Credential{}, err
	}
	if err := checkEAD(items, re.opts.accept(3)); err != nil {
		return Credential{}, err
	}
	re.eadIn[3] = items
	re.peer = peer
	re.th4 = transcript(re.th3, pt3, peer.Cred)
	re.finish()
	return peer, nil
}

// Message4 returns message_4 (RFC 9528 §5.5.2), which completes the
// handshake on this side.
func (re *Responder) Message4() ([]byte, error) {
	if re.state != rGot3 {
		return nil, re.fail(fmt.Errorf("%w: Message4 before ProcessMessage3", ErrState))
	}
	k4, iv4 := re.k4()
	ct4, err := seal(k4, iv4, appendEAD(nil, re.opts.EAD[4]), re.th4)
	if err != nil {
		return nil, re.fail(err)
	}
	re.state = rDone
	m4 := appendBstr(make([]byte, 0, len(ct4)+2), ct4)
	re.opts.trace("K_4", k4)
	re.opts.trace("IV_4", iv4)
	re.opts.trace("message_4", m4)
	return m4, nil
}

// Done reports whether the handshake completed.
func (re *Responder) Done() bool { return re.state == rDone }

// Exporter is EDHOC_Exporter(label, context, length) (RFC 9528 §4.2.1),
// available once the handshake is done.
func (re *Responder) Exporter(label uint64, context []byte, length int) ([]byte, error) {
	return re.exporter(re.state == rDone, label, context, length)
}

// Peer returns the Initiator's verified credential.
func (re *Responder) Peer() Credential { return re.peer }

// ConnIDs returns C_I and C_R.
func (re *Responder) ConnIDs() (cI, cR []byte) { return re.cI, re.cR }

// EAD returns the EAD items received in message n (1 or 3).
func (re *Responder) EAD(n int) []EADItem { return re.eadIn[n] }
