package frame

import (
	"bytes"
	"testing"
)

// TestNonceHandWorked checks the nonce construction against examples worked
// by hand with the steps of RFC 8613 §5.2, then against the nonces printed
// in the OSCORE test vectors (RFC 8613 Appendix C).
//
// Example A: Sender ID 0x18, seq 5, Common IV 46 22 d4 dd 6d 94 41 68 ee fb 54 98 7c
// (the Common IV of RFC 8613 C.1).
//
//	PIV = shortest big-endian encoding of 5 = 05
//	1. left-pad PIV to 5 bytes:                 00 00 00 00 05
//	2. left-pad ID_PIV = 18 to 13-6 = 7 bytes:  00 00 00 00 00 00 18
//	3. S = len(ID_PIV) = 01; S || ID || PIV =   01 00 00 00 00 00 00 18 00 00 00 00 05
//	4. XOR with the Common IV:                  46 22 d4 dd 6d 94 41 68 ee fb 54 98 7c
//	   byte 0: 01^46 = 47; byte 7: 18^68 = 70; byte 12: 05^7c = 79; others unchanged
//	   nonce =                                  47 22 d4 dd 6d 94 41 70 ee fb 54 98 79
//
// Example B: empty Sender ID, seq 258, same Common IV.
//
//	PIV = 01 02 (two bytes: shortest encoding of 0x0102)
//	1. 00 00 00 01 02
//	2. ID_PIV is empty: 00 00 00 00 00 00 00
//	3. S = 00:  00 00 00 00 00 00 00 00 00 00 00 01 02
//	4. byte 11: 01^98 = 99; byte 12: 02^7c = 7e
//	   nonce =  46 22 d4 dd 6d 94 41 68 ee fb 54 99 7e
//
// Example C: 7-byte Sender ID 01 02 03 04 05 06 07, seq 0xffffffff.
//
//	PIV = ff ff ff ff (four bytes)
//	1. 00 ff ff ff ff
//	2. 01 02 03 04 05 06 07 (already 7 bytes)
//	3. S = 07:  07 01 02 03 04 05 06 07 00 ff ff ff ff
//	4. 07^46=41 01^22=23 02^d4=d6 03^dd=de 04^6d=69 05^94=91 06^41=47
//	   07^68=6f 00^ee=ee ff^fb=04 ff^54=ab ff^98=67 ff^7c=83
//	   nonce =  41 23 d6 de 69 91 47 6f ee 04 ab 67 83
func TestNonceHandWorked(t *testing.T) {
	for _, c := range []struct {
		name     string
		senderID string
		seq      uint32
		iv, want string
	}{
		{"A", "18", 5, "4622d4dd6d944168eefb54987c", "4722d4dd6d944170eefb549879"},
		{"B", "", 258, "4622d4dd6d944168eefb54987c", "4622d4dd6d944168eefb54997e"},
		{"C", "01020304050607", 0xffffffff, "4622d4dd6d944168eefb54987c", "4123d6de6991476fee04ab6783"},
		// RFC 8613 C.4: Sender ID 0x (empty), Sender Sequence Number 20.
		{"RFC 8613 C.4", "", 20, "4622d4dd6d944168eefb54987c", "4622d4dd6d944168eefb549868"},
		// RFC 8613 C.5: Sender ID 0x00, Sender Sequence Number 20.
		{"RFC 8613 C.5", "00", 20, "be35ae297d2dace910c52e99f9", "bf35ae297d2dace910c52e99ed"},
		// RFC 8613 C.6: Sender ID 0x (empty), Sender Sequence Number 20.
		{"RFC 8613 C.6", "", 20, "2ca58fb85ff1b81c0b7181b85e", "2ca58fb85ff1b81c0b7181b84a"},
		// RFC 8613 C.8: Sender ID 0x01, Sender Sequence Number 0.
		{"RFC 8613 C.8", "01", 0, "4622d4dd6d944168eefb54987c", "4722d4dd6d944169eefb54987c"},
	} {
		base := nonceBase(unhex(t, c.senderID), unhex(t, c.iv))
		var got [NonceLen]byte
		makeNonce(&got, &base, c.seq)
		if want := unhex(t, c.want); !bytes.Equal(got[:], want) {
			t.Errorf("%s: nonce %x, want %x", c.name, got, want)
		}
	}
}

// TestCCMMatchesRFC8613 checks the AEAD as this package configures it
// (firmware/internal/ccm on crypto/aes) against the AES-CCM-16-64-128
// vectors of RFC 8613 Appendix C.7 and C.8.
func TestCCMMatchesRFC8613(t *testing.T) {
	key := unhex(t, "ffb14e093c94c9cac9471648b4f98710")
	aad := unhex(t, "8368456e63727970743040488501810a40411440")
	pt := unhex(t, "45ff48656c6c6f20576f726c6421")
	a, err := newAEAD(key)
	if err != nil {
		t.Fatal(err)
	}
	if a.NonceSize() != NonceLen || a.Overhead() != TagLen {
		t.Fatal("AEAD parameters are not AES-CCM-16-64-128")
	}
	for _, c := range []struct{ nonce, ct string }{
		{"4622d4dd6d944168eefb549868", "dbaad1e9a7e7b2a813d3c31524378303cdafae119106"}, // C.7
		{"4722d4dd6d944169eefb54987c", "4d4c13669384b67354b2b6175ff4b8658c666a6cf88e"}, // C.8
	} {
		nonce := unhex(t, c.nonce)
		if got := a.Seal(nil, nonce, pt, aad); !bytes.Equal(got, unhex(t, c.ct)) {
			t.Errorf("Seal = %x, want %s", got, c.ct)
		}
		got, err := a.Open(nil, nonce, unhex(t, c.ct), aad)
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("Open = %x, %v", got, err)
		}
	}
}

// The worked example of docs/protocol.md §6.10: the key material continues the
// RFC 9529 §2 trace. The fake exporter is seeded with that trace's
// PRK_exporter and computes EDHOC_Exporter exactly (HKDF-Expand-SHA256 with
// info = CBOR sequence (label, empty bstr, length)); the connection identifiers are
// the trace's C_I = 0x2d and C_R = 0x18.
const (
	exPRKExporter = "2aaec8fc4ab3bc3295def6b551051a2fa561424db301fa84f642f5578a6df51a"
	exKI2R        = "29338258ba8dc056b6d10e7b35b192f9"
	exKR2I        = "2122919a4f62a1191a93a829d3d5f8fb"
	exCommonIV    = "c1096f28495756daa0d6096605"
	exBaseI       = "c0096f28495756c2a0d6096605" // Initiator's nonce for seq 0 (Sender ID C_R = 18)
	exBaseR       = "c0096f28495756f7a0d6096605" // Responder's nonce for seq 0 (Sender ID C_I = 2d)

	// Example 1: Initiator -> Responder, Request, seq 0.
	ex1Plain = "000102030405060708090a0b0c0d0e0f"
	ex1Nonce = "c0096f28495756c2a0d6096605"
	ex1AAD   = "47574c4b01001000000000"
	ex1Frame = "1000000000" + "9cedb969fa1a18bafa4a6e4b6ebfebed" + "dd8a14c4618da2b5"

	// Example 2: Responder -> Initiator, Response, seq 258 (0x00000102).
	ex2Plain = "f0f1f2f3f4"
	ex2Nonce = "c0096f28495756f7a0d6096707"
	ex2AAD   = "47574c4b01011100000102"
	ex2Frame = "1100000102" + "219dc3b550" + "b1432a045ec2ec72"
)

// TestFakeExporterMatchesRFC9529 shows that the test exporter is
// EDHOC_Exporter: from the trace's PRK_exporter it reproduces the OSCORE
// Master Secret and Master Salt printed in RFC 9529 §2.6.
func TestFakeExporterMatchesRFC9529(t *testing.T) {
	e := &hkdfExporter{prk: unhex(t, exPRKExporter)}
	for _, c := range []struct {
		label uint
		n     int
		info  string
		want  string
	}{
		{0, 16, "004010", "1e1c6beac3a8a1cac435de7e2f9ae7ff"},
		{1, 8, "014008", "ce7ab844c0106d73"},
		{LabelKeyI2R, KeyLen, "1980004010", exKI2R},
		{LabelKeyR2I, KeyLen, "1980014010", exKR2I},
		{LabelCommonIV, CommonIVLen, "198002400d", exCommonIV},
	} {
		if got := exporterInfo(c.label, nil, c.n); !bytes.Equal(got, unhex(t, c.info)) {
			t.Errorf("label %d: info %x, want %s", c.label, got, c.info)
		}
		got, err := e.export(c.label, nil, c.n)
		if err != nil || !bytes.Equal(got, unhex(t, c.want)) {
			t.Errorf("label %d: %x, want %s", c.label, got, c.want)
		}
	}
}

// TestWorkedExample pins every value of the worked example in
// docs/protocol.md §6.10. The frames were also reproduced independently with
// pyca/cryptography's AESCCM (OpenSSL) when the spec was written.
func TestWorkedExample(t *testing.T) {
	exp := (&hkdfExporter{prk: unhex(t, exPRKExporter)}).export
	ini, rsp := pair(t, exp, Options{})
	if !bytes.Equal(ini.snd.base[:], unhex(t, exBaseI)) || !bytes.Equal(rsp.snd.base[:], unhex(t, exBaseR)) {
		t.Fatalf("nonce bases %x %x", ini.snd.base, rsp.snd.base)
	}
	if ini.snd.base != rsp.rcv.base || rsp.snd.base != ini.rcv.base {
		t.Fatal("the two ends disagree on the nonces")
	}

	check := func(name string, s, peer *Session, typ Type, seq uint32, plain, nonce, aad, frame string) {
		t.Helper()
		var n [NonceLen]byte
		var a [AADLen]byte
		makeNonce(&n, &s.snd.base, seq)
		makeAAD(&a, s.snd.dir, typ, seq)
		if !bytes.Equal(n[:], unhex(t, nonce)) || !bytes.Equal(a[:], unhex(t, aad)) {
			t.Fatalf("%s: nonce %x aad %x", name, n, a)
		}
		s.snd.next = uint64(seq)
		f := mustSeal(t, s, typ, unhex(t, plain))
		if !bytes.Equal(f, unhex(t, frame)) {
			t.Fatalf("%s: frame %x, want %s", name, f, frame)
		}
		mustOpen(t, peer, f, typ, unhex(t, plain))
	}
	check("example 1", ini, rsp, TypeRequest, 0, ex1Plain, ex1Nonce, ex1AAD, ex1Frame)
	check("example 2", rsp, ini, TypeResponse, 258, ex2Plain, ex2Nonce, ex2AAD, ex2Frame)
}
