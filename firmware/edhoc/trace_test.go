package edhoc

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// traceValues parses the labelled hex dumps of one section of the RFC 9529
// traces file: a line "NAME (...) (N bytes)" followed by lines of hex bytes.
// Keys are the label text before " (N bytes)", and the same prefixed with
// the subsection number ("4.1.2 Invalid message_1"). Repeated labels get
// " #2", " #3"… appended.
func traceValues(t *testing.T, from, to string) map[string][]byte {
	t.Helper()
	f, err := os.Open("testdata/rfc9529-traces.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	labelRE := regexp.MustCompile(`^(.*) \((\d+) bytes?\)$`)
	hexRE := regexp.MustCompile(`^([0-9a-fA-F]{2})( [0-9a-fA-F]{2})*$`)
	out := map[string][]byte{}
	var label string
	var want int
	var buf []byte
	in := false
	section := ""
	sectionRE := regexp.MustCompile(`^(\d+(\.\d+)+)\.\s`)
	flush := func() {
		if label == "" {
			return
		}
		if len(buf) != want {
			t.Fatalf("trace %q: %d bytes, label says %d", label, len(buf), want)
		}
		key := label
		for i := 2; ; i++ {
			if _, dup := out[key]; !dup {
				break
			}
			key = fmt.Sprintf("%s #%d", label, i)
		}
		out[key] = buf
		if section != "" {
			out[section+" "+label] = buf
		}
		label, buf = "", nil
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		// Section headings start in column 0; the table of contents is
		// indented.
		if !in {
			in = strings.HasPrefix(raw, from)
			continue
		}
		if strings.HasPrefix(raw, to) {
			break
		}
		if m := sectionRE.FindStringSubmatch(raw); m != nil {
			flush()
			section = m[1]
			continue
		}
		if m := labelRE.FindStringSubmatch(line); m != nil {
			flush()
			label = m[1]
			want, _ = strconv.Atoi(m[2])
			if want == 0 {
				out[label] = []byte{}
				label = ""
			}
			continue
		}
		if label != "" && hexRE.MatchString(line) {
			b, err := hex.DecodeString(strings.ReplaceAll(line, " ", ""))
			if err != nil {
				t.Fatal(err)
			}
			buf = append(buf, b...)
			continue
		}
		flush()
	}
	flush()
	if len(out) == 0 {
		t.Fatalf("no values found between %q and %q", from, to)
	}
	return out
}

func tv(t *testing.T, m map[string][]byte, key string) []byte {
	t.Helper()
	v, ok := m[key]
	if !ok {
		t.Fatalf("trace has no %q", key)
	}
	return v
}

// mapResolver resolves ID_CRED_x by exact bytes, as a peer that already
// holds the other's X.509 certificate (identified by 'x5t') would. The
// trace's certificates are treated as opaque bytes.
type mapResolver map[string]Credential

func (m mapResolver) ResolveCredential(idCred []byte) (Credential, error) {
	c, ok := m[string(idCred)]
	if !ok {
		return Credential{}, fmt.Errorf("%w: %x", ErrUnknownCredential, idCred)
	}
	return c, nil
}

// TestRFC9529Trace2 reproduces RFC 9529 §2 (method 0, cipher suite 0,
// X.509 credentials by 'x5t') byte for byte: message_1 to message_4, the
// transcript hashes, PRK_2e, MAC_2/MAC_3 contexts, PRK_out, PRK_exporter
// and the OSCORE master secret and salt.
func TestRFC9529Trace2(t *testing.T) {
	v := traceValues(t, "2.  Authentication with Signatures", "3.  Authentication with Static DH")

	skI := ed25519.NewKeyFromSeed(tv(t, v, "SK_I (Raw Value)"))
	skR := ed25519.NewKeyFromSeed(tv(t, v, "SK_R (Raw Value)"))
	if !bytes.Equal(skI.Public().(ed25519.PublicKey), tv(t, v, "PK_I (Raw Value)")) ||
		!bytes.Equal(skR.Public().(ed25519.PublicKey), tv(t, v, "PK_R (Raw Value)")) {
		t.Fatal("trace key pairs do not match")
	}
	credI := Credential{IDCred: tv(t, v, "ID_CRED_I (CBOR Data Item)"), Cred: tv(t, v, "CRED_I (CBOR Data Item)"), PublicKey: skI.Public().(ed25519.PublicKey)}
	credR := Credential{IDCred: tv(t, v, "ID_CRED_R (CBOR Data Item)"), Cred: tv(t, v, "CRED_R (CBOR Data Item)"), PublicKey: skR.Public().(ed25519.PublicKey)}

	in, err := NewInitiator(Options{
		Cred: credI, AuthKey: skI,
		Peer:   mapResolver{string(credR.IDCred): credR},
		ConnID: tv(t, v, "C_I (Raw Value)"),
		Rand:   bytes.NewReader(tv(t, v, "X (Raw Value)")),
	})
	if err != nil {
		t.Fatal(err)
	}
	re, err := NewResponder(Options{
		Cred: credR, AuthKey: skR,
		Peer:   mapResolver{string(credI.IDCred): credI},
		ConnID: tv(t, v, "C_R (Raw Value)"),
		Rand:   bytes.NewReader(tv(t, v, "Y (Raw Value)")),
	})
	if err != nil {
		t.Fatal(err)
	}

	eq := func(name string, got []byte, key string) {
		t.Helper()
		if want := tv(t, v, key); !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %x\nwant %x", name, got, want)
		}
	}

	m1, err := in.Message1()
	if err != nil {
		t.Fatal(err)
	}
	eq("G_X", in.gx, "G_X (Raw Value)")
	eq("message_1", m1, "message_1 (CBOR Sequence)")
	eq("H(message_1)", in.hm1, "H(message_1) (Raw Value)")
	if err := re.ProcessMessage1(m1); err != nil {
		t.Fatal(err)
	}
	m2, err := re.Message2()
	if err != nil {
		t.Fatal(err)
	}
	eq("TH_2 (Responder)", re.th2, "TH_2 (Raw Value)")
	eq("PRK_2e", re.prk3e2m, "PRK_2e (Raw Value)")
	eq("PRK_3e2m", re.prk3e2m, "PRK_3e2m (Raw Value)")
	ctx2 := macContext(re.cR, credR.IDCred, re.th2, credR.Cred, nil)
	eq("context_2", ctx2, "context_2 (CBOR Sequence)")
	eq("MAC_2", kdf(re.prk3e2m, 2, ctx2, 32), "MAC_2 (Raw Value)")
	eq("message_2", m2, "message_2 (CBOR Sequence)")

	peerR, err := in.ProcessMessage2(m2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(peerR.Cred, credR.Cred) {
		t.Error("Initiator resolved the wrong Responder credential")
	}
	eq("TH_2 (Initiator)", in.th2, "TH_2 (Raw Value)")
	eq("TH_3 (Initiator)", in.th3, "TH_3 (Raw Value)")
	eq("TH_3 (Responder)", re.th3, "TH_3 (Raw Value)")

	m3, err := in.Message3()
	if err != nil {
		t.Fatal(err)
	}
	ctx3 := macContext(nil, credI.IDCred, in.th3, credI.Cred, nil)
	eq("context_3", ctx3, "context_3 (CBOR Sequence)")
	eq("MAC_3", kdf(in.prk3e2m, 6, ctx3, 32), "MAC_3 (Raw Value)")
	k3, iv3 := in.k3()
	eq("K_3", k3, "K_3 (Raw Value)")
	eq("IV_3", iv3, "IV_3 (Raw Value)")
	eq("A_3", encrypt0AAD(in.th3), "A_3 (CBOR Data Item)")
	eq("message_3", m3, "message_3 (CBOR Sequence)")
	eq("TH_4 (Initiator)", in.th4, "TH_4 (Raw Value)")

	peerI, err := re.ProcessMessage3(m3)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(peerI.Cred, credI.Cred) {
		t.Error("Responder resolved the wrong Initiator credential")
	}
	eq("TH_4 (Responder)", re.th4, "TH_4 (Raw Value)")
	m4, err := re.Message4()
	if err != nil {
		t.Fatal(err)
	}
	k4, iv4 := re.k4()
	eq("K_4", k4, "K_4 (Raw Value)")
	eq("IV_4", iv4, "IV_4 (Raw Value)")
	eq("message_4", m4, "message_4 (CBOR Sequence)")
	if err := in.ProcessMessage4(m4); err != nil {
		t.Fatal(err)
	}

	for _, side := range []struct {
		name string
		k    *keys
		exp  func(uint64, []byte, int) ([]byte, error)
	}{{"Initiator", &in.keys, in.Exporter}, {"Responder", &re.keys, re.Exporter}} {
		eq(side.name+" PRK_out", side.k.prkOut, "PRK_out (Raw Value)")
		eq(side.name+" PRK_exporter", side.k.prkExporter, "PRK_exporter (Raw Value)")
		secret, err := side.exp(0, nil, 16)
		if err != nil {
			t.Fatal(err)
		}
		eq(side.name+" OSCORE Master Secret", secret, "OSCORE Master Secret (Raw Value)")
		salt, err := side.exp(1, nil, 8)
		if err != nil {
			t.Fatal(err)
		}
		eq(side.name+" OSCORE Master Salt", salt, "OSCORE Master Salt (Raw Value)")
	}
}
