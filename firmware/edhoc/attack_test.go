package edhoc

import (
	"bytes"
	"errors"
	"testing"
)

// Attack and bad-input tests at the handshake level. Tests with real fleet
// credentials (not signed by the root, expired, wrong kind) live in
// firmware/channel, which joins EDHOC to firmware/cred.

func TestRoundTripBothSidesAgree(t *testing.T) {
	in, re := newPair(t)
	run(t, in, re)
	if !in.Done() || !re.Done() {
		t.Fatal("handshake not done")
	}
	a, _ := in.Exporter(32768, nil, 16)
	b, _ := re.Exporter(32768, nil, 16)
	if !bytes.Equal(a, b) {
		t.Fatal("exporters differ")
	}
	ci, cr := in.ConnIDs()
	ci2, cr2 := re.ConnIDs()
	if !bytes.Equal(ci, ci2) || !bytes.Equal(cr, cr2) || bytes.Equal(ci, cr) {
		t.Fatalf("connection identifiers: I %x/%x R %x/%x", ci, cr, ci2, cr2)
	}
}

func TestFreshSessionKeysEverySession(t *testing.T) {
	i, r := newParty(t), newParty(t)
	seen := map[string]bool{}
	for n := 0; n < 20; n++ {
		in, re := newPairOf(t, i, r, Options{}, Options{})
		run(t, in, re)
		k, err := in.Exporter(32768, nil, 16)
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(k)] {
			t.Fatalf("session %d repeated a session key", n)
		}
		seen[string(k)] = true
	}
}

func TestExporterBeforeDone(t *testing.T) {
	in, re := newPair(t)
	if _, err := in.Exporter(0, nil, 16); !errors.Is(err, ErrState) {
		t.Fatalf("got %v", err)
	}
	m1, _ := in.Message1()
	_ = re.ProcessMessage1(m1)
	m2, _ := re.Message2()
	_, _ = in.ProcessMessage2(m2)
	_, _ = in.Message3()
	// message_4 is mandatory in this profile: keys are not released
	// before the Responder has confirmed them.
	if _, err := in.Exporter(0, nil, 16); !errors.Is(err, ErrState) {
		t.Fatalf("exporter before message_4: %v", err)
	}
}

func TestOutOfOrderCalls(t *testing.T) {
	in, re := newPair(t)
	if _, err := in.ProcessMessage2([]byte{0x40}); !errors.Is(err, ErrState) {
		t.Fatalf("ProcessMessage2 first: %v", err)
	}
	if _, err := re.Message2(); !errors.Is(err, ErrState) {
		t.Fatalf("Message2 first: %v", err)
	}
	if _, err := re.Message4(); !errors.Is(err, ErrState) {
		t.Fatalf("Message4 after failure: %v", err)
	}
}

func TestUnsupportedSuiteNegotiation(t *testing.T) {
	in, re := newPair(t)
	m1, err := in.Message1()
	if err != nil {
		t.Fatal(err)
	}
	// The same message_1, selecting suite 6 (X25519, A128GCM) after 0:
	// SUITES_I = [0, 6].
	bad := append([]byte{0x00, 0x82, 0x00, 0x06}, m1[2:]...)
	err = re.ProcessMessage1(bad)
	if !errors.Is(err, ErrUnsupportedSuite) {
		t.Fatalf("Responder: %v", err)
	}
	msg := ErrorMessage(err)
	if !bytes.Equal(msg, []byte{0x02, 0x00}) { // (2, SUITES_R = 0)
		t.Fatalf("error message %x, want 0200", msg)
	}
	// The Initiator learns which suites the Responder supports.
	_, err = in.ProcessMessage2(msg)
	var pe *PeerError
	if !errors.As(err, &pe) || !errors.Is(err, ErrUnsupportedSuite) || len(pe.Suites) != 1 || pe.Suites[0] != 0 {
		t.Fatalf("Initiator: %v", err)
	}
}

func TestUnsupportedMethod(t *testing.T) {
	in, re := newPair(t)
	m1, _ := in.Message1()
	m1[0] = 0x03 // static DH both ways
	if err := re.ProcessMessage1(m1); !errors.Is(err, ErrUnsupportedMethod) {
		t.Fatalf("got %v", err)
	}
}

func TestPeerEphemeralEqualsOurs(t *testing.T) {
	in, re := newPair(t)
	m1, _ := in.Message1()
	if err := re.ProcessMessage1(m1); err != nil {
		t.Fatal(err)
	}
	m2, _ := re.Message2()
	// Reflect our own G_X back as G_Y (message_2 is 58 LL G_Y ...).
	copy(m2[2:34], in.gx)
	if _, err := in.ProcessMessage2(m2); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("got %v, want ErrInvalidKey", err)
	}
}

func TestLowOrderPoints(t *testing.T) {
	for i, p := range lowOrderX25519 {
		// As G_X in message_1 (method 0, suite 0).
		in, re := newPair(t)
		m1, _ := in.Message1()
		copy(m1[4:36], p)
		if err := re.ProcessMessage1(m1); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("point %d as G_X: %v", i, err)
		}
		// As G_Y in message_2.
		in, re = newPair(t)
		m1, _ = in.Message1()
		_ = re.ProcessMessage1(m1)
		m2, _ := re.Message2()
		copy(m2[2:34], p)
		if _, err := in.ProcessMessage2(m2); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("point %d as G_Y: %v", i, err)
		}
	}
	// With the top bit set (ignored by X25519, RFC 7748 §5).
	in, re := newPair(t)
	m1, _ := in.Message1()
	copy(m1[4:36], make([]byte, 32))
	m1[35] = 0x80
	if err := re.ProcessMessage1(m1); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("zero point with top bit: %v", err)
	}
}

func TestBadSignatureInMessage2(t *testing.T) {
	in, re := newPair(t)
	m1, _ := in.Message1()
	_ = re.ProcessMessage1(m1)
	m2, _ := re.Message2()
	// CIPHERTEXT_2 is PLAINTEXT_2 XOR KEYSTREAM_2, so flipping the last
	// ciphertext bit flips the last bit of Signature_or_MAC_2.
	m2[len(m2)-1] ^= 0x01
	if _, err := in.ProcessMessage2(m2); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("got %v, want ErrAuthentication", err)
	}
}

func TestBadSignatureInMessage3(t *testing.T) {
	i, r := newParty(t), newParty(t)
	impostor := newParty(t)
	// The Initiator presents i's credential but signs with another key.
	in, re := newPairOf(t, i, r, Options{}, Options{})
	in.opts.AuthKey = impostor.sk
	m1, _ := in.Message1()
	_ = re.ProcessMessage1(m1)
	m2, _ := re.Message2()
	if _, err := in.ProcessMessage2(m2); err != nil {
		t.Fatal(err)
	}
	m3, _ := in.Message3()
	if _, err := re.ProcessMessage3(m3); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("got %v, want ErrAuthentication", err)
	}
	if re.Done() {
		t.Fatal("Responder completed with a bad signature")
	}
}

func TestSpoofedResponderKey(t *testing.T) {
	// A Responder presenting a known credential without its private key.
	i, r, spoof := newParty(t), newParty(t), newParty(t)
	in, re := newPairOf(t, i, r, Options{}, Options{})
	re.opts.AuthKey = spoof.sk
	m1, _ := in.Message1()
	_ = re.ProcessMessage1(m1)
	m2, _ := re.Message2()
	if _, err := in.ProcessMessage2(m2); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("got %v, want ErrAuthentication", err)
	}
}

func TestTamperedMessage3And4(t *testing.T) {
	for _, target := range []string{"message_3", "message_4"} {
		t.Run(target, func(t *testing.T) {
			in, re := newPair(t)
			m1, _ := in.Message1()
			_ = re.ProcessMessage1(m1)
			m2, _ := re.Message2()
			_, _ = in.ProcessMessage2(m2)
			m3, _ := in.Message3()
			if target == "message_3" {
				m3[len(m3)-3] ^= 0x40
				if _, err := re.ProcessMessage3(m3); !errors.Is(err, ErrAuthentication) {
					t.Fatalf("got %v", err)
				}
				return
			}
			if _, err := re.ProcessMessage3(m3); err != nil {
				t.Fatal(err)
			}
			m4, _ := re.Message4()
			m4[1] ^= 0x01
			if err := in.ProcessMessage4(m4); !errors.Is(err, ErrAuthentication) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestMessage3ReplayedIntoNewSession(t *testing.T) {
	i, r := newParty(t), newParty(t)
	in, re := newPairOf(t, i, r, Options{}, Options{})
	m1, _ := in.Message1()
	_ = re.ProcessMessage1(m1)
	m2, _ := re.Message2()
	_, _ = in.ProcessMessage2(m2)
	oldM3, _ := in.Message3()
	if _, err := re.ProcessMessage3(oldM3); err != nil {
		t.Fatal(err)
	}

	// An attacker replays message_1 and, later, the old message_3 to a
	// new Responder session. The Responder's fresh ephemeral key changes
	// TH_3 and K_3, so message_3 no longer decrypts.
	_, re2 := newPairOf(t, i, r, Options{}, Options{})
	if err := re2.ProcessMessage1(m1); err != nil {
		t.Fatal(err)
	}
	if _, err := re2.Message2(); err != nil {
		t.Fatal(err)
	}
	if _, err := re2.ProcessMessage3(oldM3); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("got %v, want ErrAuthentication", err)
	}
}

func TestUnknownCredentialGivesErrCode3(t *testing.T) {
	i, r := newParty(t), newParty(t)
	// The Responder does not know the Initiator.
	in, re := newPairOf(t, i, r, Options{}, Options{Peer: resolverOf()})
	m1, _ := in.Message1()
	_ = re.ProcessMessage1(m1)
	m2, _ := re.Message2()
	_, _ = in.ProcessMessage2(m2)
	m3, _ := in.Message3()
	_, err := re.ProcessMessage3(m3)
	if !errors.Is(err, ErrUnknownCredential) {
		t.Fatalf("got %v", err)
	}
	pe, perr := ParseError(ErrorMessage(err))
	if perr != nil || pe.Code != ErrCodeUnknownCredID {
		t.Fatalf("error message: %+v %v", pe, perr)
	}
	if !errors.Is(pe, ErrUnknownCredential) {
		t.Fatal("PeerError code 3 does not match ErrUnknownCredential")
	}
}

func TestResolverRefusalIsCredentialRejected(t *testing.T) {
	i, r := newParty(t), newParty(t)
	refuse := ResolverFunc(func([]byte) (Credential, error) {
		return Credential{}, errors.New("expired")
	})
	in, re := newPairOf(t, i, r, Options{Peer: refuse}, Options{})
	m1, _ := in.Message1()
	_ = re.ProcessMessage1(m1)
	m2, _ := re.Message2()
	_, err := in.ProcessMessage2(m2)
	if !errors.Is(err, ErrCredentialRejected) {
		t.Fatalf("got %v", err)
	}
}

func TestCriticalEADRefused(t *testing.T) {
	i, r := newParty(t), newParty(t)
	in, re := newPairOf(t, i, r, Options{EAD: [5][]EADItem{1: {{Label: -42}}}}, Options{})
	m1, _ := in.Message1()
	if err := re.ProcessMessage1(m1); !errors.Is(err, ErrCriticalEAD) {
		t.Fatalf("got %v", err)
	}
	// Non-critical items are passed up.
	in, re = newPairOf(t, i, r, Options{EAD: [5][]EADItem{3: {{Label: 7, Value: []byte("x"), HasValue: true}}}}, Options{})
	run(t, in, re)
	if got := re.EAD(3); len(got) != 1 || got[0].Label != 7 || string(got[0].Value) != "x" {
		t.Fatalf("EAD_3 = %+v", got)
	}
}

func TestTruncatedAndOversizedMessages(t *testing.T) {
	in, re := newPair(t)
	m1, _ := in.Message1()
	for n := 0; n < len(m1); n++ {
		_, re := newPair(t)
		if err := re.ProcessMessage1(m1[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("message_1[:%d]: %v", n, err)
		}
	}
	if err := re.ProcessMessage1(append(m1, make([]byte, MaxMessageLen)...)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized: %v", err)
	}
	_, re = newPair(t)
	_ = re.ProcessMessage1(m1)
	m2, _ := re.Message2()
	for n := 0; n < len(m2); n++ {
		in2, re2 := newPair(t)
		m1b, _ := in2.Message1()
		_ = re2.ProcessMessage1(m1b)
		full, _ := re2.Message2()
		if _, err := in2.ProcessMessage2(full[:n]); err == nil {
			t.Fatalf("message_2[:%d] accepted", n)
		}
	}
}

func TestErrorMessageRoundTrip(t *testing.T) {
	cases := []*ProtocolError{
		{Code: ErrCodeUnspecified, Info: "malformed message"},
		{Code: ErrCodeWrongSuite, Suites: []Suite{0}},
		{Code: ErrCodeWrongSuite, Suites: []Suite{0, 2}},
		{Code: ErrCodeUnknownCredID},
	}
	for _, c := range cases {
		pe, err := ParseError(c.Message())
		if err != nil {
			t.Fatalf("%x: %v", c.Message(), err)
		}
		if pe.Code != int64(c.Code) || pe.Info != c.Info || len(pe.Suites) != len(c.Suites) {
			t.Fatalf("round trip %+v -> %+v", c, pe)
		}
	}
	for _, bad := range [][]byte{{}, {0x01}, {0x01, 0x01}, {0x02, 0x81, 0x00}, {0x03, 0xf4}, {0x01, 0x60, 0x00}} {
		if _, err := ParseError(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseError(%x) = %v", bad, err)
		}
	}
}
