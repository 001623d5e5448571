// Package vectors generates the protocol test vectors in firmware/testdata
// for the lock's firmware team: a whole handshake between a gateway and a
// lock credential (first contact by value, then cached by 'kid'), protected
// frames in both directions, fragmentation examples, and signed commands
// with the reference lock's results. Everything is
// derived from fixed seeds, so the output is byte-for-byte reproducible; a
// test fails when the committed files drift from it.
//
// It may import the standard library and firmware/ packages only.
package vectors

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/edhoc"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/frame"
)

// Hex is a byte string written as lowercase hex in JSON.
type Hex []byte

// MarshalJSON implements json.Marshaler.
func (h Hex) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

// UnmarshalJSON implements json.Unmarshaler.
func (h *Hex) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	*h = v
	return err
}

// Now is the time at which every vector is valid.
var Now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Seed returns a 32-byte seed for a label: SHA-256("gatewayd vectors: " ||
// label). The seeds are published in the files, so nobody needs this.
func Seed(label string) []byte {
	h := sha256.Sum256([]byte("gatewayd vectors: " + label))
	return h[:]
}

// Identity is a key pair and the credential the fleet root issued for it.
type Identity struct {
	Seed       Hex    `json:"ed25519_seed"`
	PublicKey  Hex    `json:"public_key"`
	Subject    string `json:"subject"`
	Credential Hex    `json:"credential_cwt"`
	KID        Hex    `json:"kid"`
	IDCredVal  Hex    `json:"id_cred_by_value"`
	IDCredKID  Hex    `json:"id_cred_by_kid"`
	cert       *cred.Cert
	key        ed25519.PrivateKey
}

// Root is the fleet root.
type Root struct {
	Seed      Hex `json:"ed25519_seed"`
	PublicKey Hex `json:"public_key"`
	KID       Hex `json:"kid"`
}

// Fleet holds the fixed identities of the vectors.
type Fleet struct {
	Root    Root     `json:"fleet_root"`
	Gateway Identity `json:"gateway"`
	Lock    Identity `json:"lock"`
	roots   cred.Roots
	rootKey ed25519.PrivateKey
}

// NewFleet builds the fixed fleet: root, one gateway, one lock.
func NewFleet() (*Fleet, error) {
	f := &Fleet{roots: cred.Roots{}}
	f.rootKey = ed25519.NewKeyFromSeed(Seed("fleet root"))
	pub := f.rootKey.Public().(ed25519.PublicKey)
	f.Root = Root{Seed: Seed("fleet root"), PublicKey: Hex(pub), KID: cred.RootKID(pub)}
	f.roots.Add(f.Root.KID, pub)
	var err error
	if f.Gateway, err = f.issue("gateway", cred.Claims{Subject: "gw-dock-0001", Kind: cred.KindGateway, Perms: cred.GatewayPerms}); err != nil {
		return nil, err
	}
	lockID := [8]byte{0x4c, 0x4b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a}
	if f.Lock, err = f.issue("lock", cred.Claims{Subject: cred.LockSubject(lockID), Kind: cred.KindLock}); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Fleet) issue(label string, c cred.Claims) (Identity, error) {
	key := ed25519.NewKeyFromSeed(Seed(label))
	c.Issuer = "fleet-root"
	c.PublicKey = key.Public().(ed25519.PublicKey)
	c.NotBefore, c.Expiry, c.IssuedAt = Now, Now.AddDate(5, 0, 0), Now
	raw, err := cred.Issue(f.rootKey, f.Root.KID, c)
	if err != nil {
		return Identity{}, fmt.Errorf("issue %s: %w", label, err)
	}
	cert, err := cred.Parse(raw, f.roots)
	if err != nil {
		return Identity{}, fmt.Errorf("parse %s: %w", label, err)
	}
	return Identity{
		Seed: Seed(label), PublicKey: Hex(c.PublicKey), Subject: c.Subject, Credential: raw, KID: cert.KID,
		IDCredVal: cert.EDHOC(true).IDCred, IDCredKID: cert.EDHOC(false).IDCred, cert: cert, key: key,
	}, nil
}

// Verifier returns the fleet's verifier at Now for the given peer kinds,
// with a cache preloaded with the given certificates.
func (f *Fleet) Verifier(kinds []cred.Kind, cached ...*cred.Cert) *cred.Verifier {
	c := cred.NewCache(8)
	for _, cert := range cached {
		c.Put(cert)
	}
	return &cred.Verifier{Roots: f.roots, Now: func() time.Time { return Now }, Kinds: kinds, Cache: c}
}

// TraceValue is one named intermediate value, in computation order.
type TraceValue struct {
	Name  string `json:"name"`
	Value Hex    `json:"value"`
}

// Scenario is one handshake.
type Scenario struct {
	Name           string       `json:"name"`
	Description    string       `json:"description"`
	ByValue        bool         `json:"credentials_by_value"`
	InitiatorSeedX Hex          `json:"initiator_ephemeral_x"`
	ResponderSeedY Hex          `json:"responder_ephemeral_y"`
	CI             Hex          `json:"c_i"`
	CR             Hex          `json:"c_r"`
	Message1       Hex          `json:"message_1"`
	Message2       Hex          `json:"message_2"`
	Message3       Hex          `json:"message_3"`
	Message4       Hex          `json:"message_4"`
	Trace          []TraceValue `json:"trace"`
	KeyI2R         Hex          `json:"k_i2r"`
	KeyR2I         Hex          `json:"k_r2i"`
	CommonIV       Hex          `json:"common_iv"`
}

// Handshakes is firmware/testdata/handshake.json.
type Handshakes struct {
	Description string `json:"description"`
	Spec        string `json:"spec"`
	Now         string `json:"now"`
	NowUnix     int64  `json:"now_unix"`
	Fleet
	Scenarios []Scenario `json:"scenarios"`
}

// Frame is one protected frame example.
type Frame struct {
	Direction string `json:"direction"`
	Type      string `json:"type"`
	TypeByte  uint8  `json:"type_byte"`
	Seq       uint32 `json:"seq"`
	SenderID  Hex    `json:"sender_id"`
	Key       Hex    `json:"key"`
	Nonce     Hex    `json:"nonce"`
	AAD       Hex    `json:"aad"`
	Plaintext Hex    `json:"plaintext"`
	Frame     Hex    `json:"frame"`
}

// Frames is firmware/testdata/frames.json.
type Frames struct {
	Description string  `json:"description"`
	Spec        string  `json:"spec"`
	Scenario    string  `json:"session_of_scenario"`
	CI          Hex     `json:"c_i"`
	CR          Hex     `json:"c_r"`
	KeyI2R      Hex     `json:"k_i2r"`
	KeyR2I      Hex     `json:"k_r2i"`
	CommonIV    Hex     `json:"common_iv"`
	Frames      []Frame `json:"frames"`
}

// FragmentExample is one message split for one ATT MTU.
type FragmentExample struct {
	Name      string `json:"name"`
	ATTMTU    int    `json:"att_mtu"`
	MsgID     uint8  `json:"msg_id"`
	Message   Hex    `json:"message"`
	Fragments []Hex  `json:"fragments"`
}

// Fragments is firmware/testdata/fragments.json.
type Fragments struct {
	Description string            `json:"description"`
	Spec        string            `json:"spec"`
	Examples    []FragmentExample `json:"examples"`
}

// Files returns every vector file: name → content.
func Files() (map[string][]byte, error) {
	hs, fr, fg, err := Build()
	if err != nil {
		return nil, err
	}
	f, err := NewFleet()
	if err != nil {
		return nil, err
	}
	cmds, err := buildCommands(f)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for name, v := range map[string]any{"handshake.json": hs, "frames.json": fr, "fragments.json": fg, "commands.json": cmds} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return nil, err
		}
		out[name] = append(b, '\n')
	}
	return out, nil
}

// Build computes the three vector sets.
func Build() (*Handshakes, *Frames, *Fragments, error) {
	f, err := NewFleet()
	if err != nil {
		return nil, nil, nil, err
	}
	hs := &Handshakes{
		Description: "EDHOC (RFC 9528) method 0, cipher suite 0, between a gateway (Initiator) and a lock (Responder) of one fleet. " +
			"Each side's ephemeral private key is the 32-byte X or Y given (X25519 clamps it). Ed25519 signatures are deterministic, " +
			"so every byte is reproducible. Trace values use the names of RFC 9529 and are listed in computation order. " +
			"Values marked k_i2r/k_r2i/common_iv are EDHOC_Exporter(32768/32769/32770, h'', 16/16/13).",
		Spec:    "docs/protocol.md §4, §5, §6.1",
		Now:     Now.Format(time.RFC3339),
		NowUnix: Now.Unix(),
		Fleet:   *f,
	}
	var first *session
	for _, sc := range []struct {
		name, desc string
		byValue    bool
		cI, cR     []byte
	}{
		{"first-contact", "Neither side has the other's credential cached: both send it by value (ID_CRED_x = {13: CWT}).", true, []byte{0x0a}, []byte{0x27}},
		{"cached", "Both sides have the other's credential cached and send ID_CRED_x = {4: kid}, which PLAINTEXT_2/3 carry as the bare 8-byte kid.", false, []byte{0x0b}, []byte{0x4a, 0x01}},
	} {
		s, err := runHandshake(f, sc.name, sc.byValue, sc.cI, sc.cR)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("scenario %s: %w", sc.name, err)
		}
		s.sc.Description = sc.desc
		hs.Scenarios = append(hs.Scenarios, s.sc)
		if first == nil {
			first = s
		}
	}
	fr, err := buildFrames(first)
	if err != nil {
		return nil, nil, nil, err
	}
	fg, err := buildFragments(first, fr)
	if err != nil {
		return nil, nil, nil, err
	}
	return hs, fr, fg, nil
}

type session struct {
	sc     Scenario
	in, re *frame.Session
}

func runHandshake(f *Fleet, name string, byValue bool, cI, cR []byte) (*session, error) {
	x, y := Seed(name+" X"), Seed(name+" Y")
	var trace []TraceValue
	seen := map[string]bool{}
	rec := func(n string, v []byte) {
		if !seen[n] {
			seen[n] = true
			trace = append(trace, TraceValue{n, bytes.Clone(v)})
		}
	}
	var gwCache, lockCache []*cred.Cert
	if !byValue {
		gwCache, lockCache = []*cred.Cert{f.Lock.cert}, []*cred.Cert{f.Gateway.cert}
	}
	in, err := edhoc.NewInitiator(edhoc.Options{
		Cred: f.Gateway.cert.EDHOC(byValue), AuthKey: f.Gateway.key,
		Peer: f.Verifier([]cred.Kind{cred.KindLock}, gwCache...), ConnID: cI,
		Rand: bytes.NewReader(x), Trace: rec,
	})
	if err != nil {
		return nil, err
	}
	re, err := edhoc.NewResponder(edhoc.Options{
		Cred: f.Lock.cert.EDHOC(byValue), AuthKey: f.Lock.key,
		Peer: f.Verifier([]cred.Kind{cred.KindGateway, cred.KindOperator, cred.KindUser}, lockCache...), ConnID: cR,
		Rand: bytes.NewReader(y), Trace: rec,
	})
	if err != nil {
		return nil, err
	}
	sc := Scenario{Name: name, ByValue: byValue, InitiatorSeedX: x, ResponderSeedY: y, CI: cI, CR: cR}
	if sc.Message1, err = in.Message1(); err != nil {
		return nil, err
	}
	if err = re.ProcessMessage1(sc.Message1); err != nil {
		return nil, err
	}
	if sc.Message2, err = re.Message2(); err != nil {
		return nil, err
	}
	if _, err = in.ProcessMessage2(sc.Message2); err != nil {
		return nil, err
	}
	if sc.Message3, err = in.Message3(); err != nil {
		return nil, err
	}
	if _, err = re.ProcessMessage3(sc.Message3); err != nil {
		return nil, err
	}
	if sc.Message4, err = re.Message4(); err != nil {
		return nil, err
	}
	if err = in.ProcessMessage4(sc.Message4); err != nil {
		return nil, err
	}
	sc.Trace = trace
	for _, k := range []struct {
		label uint
		n     int
		dst   *Hex
	}{{frame.LabelKeyI2R, 16, &sc.KeyI2R}, {frame.LabelKeyR2I, 16, &sc.KeyR2I}, {frame.LabelCommonIV, 13, &sc.CommonIV}} {
		v, err := in.Exporter(uint64(k.label), nil, k.n)
		if err != nil {
			return nil, err
		}
		*k.dst = v
	}
	exp := func(e interface {
		Exporter(uint64, []byte, int) ([]byte, error)
	}) frame.Exporter {
		return func(l uint, c []byte, n int) ([]byte, error) { return e.Exporter(uint64(l), c, n) }
	}
	fi, err := frame.NewSession(frame.Initiator, exp(in), cI, cR, frame.Options{Now: func() time.Time { return Now }})
	if err != nil {
		return nil, err
	}
	fr, err := frame.NewSession(frame.Responder, exp(re), cI, cR, frame.Options{Now: func() time.Time { return Now }})
	if err != nil {
		return nil, err
	}
	return &session{sc: sc, in: fi, re: fr}, nil
}

// Nonce builds the AES-CCM nonce of RFC 8613 §5.2 from a sender ID, a
// sequence number and the common IV. It is written here from the spec, on
// its own, so that the vectors cross-check firmware/frame.
func Nonce(senderID []byte, seq uint32, commonIV []byte) []byte {
	n := make([]byte, 13)
	n[0] = byte(len(senderID))
	copy(n[1+7-len(senderID):8], senderID)
	var piv [8]byte
	binary.BigEndian.PutUint64(piv[:], uint64(seq))
	copy(n[8:], piv[3:])
	for i := range n {
		n[i] ^= commonIV[i]
	}
	return n
}

// AAD builds the 11-byte associated data of docs/protocol.md §6.
func AAD(dir byte, typ byte, seq uint32) []byte {
	a := []byte{'G', 'W', 'L', 'K', frame.Version, dir, typ}
	return binary.BigEndian.AppendUint32(a, seq)
}

func buildFrames(s *session) (*Frames, error) {
	sc := s.sc
	fr := &Frames{
		Description: "Protected frames of the first-contact session of handshake.json, in the order sent. " +
			"frame = type || seq (u32) || AES-CCM-16-64-128(key, nonce, aad, plaintext). " +
			"direction i2r uses k_i2r and sender ID c_r; r2i uses k_r2i and sender ID c_i.",
		Spec:     "docs/protocol.md §6",
		Scenario: sc.Name, CI: sc.CI, CR: sc.CR, KeyI2R: sc.KeyI2R, KeyR2I: sc.KeyR2I, CommonIV: sc.CommonIV,
	}
	counter := bytes.Repeat([]byte{0}, 64)
	for i := range counter {
		counter[i] = byte(i)
	}
	steps := []struct {
		i2r bool
		typ frame.Type
		pt  []byte
	}{
		{true, frame.TypeRequest, counter},
		{false, frame.TypeResponse, []byte("result: locked")},
		{true, frame.TypeRequest, nil},
		{false, frame.TypeEvent, []byte{0xa1, 0x01, 0x02}},
		{false, frame.TypeResponse, []byte("second result")},
		{true, frame.TypeClose, []byte{byte(frame.CloseNormal)}},
	}
	var seqI2R, seqR2I uint32
	for _, st := range steps {
		sender, receiver := s.in, s.re
		dir, name, key, sid, seq := byte(0), "i2r", sc.KeyI2R, sc.CR, &seqI2R
		if !st.i2r {
			sender, receiver = s.re, s.in
			dir, name, key, sid, seq = 1, "r2i", sc.KeyR2I, sc.CI, &seqR2I
		}
		f, err := sender.Seal(nil, st.typ, st.pt)
		if err != nil {
			return nil, err
		}
		if _, _, err := receiver.Open(nil, f); err != nil {
			return nil, err
		}
		fr.Frames = append(fr.Frames, Frame{
			Direction: name, Type: st.typ.String(), TypeByte: uint8(st.typ), Seq: *seq, SenderID: sid, Key: key,
			Nonce: Nonce(sid, *seq, sc.CommonIV), AAD: AAD(dir, byte(st.typ), *seq), Plaintext: Hex(st.pt), Frame: f,
		})
		*seq++
	}
	return fr, nil
}

func buildFragments(s *session, fr *Frames) (*Fragments, error) {
	sc := s.sc
	fg := &Fragments{
		Description: "Messages of the message layer (type byte || body) split into ATT values. " +
			"Fragment = msg_id (u8) || offset (u16) || total_len (u16) || payload, at most ATT_MTU-3 bytes.",
		Spec: "docs/protocol.md §2, §3",
	}
	for _, ex := range []struct {
		name string
		mtu  int
		id   uint8
		msg  []byte
	}{
		{"message_1 at the minimum MTU", 23, 0, append([]byte{channel.MsgEDHOC1}, sc.Message1...)},
		{"message_2 (credential by value) at the minimum MTU", 23, 0, append([]byte{channel.MsgEDHOC2}, sc.Message2...)},
		{"message_2 at MTU 247", 247, 0, append([]byte{channel.MsgEDHOC2}, sc.Message2...)},
		{"message_3 at MTU 185 (a common phone MTU)", 185, 1, append([]byte{channel.MsgEDHOC3}, sc.Message3...)},
		{"a 77-byte Request frame at MTU 23", 23, 2, fr.Frames[0].Frame},
		{"message_4 in one fragment", 23, 1, append([]byte{channel.MsgEDHOC4}, sc.Message4...)},
	} {
		frags, err := fragment.Split(ex.id, ex.msg, ex.mtu)
		if err != nil {
			return nil, err
		}
		e := FragmentExample{Name: ex.name, ATTMTU: ex.mtu, MsgID: ex.id, Message: ex.msg}
		for _, p := range frags {
			e.Fragments = append(e.Fragments, Hex(p))
		}
		fg.Examples = append(fg.Examples, e)
	}
	return fg, nil
}
