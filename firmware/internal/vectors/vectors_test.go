package vectors

import (
	"bytes"
	"crypto/aes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/edhoc"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/frame"
	"github.com/gatewayd/gatewayd/firmware/internal/ccm"
)

const testdata = "../../testdata"

// TestCommittedVectors fails when the committed vectors drift from what
// the code produces. After a deliberate protocol change, regenerate them
// with `go run ./firmware/cmd/genvectors` and say why in the commit.
func TestCommittedVectors(t *testing.T) {
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(testdata, name))
		if err != nil {
			t.Fatalf("%s: %v (run: go run ./firmware/cmd/genvectors)", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("firmware/testdata/%s drifted from the code; if the change is deliberate, run: go run ./firmware/cmd/genvectors", name)
		}
	}
}

func load(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdata, name))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// TestHandshakeVectorsDecode plays each committed handshake against our
// decoders: each side is rebuilt from the published seeds and fed the
// peer's messages from the file, not from a live peer.
func TestHandshakeVectorsDecode(t *testing.T) {
	var hs Handshakes
	load(t, "handshake.json", &hs)
	f, err := NewFleet()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hs.Gateway.Credential, f.Gateway.Credential) || !bytes.Equal(hs.Lock.Credential, f.Lock.Credential) {
		t.Fatal("credentials in the file differ from the fleet's")
	}
	// The published credentials verify under the published root.
	roots := cred.Roots{}
	roots.Add(hs.Root.KID, []byte(hs.Root.PublicKey))
	for _, id := range []Identity{hs.Gateway, hs.Lock} {
		c, err := cred.Parse(id.Credential, roots)
		if err != nil {
			t.Fatalf("%s: %v", id.Subject, err)
		}
		if err := c.CheckAt(time.Unix(hs.NowUnix, 0)); err != nil {
			t.Fatalf("%s: %v", id.Subject, err)
		}
	}
	if len(hs.Scenarios) != 2 {
		t.Fatalf("%d scenarios", len(hs.Scenarios))
	}
	for _, sc := range hs.Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			var gwCache, lockCache []*cred.Cert
			if !sc.ByValue {
				gwCache, lockCache = []*cred.Cert{f.Lock.cert}, []*cred.Cert{f.Gateway.cert}
			}
			in, err := edhoc.NewInitiator(edhoc.Options{Cred: f.Gateway.cert.EDHOC(sc.ByValue), AuthKey: f.Gateway.key,
				Peer: f.Verifier([]cred.Kind{cred.KindLock}, gwCache...), ConnID: sc.CI, Rand: bytes.NewReader(sc.InitiatorSeedX)})
			if err != nil {
				t.Fatal(err)
			}
			re, err := edhoc.NewResponder(edhoc.Options{Cred: f.Lock.cert.EDHOC(sc.ByValue), AuthKey: f.Lock.key,
				Peer: f.Verifier([]cred.Kind{cred.KindGateway}, lockCache...), ConnID: sc.CR, Rand: bytes.NewReader(sc.ResponderSeedY)})
			if err != nil {
				t.Fatal(err)
			}
			must := func(what string, err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
			}
			m1, err := in.Message1()
			must("Message1", err)
			if !bytes.Equal(m1, sc.Message1) {
				t.Fatal("message_1 differs")
			}
			must("lock decodes message_1", re.ProcessMessage1(sc.Message1))
			m2, err := re.Message2()
			must("Message2", err)
			if !bytes.Equal(m2, sc.Message2) {
				t.Fatal("message_2 differs")
			}
			peer, err := in.ProcessMessage2(sc.Message2)
			must("gateway decodes message_2", err)
			if c := peer.Info.(*cred.Cert); c.Subject != hs.Lock.Subject {
				t.Fatalf("gateway authenticated %q", c.Subject)
			}
			_, err = in.Message3()
			must("Message3", err)
			peer, err = re.ProcessMessage3(sc.Message3)
			must("lock decodes message_3", err)
			if c := peer.Info.(*cred.Cert); c.Subject != hs.Gateway.Subject {
				t.Fatalf("lock authenticated %q", c.Subject)
			}
			_, err = re.Message4()
			must("Message4", err)
			must("gateway decodes message_4", in.ProcessMessage4(sc.Message4))
			for _, k := range []struct {
				label uint
				want  []byte
			}{{frame.LabelKeyI2R, sc.KeyI2R}, {frame.LabelKeyR2I, sc.KeyR2I}, {frame.LabelCommonIV, sc.CommonIV}} {
				got, err := re.Exporter(uint64(k.label), nil, len(k.want))
				must("exporter", err)
				if !bytes.Equal(got, k.want) {
					t.Fatalf("exporter label %d differs", k.label)
				}
			}
			// A vector that is tampered with is refused.
			bad := bytes.Clone(sc.Message3)
			bad[len(bad)-1] ^= 1
			re2 := lockFor(t, f, sc)
			must("ProcessMessage1", re2.ProcessMessage1(sc.Message1))
			_, err = re2.Message2()
			must("Message2", err)
			if _, err := re2.ProcessMessage3(bad); err == nil {
				t.Fatal("tampered message_3 accepted")
			}
		})
	}
}

// lockFor rebuilds the lock side of scenario sc from the published seeds.
func lockFor(t *testing.T, f *Fleet, sc Scenario) *edhoc.Responder {
	t.Helper()
	var lockCache []*cred.Cert
	if !sc.ByValue {
		lockCache = []*cred.Cert{f.Gateway.cert}
	}
	re, err := edhoc.NewResponder(edhoc.Options{Cred: f.Lock.cert.EDHOC(sc.ByValue), AuthKey: f.Lock.key,
		Peer: f.Verifier([]cred.Kind{cred.KindGateway}, lockCache...), ConnID: sc.CR, Rand: bytes.NewReader(sc.ResponderSeedY)})
	if err != nil {
		t.Fatal(err)
	}
	return re
}

// TestFrameVectorsDecode opens every committed frame with a session built
// from the published keys, and checks each against AES-CCM computed
// directly from the published key, nonce and AAD.
func TestFrameVectorsDecode(t *testing.T) {
	var fr Frames
	load(t, "frames.json", &fr)
	keys := map[uint]Hex{frame.LabelKeyI2R: fr.KeyI2R, frame.LabelKeyR2I: fr.KeyR2I, frame.LabelCommonIV: fr.CommonIV}
	// The session wipes what the exporter returns, so hand out copies.
	exp := func(l uint, _ []byte, n int) ([]byte, error) { return bytes.Clone(keys[l][:n]), nil }
	opts := frame.Options{Now: func() time.Time { return Now }}
	in, err := frame.NewSession(frame.Initiator, exp, fr.CI, fr.CR, opts)
	if err != nil {
		t.Fatal(err)
	}
	re, err := frame.NewSession(frame.Responder, exp, fr.CI, fr.CR, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range fr.Frames {
		rx := re
		if v.Direction == "r2i" {
			rx = in
		}
		typ, pt, err := rx.Open(nil, v.Frame)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if uint8(typ) != v.TypeByte || !bytes.Equal(pt, v.Plaintext) {
			t.Fatalf("frame %d: got %v %x", i, typ, pt)
		}
		b, _ := aes.NewCipher(v.Key)
		aead, _ := ccm.New(b, 8, 13)
		want := aead.Seal(nil, v.Nonce, v.Plaintext, v.AAD)
		if !bytes.Equal(v.Frame[5:], want) || v.Frame[0] != v.TypeByte {
			t.Fatalf("frame %d: not AES-CCM(key, nonce, aad, plaintext) with the published values", i)
		}
		if !bytes.Equal(v.AAD[7:], v.Frame[1:5]) {
			t.Fatalf("frame %d: AAD does not carry the frame's seq", i)
		}
	}
	// Replaying the first frame is refused.
	if _, _, err := re.Open(nil, fr.Frames[0].Frame); err == nil {
		t.Fatal("replayed vector frame accepted")
	}
}

// TestFragmentVectorsDecode reassembles every committed example, in order
// and reversed, and splits each message again.
func TestFragmentVectorsDecode(t *testing.T) {
	var fg Fragments
	load(t, "fragments.json", &fg)
	if len(fg.Examples) == 0 {
		t.Fatal("no examples")
	}
	for _, ex := range fg.Examples {
		for _, reverse := range []bool{false, true} {
			r := fragment.NewReassembler(fragment.Options{})
			var got []byte
			n := len(ex.Fragments)
			for i := range n {
				p := ex.Fragments[i]
				if reverse {
					p = ex.Fragments[n-1-i]
				}
				if len(p) > ex.ATTMTU-3 {
					t.Fatalf("%s: fragment longer than ATT_MTU-3", ex.Name)
				}
				m, err := r.Add(p)
				if err != nil {
					t.Fatalf("%s: %v", ex.Name, err)
				}
				if m != nil {
					got = m
				}
			}
			if !bytes.Equal(got, ex.Message) {
				t.Fatalf("%s (reverse=%v): reassembled message differs", ex.Name, reverse)
			}
		}
		again, err := fragment.Split(ex.MsgID, ex.Message, ex.ATTMTU)
		if err != nil || len(again) != len(ex.Fragments) {
			t.Fatalf("%s: split %d fragments, %v", ex.Name, len(again), err)
		}
		for i := range again {
			if !bytes.Equal(again[i], ex.Fragments[i]) {
				t.Fatalf("%s: fragment %d differs", ex.Name, i)
			}
		}
	}
}

// TestCommandVectorsDecode parses every committed request and result, and
// re-verifies every signed command that the lock accepted, with the
// published root and lock ID.
func TestCommandVectorsDecode(t *testing.T) {
	var c Commands
	load(t, "commands.json", &c)
	if len(c.Examples) < 10 {
		t.Fatalf("%d examples", len(c.Examples))
	}
	roots := cred.Roots{}
	roots.Add(c.Root.KID, []byte(c.Root.PublicKey))
	var lockID [8]byte
	copy(lockID[:], c.Lock.KID)
	now, err := time.Parse(time.RFC3339, c.Now)
	if err != nil {
		t.Fatal(err)
	}
	v := command.Verifier{Roots: roots, LockID: lockID, Now: func() time.Time { return now }}
	var revoked *cred.Revocations
	lockCert, err := cred.Parse(c.Lock.Credential, roots)
	if err != nil {
		t.Fatalf("lock credential: %v", err)
	}
	signed := 0
	for _, ex := range c.Examples {
		if len(ex.ResultSignature) != 0 {
			signed++
		}
		req, err := command.ParseRequest(ex.Request)
		if err != nil {
			t.Fatalf("%s: request: %v", ex.Name, err)
		}
		res, err := command.ParseResult(req.Op, ex.Result)
		if err != nil {
			t.Fatalf("%s: result: %v", ex.Name, err)
		}
		if res.Status.String() != ex.Status || uint16(res.Status) != ex.StatusCode || res.RequestID != req.RequestID {
			t.Fatalf("%s: result status %v / request id %d", ex.Name, res.Status, res.RequestID)
		}
		if req.Op == command.OpSetRevocations && res.Status == command.StatusOK {
			if revoked, err = cred.ParseRevocations(req.Args.Revocations, roots); err != nil {
				t.Fatalf("%s: the lock accepted a list that does not verify: %v", ex.Name, err)
			}
		}
		if len(ex.Signed) == 0 {
			if res.Signature != nil || len(ex.ResultSignature) != 0 {
				t.Fatalf("%s: the result of an unsigned request is signed", ex.Name)
			}
			continue
		}
		checkResultSignature(t, &ex, res, req.Op, lockCert, ex.Body)
		ver, verr := v.Verify(ex.Signed, req.Op)
		switch {
		case verr == nil && res.Status == command.StatusSignerRejected && revoked.IsRevoked(ver.Signer.KID):
			// Refused by the lock's revocation list (§13.9), not by §12.6.
		case res.Status == command.StatusOK || res.Status == command.StatusDuplicateCommand || res.Status == command.StatusReplay,
			res.Status == command.StatusNotReady: // refused at step 6 (§13.10), after §12.6
			if verr != nil {
				t.Fatalf("%s: the lock accepted a signature that does not verify: %v", ex.Name, verr)
			}
		default:
			if command.StatusOf(verr) != res.Status {
				t.Fatalf("%s: verifying gives %v, the lock said %v", ex.Name, command.StatusOf(verr), res.Status)
			}
		}
	}
	if signed < 5 {
		t.Fatalf("%d signed results; the examples have at least 5", signed)
	}
}

// checkResultSignature checks an example's result signature (§12.7.5):
// present exactly when the result carries a command ID, equal to the one
// listed, over the listed statement, and verifying under the lock's
// credential for the example's command.
func checkResultSignature(t *testing.T, ex *CommandExample, res *command.Result, op command.Op, lockCert *cred.Cert, rawBody []byte) {
	t.Helper()
	if res.CommandID == nil {
		if res.Signature != nil || len(ex.ResultSignature) != 0 {
			t.Fatalf("%s: a result without a command ID is signed", ex.Name)
		}
		return
	}
	if !bytes.Equal(res.Signature, ex.ResultSignature) || len(ex.ResultStatement) == 0 || !bytes.Contains(res.Signature, ex.ResultStatement) {
		t.Fatalf("%s: result signature or statement not as listed", ex.Name)
	}
	var body struct {
		LockID    []byte `cbor:"1,keyasint"`
		CommandID []byte `cbor:"4,keyasint"`
		Counter   uint64 `cbor:"6,keyasint"`
	}
	if err := cbor.Unmarshal(rawBody, &body); err != nil {
		t.Fatalf("%s: body: %v", ex.Name, err)
	}
	x := command.ResultExpect{LockID: [8]byte(body.LockID), CommandID: [16]byte(body.CommandID), Op: op, Counter: body.Counter}
	s, err := command.VerifyResult(res, lockCert, x)
	if err != nil {
		t.Fatalf("%s: result signature: %v", ex.Name, err)
	}
	st, err := command.MarshalStatement(s)
	if err != nil || !bytes.Equal(st, ex.ResultStatement) {
		t.Fatalf("%s: statement %x, listed %x (%v)", ex.Name, st, []byte(ex.ResultStatement), err)
	}
}
