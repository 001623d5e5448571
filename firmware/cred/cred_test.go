package cred

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/edhoc"
)

// allKinds lists one valid (kind, role) for every kind and role.
var allKinds = []struct {
	name string
	kind Kind
	role Role
}{
	{"lock", KindLock, RoleNone},
	{"gateway", KindGateway, RoleNone},
	{"operator", KindOperator, RoleOperator},
	{"admin", KindOperator, RoleAdmin},
	{"user", KindUser, RoleRider},
}

func TestIssueParseRoundTrip(t *testing.T) {
	for _, k := range allKinds {
		t.Run(k.name, func(t *testing.T) {
			in := claimsFor(k.kind, k.role)
			raw := mustIssue(t, in)
			if len(raw) > MaxSize {
				t.Fatalf("credential is %d bytes", len(raw))
			}
			again := mustIssue(t, in)
			if !bytes.Equal(raw, again) {
				t.Fatal("Issue is not reproducible")
			}
			c, err := Parse(raw, testRoots())
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if c.Issuer != in.Issuer || c.Subject != in.Subject || c.Kind != in.Kind ||
				c.Role != in.Role || c.Perms != in.Perms ||
				!c.NotBefore.Equal(in.NotBefore) || !c.Expiry.Equal(in.Expiry) ||
				!c.IssuedAt.Equal(in.IssuedAt) || !c.PublicKey.Equal(in.PublicKey) {
				t.Fatalf("claims differ:\n got %+v\nwant %+v", c.Claims, in)
			}
			if !bytes.Equal(c.Raw, raw) || !bytes.Equal(c.RootKID, rootKID) {
				t.Fatal("Raw or RootKID wrong")
			}
			wantKID, _ := KID(k.kind, in.Subject)
			if !bytes.Equal(c.KID, wantKID) || len(c.KID) != KIDLen {
				t.Fatalf("kid %x, want %x", c.KID, wantKID)
			}
			if c.Effective() != Cap(k.kind, k.role) {
				t.Fatalf("effective %v, want %v", c.Effective(), Cap(k.kind, k.role))
			}
			// Reissuing the parsed claims gives the same bytes.
			if re := mustIssue(t, c.Claims); !bytes.Equal(re, raw) {
				t.Fatal("reissuing parsed claims changed the bytes")
			}

			byVal := c.EDHOC(true)
			if !bytes.Equal(byVal.IDCred, cat([]byte{0xa1, 0x0d}, raw)) {
				t.Fatalf("ID_CRED by value %x", byVal.IDCred)
			}
			byRef := c.EDHOC(false)
			if !bytes.Equal(byRef.IDCred, cat([]byte{0xa1, 0x04, 0x48}, c.KID)) {
				t.Fatalf("ID_CRED by kid %x", byRef.IDCred)
			}
			for _, e := range []edhoc.Credential{byVal, byRef} {
				if !bytes.Equal(e.Cred, raw) || !e.PublicKey.Equal(in.PublicKey) || e.Info != c {
					t.Fatal("edhoc.Credential fields wrong")
				}
			}
		})
	}
}

func TestKIDRule(t *testing.T) {
	kid, err := KID(KindLock, "a1b2c3d4e5f60718")
	if err != nil || hex.EncodeToString(kid) != "a1b2c3d4e5f60718" {
		t.Fatalf("lock kid %x, %v", kid, err)
	}
	kid, _ = KID(KindOperator, "op-alice")
	h := sha256.Sum256(append([]byte{3}, "op-alice"...))
	if !bytes.Equal(kid, h[:8]) {
		t.Fatalf("operator kid %x, want %x", kid, h[:8])
	}
	for _, bad := range []string{"A1B2C3D4E5F60718", "a1b2c3d4e5f6071", "a1b2c3d4e5f607189", "g1b2c3d4e5f60718", ""} {
		if _, err := KID(KindLock, bad); !errors.Is(err, ErrInvalidClaims) {
			t.Errorf("KID(lock, %q) = %v", bad, err)
		}
	}
	if _, err := KID(0, "x"); !errors.Is(err, ErrInvalidClaims) {
		t.Error("KID(0) accepted")
	}
	if s := LockSubject([8]byte{0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18}); s != "a1b2c3d4e5f60718" {
		t.Errorf("LockSubject = %q", s)
	}
}

func TestParseSignedByNonRoot(t *testing.T) {
	// An attacker's key, presenting itself under the real root's kid.
	raw, err := Issue(keyFromSeed(0x66), rootKID, claimsFor(KindOperator, RoleAdmin))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(raw, testRoots())
	wantErr(t, err, ErrBadSignature)
}

func TestParseUnknownRoot(t *testing.T) {
	raw, err := Issue(rootKey2, rootKID2, claimsFor(KindGateway, RoleNone))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(raw, testRoots())
	wantErr(t, err, ErrUnknownRoot)

	// During a rotation both roots are trusted.
	roots := testRoots()
	roots.Add(rootKID2, pubOf(rootKey2))
	if _, err := Parse(raw, roots); err != nil {
		t.Fatalf("new root: %v", err)
	}
	if _, err := Parse(mustIssue(t, claimsFor(KindLock, RoleNone)), roots); err != nil {
		t.Fatalf("old root: %v", err)
	}
	// A root kid that names the wrong key is a bad signature, not unknown.
	swapped := Roots{string(rootKID): pubOf(rootKey2)}
	_, err = Parse(mustIssue(t, claimsFor(KindLock, RoleNone)), swapped)
	wantErr(t, err, ErrBadSignature)
}

func TestParseTamperedPayload(t *testing.T) {
	raw := mustIssue(t, claimsFor(KindGateway, RoleNone))
	// Turn the subject "gw-berlin-0042" into "gw-berlin-0043".
	i := bytes.Index(raw, []byte("0042"))
	bad := bytes.Clone(raw)
	bad[i+3] = '3'
	_, err := Parse(bad, testRoots())
	wantErr(t, err, ErrBadSignature)

	// No single bit flip anywhere yields an accepted credential.
	for i := range raw {
		for bit := range 8 {
			bad := bytes.Clone(raw)
			bad[i] ^= 1 << bit
			if _, err := Parse(bad, testRoots()); err == nil {
				t.Fatalf("flipping bit %d of byte %d was accepted", bit, i)
			}
		}
	}
}

func TestCheckAtExpired(t *testing.T) {
	c, err := Parse(mustIssue(t, claimsFor(KindUser, RoleRider)), testRoots())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckAt(c.Expiry.Add(-time.Second)); err != nil {
		t.Fatalf("last second: %v", err)
	}
	wantErr(t, c.CheckAt(c.Expiry), ErrExpired)
	wantErr(t, c.CheckAt(c.Expiry.Add(time.Hour)), ErrExpired)
}

func TestCheckAtNotYetValid(t *testing.T) {
	c, err := Parse(mustIssue(t, claimsFor(KindUser, RoleRider)), testRoots())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckAt(c.NotBefore); err != nil {
		t.Fatalf("at nbf: %v", err)
	}
	wantErr(t, c.CheckAt(c.NotBefore.Add(-time.Second)), ErrNotYetValid)
}

func TestGatewayCannotUnlock(t *testing.T) {
	in := claimsFor(KindGateway, RoleNone)
	in.Perms = PermAll // the issuer (wrongly) granted everything
	c, err := Parse(mustIssue(t, in), testRoots())
	if err != nil {
		t.Fatal(err)
	}
	if c.Perms != PermAll {
		t.Fatalf("claimed perms %v", c.Perms)
	}
	for _, p := range []Perm{PermLock, PermUnlock, PermAddUser, PermRemoveUser, PermListUsers, PermClearBonds, PermSetTime, PermLock | PermStatus} {
		if c.Allows(p) {
			t.Errorf("gateway allowed %v", p)
		}
	}
	for _, p := range []Perm{PermStatus, PermReadAudit, PermAllowBond, GatewayPerms} {
		if !c.Allows(p) {
			t.Errorf("gateway not allowed %v", p)
		}
	}
	if c.Allows(0) {
		t.Error("Allows(0) is true")
	}
}

func TestCaps(t *testing.T) {
	for _, tc := range []struct {
		k    Kind
		r    Role
		want Perm
	}{
		{KindLock, RoleNone, 0},
		{KindGateway, RoleNone, PermStatus | PermReadAudit | PermAllowBond},
		{KindOperator, RoleOperator, PermLock | PermUnlock | PermStatus},
		{KindOperator, RoleAdmin, PermLock | PermUnlock | PermStatus | PermAddUser | PermRemoveUser | PermListUsers | PermClearBonds | PermSetTime | PermReadAudit},
		{KindUser, RoleRider, PermLock | PermUnlock | PermStatus},
		{KindOperator, RoleNone, 0},
		{KindOperator, 3, 0},
		{KindGateway, RoleAdmin, 0},
		{0, RoleNone, 0},
		{9, RoleAdmin, 0},
	} {
		if got := Cap(tc.k, tc.r); got != tc.want {
			t.Errorf("Cap(%v, %d) = %v, want %v", tc.k, tc.r, got, tc.want)
		}
	}
	if AdminPerms&PermAllowBond != 0 || OperatorPerms&PermSetTime != 0 {
		t.Error("caps wider than the brief")
	}
	if s := (PermLock | PermSetTime | 1<<20).String(); s != "lock|set-time|0x100000" {
		t.Errorf("Perm.String = %q", s)
	}
}

// Wire building blocks for hand-made encodings.

type kv struct{ k, v []byte }

func enc(v any) []byte {
	b, err := encMode.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func rawMap(hdr []byte, kvs ...kv) []byte {
	out := bytes.Clone(hdr)
	for _, p := range kvs {
		out = append(out, p.k...)
		out = append(out, p.v...)
	}
	return out
}

// lockKVs returns the canonical claims of claimsFor(KindLock) as key/value
// pairs, in order, with the given cnf value.
func lockKVs(cnf []byte) []kv {
	c := claimsFor(KindLock, RoleNone)
	return []kv{
		{enc(1), enc(c.Issuer)},
		{enc(2), enc(c.Subject)},
		{enc(4), enc(c.Expiry.Unix())},
		{enc(5), enc(c.NotBefore.Unix())},
		{enc(6), enc(c.IssuedAt.Unix())},
		{enc(8), cnf},
		{enc(-65537), enc(1)},
		{enc(-65538), enc(0)},
	}
}

func lockCOSEKeyKVs() []kv {
	c := claimsFor(KindLock, RoleNone)
	kid, _ := KID(KindLock, c.Subject)
	return []kv{
		{enc(1), enc(1)},
		{enc(2), enc(kid)},
		{enc(-1), enc(6)},
		{enc(-2), enc([]byte(c.PublicKey))},
	}
}

func lockCnf(keyHdr []byte, keyKVs ...kv) []byte {
	return rawMap([]byte{0xa1, 0x01}, kv{nil, rawMap(keyHdr, keyKVs...)})
}

func canonicalLockPayload() []byte {
	return rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa4}, lockCOSEKeyKVs()...))...)
}

func TestHandBuiltMatchesIssue(t *testing.T) {
	raw := mustIssue(t, claimsFor(KindLock, RoleNone))
	p := parts(t, raw)
	if !bytes.Equal(p.Payload, canonicalLockPayload()) {
		t.Fatalf("payload\n got %x\nwant %x", p.Payload, canonicalLockPayload())
	}
	env := cat([]byte{0x84}, bstr(ProtectedEdDSA), []byte{0xa1, 0x04}, bstr(rootKID), bstr(p.Payload), bstr(p.Signature))
	if !bytes.Equal(env, raw) {
		t.Fatalf("envelope\n got %x\nwant %x", env, raw)
	}
}

func TestParseRefusesNonCanonicalClaims(t *testing.T) {
	kvs := func(f func([]kv) []kv) []kv {
		return f(lockKVs(lockCnf([]byte{0xa4}, lockCOSEKeyKVs()...)))
	}
	c := claimsFor(KindLock, RoleNone)
	x := []byte(c.PublicKey)
	ck := lockCOSEKeyKVs()

	cases := []struct {
		name    string
		payload []byte
		want    error
	}{
		{"indefinite-length map", cat(rawMap([]byte{0xbf}, kvs(func(k []kv) []kv { return k })...), []byte{0xff}), ErrMalformed},
		{"indefinite-length tstr", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv {
			k[1].v = cat([]byte{0x7f, 0x68}, []byte(c.Subject[:8]), []byte{0x68}, []byte(c.Subject[8:]), []byte{0xff})
			return k
		})...), ErrMalformed},
		{"indefinite-length bstr x", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa4}, ck[0], ck[1], ck[2],
			kv{enc(-2), cat([]byte{0x5f}, bstr(x[:16]), bstr(x[16:]), []byte{0xff})}))...), ErrMalformed},
		{"indefinite-length COSE_Key", rawMap([]byte{0xa8}, lockKVs(cat(lockCnf([]byte{0xbf}, ck...), []byte{0xff}))...), ErrMalformed},
		{"duplicate claim", rawMap([]byte{0xa9}, kvs(func(k []kv) []kv { return append(k[:2:2], append([]kv{k[1]}, k[2:]...)...) })...), ErrMalformed},
		{"duplicate claim, last", rawMap([]byte{0xa9}, kvs(func(k []kv) []kv { return append(k, k[0]) })...), ErrMalformed},
		{"duplicate COSE_Key param", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa5}, append(ck, ck[3])...))...), ErrMalformed},
		{"trailing byte", cat(canonicalLockPayload(), []byte{0x00}), ErrMalformed},
		{"unsorted keys", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[0], k[1] = k[1], k[0]; return k })...), ErrMalformed},
		{"non-shortest int", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[6].v = []byte{0x18, 0x01}; return k })...), ErrMalformed},
		{"non-shortest key", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[0].k = []byte{0x18, 0x01}; return k })...), ErrMalformed},
		{"non-shortest length", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[1].v = cat([]byte{0x78, 0x10}, []byte(c.Subject)); return k })...), ErrMalformed},
		{"non-shortest map header", rawMap([]byte{0xb8, 0x08}, kvs(func(k []kv) []kv { return k })...), ErrMalformed},
		{"unknown claim (aud)", rawMap([]byte{0xa9}, kvs(func(k []kv) []kv { return append(k[:2:2], append([]kv{{enc(3), enc("x")}}, k[2:]...)...) })...), ErrMalformed},
		{"private key d in COSE_Key", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa5}, append(ck, kv{enc(-4), enc(x)})...))...), ErrMalformed},
		{"explicit role 0", rawMap([]byte{0xa9}, kvs(func(k []kv) []kv { return append(k, kv{enc(-65539), enc(0)}) })...), ErrMalformed},
		{"empty iss", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[0].v = enc(""); return k })...), ErrMalformed},
		{"missing exp", rawMap([]byte{0xa7}, kvs(func(k []kv) []kv { return append(k[:2:2], k[3:]...) })...), ErrMalformed},
		{"missing perms", rawMap([]byte{0xa7}, kvs(func(k []kv) []kv { return k[:7] })...), ErrMalformed},
		{"null nbf", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[3].v = []byte{0xf6}; return k })...), ErrMalformed},
		{"sub as bstr", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[1].v = enc([]byte(c.Subject)); return k })...), ErrMalformed},
		{"x as array", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa4}, ck[0], ck[1], ck[2], kv{enc(-2), enc([]int{1, 2})}))...), ErrMalformed},
		{"x as tstr", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa4}, ck[0], ck[1], ck[2], kv{enc(-2), enc(string(x))}))...), ErrMalformed},
		{"kid as array", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa4}, ck[0], kv{enc(2), enc([]int{0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18})}, ck[2], ck[3]))...), ErrMalformed},
		{"null kid", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa4}, ck[0], kv{enc(2), []byte{0xf6}}, ck[2], ck[3]))...), ErrMalformed},
		{"exp as tag 1", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[2].v = cat([]byte{0xc1}, k[2].v); return k })...), ErrMalformed},
		{"exp as float", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[2].v = enc(float64(c.Expiry.Unix())); return k })...), ErrMalformed},
		{"exp negative", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[2].v = enc(-1); return k })...), ErrMalformed},
		{"claims as array", enc([]int{1, 2}), ErrMalformed},
		{"invalid UTF-8 sub", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[0].v = []byte{0x62, 0xff, 0xfe}; return k })...), ErrMalformed},
		{"kind 7", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[6].v = enc(7); return k })...), ErrInvalidClaims},
		{"kind 2^32+1", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[6].v = enc(uint64(1<<32 + 1)); return k })...), ErrInvalidClaims},
		{"unknown perm bit", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[7].v = enc(1 << 10); return k })...), ErrInvalidClaims},
		{"perm bit beyond uint32", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[7].v = enc(uint64(1<<32 | 1)); return k })...), ErrInvalidClaims},
		{"role on a lock", rawMap([]byte{0xa9}, kvs(func(k []kv) []kv { return append(k, kv{enc(-65539), enc(1)}) })...), ErrInvalidClaims},
		{"exp beyond 2^32-1", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[2].v = enc(uint64(1 << 32)); return k })...), ErrInvalidClaims},
		{"exp before nbf", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[2].v = enc(c.NotBefore.Unix() - 1); return k })...), ErrInvalidClaims},
		{"uppercase lock subject", rawMap([]byte{0xa8}, kvs(func(k []kv) []kv { k[1].v = enc(strings.ToUpper(c.Subject)); return k })...), ErrInvalidClaims},
		{"kty EC2", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa4}, kv{enc(1), enc(2)}, ck[1], ck[2], ck[3]))...), ErrInvalidClaims},
		{"crv X25519", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa4}, ck[0], ck[1], kv{enc(-1), enc(4)}, ck[3]))...), ErrInvalidClaims},
		{"x 31 bytes", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa4}, ck[0], ck[1], ck[2], kv{enc(-2), enc(x[:31])}))...), ErrInvalidClaims},
		{"x 33 bytes", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa4}, ck[0], ck[1], ck[2], kv{enc(-2), enc(append(bytes.Clone(x), 0))}))...), ErrInvalidClaims},
		{"kid of another lock", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa4}, ck[0], kv{enc(2), enc([]byte{1, 2, 3, 4, 5, 6, 7, 8})}, ck[2], ck[3]))...), ErrBadKID},
		{"kid too long", rawMap([]byte{0xa8}, lockKVs(lockCnf([]byte{0xa4}, ck[0], kv{enc(2), enc(unhex(t, c.Subject+"00"))}, ck[2], ck[3]))...), ErrBadKID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := signPayload(t, rootKey, rootKID, tc.payload)
			_, err := Parse(raw, testRoots())
			wantErr(t, err, tc.want)
		})
	}
}

func TestParseKIDRuleViolated(t *testing.T) {
	// An operator credential whose kid claims to be a lock's ID: a
	// correctly signed credential that breaks the kid rule.
	in := claimsFor(KindOperator, RoleAdmin)
	in.Subject = "a1b2c3d4e5f60718"
	payload, err := encodeClaims(&in, unhex(t, "a1b2c3d4e5f60718"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(signPayload(t, rootKey, rootKID, payload), testRoots())
	wantErr(t, err, ErrBadKID)
}

func TestParseRefusesNonCanonicalEnvelope(t *testing.T) {
	good := mustIssue(t, claimsFor(KindLock, RoleNone))
	p := parts(t, good)
	unprot := cat([]byte{0xa1, 0x04}, bstr(rootKID))
	sig := p.Signature
	body := func(prot, unprot, payload, sig []byte) []byte {
		return cat(bstr(prot), unprot, bstr(payload), bstr(sig))
	}
	otherAlg := []byte{0xa1, 0x01, 0x26} // ES256
	cases := []struct {
		name string
		raw  []byte
		want error
	}{
		{"tagged COSE_Sign1 (18)", cat([]byte{0xd2}, good), ErrMalformed},
		{"CWT tag 61", cat([]byte{0xd8, 0x3d}, good), ErrMalformed},
		{"trailing byte", cat(good, []byte{0x00}), ErrMalformed},
		{"trailing item", cat(good, good[:1]), ErrMalformed},
		{"indefinite-length array", cat([]byte{0x9f}, body(ProtectedEdDSA, unprot, p.Payload, sig), []byte{0xff}), ErrMalformed},
		{"indefinite-length payload", cat([]byte{0x84}, bstr(ProtectedEdDSA), unprot,
			[]byte{0x5f}, bstr(p.Payload[:10]), bstr(p.Payload[10:]), []byte{0xff}, bstr(sig)), ErrMalformed},
		{"indefinite-length unprotected", cat([]byte{0x84}, bstr(ProtectedEdDSA), []byte{0xbf, 0x04}, bstr(rootKID), []byte{0xff}, bstr(p.Payload), bstr(sig)), ErrMalformed},
		{"non-shortest payload length", cat([]byte{0x84}, bstr(ProtectedEdDSA), unprot,
			[]byte{0x59, 0x00, byte(len(p.Payload))}, p.Payload, bstr(sig)), ErrMalformed},
		{"non-shortest array header", cat([]byte{0x98, 0x04}, body(ProtectedEdDSA, unprot, p.Payload, sig)), ErrMalformed},
		{"duplicate kid in unprotected", cat([]byte{0x84}, bstr(ProtectedEdDSA), []byte{0xa2, 0x04}, bstr(rootKID), []byte{0x04}, bstr(rootKID), bstr(p.Payload), bstr(sig)), ErrMalformed},
		{"extra unprotected param", cat([]byte{0x84}, bstr(ProtectedEdDSA), []byte{0xa2, 0x04}, bstr(rootKID), []byte{0x03, 0x00}, bstr(p.Payload), bstr(sig)), ErrMalformed},
		{"empty unprotected", cat([]byte{0x84}, bstr(ProtectedEdDSA), []byte{0xa0}, bstr(p.Payload), bstr(sig)), ErrMalformed},
		{"root kid as tstr", cat([]byte{0x84}, bstr(ProtectedEdDSA), []byte{0xa1, 0x04}, enc(string(rootKID)), bstr(p.Payload), bstr(sig)), ErrMalformed},
		{"root kid too long", cat([]byte{0x84}, body(ProtectedEdDSA, cat([]byte{0xa1, 0x04}, bstr(make([]byte, 17))), p.Payload, sig)), ErrMalformed},
		{"other algorithm", cat([]byte{0x84}, body(otherAlg, unprot, p.Payload, sig)), ErrMalformed},
		{"empty protected", cat([]byte{0x84}, body(nil, unprot, p.Payload, sig)), ErrMalformed},
		{"protected with kid too", cat([]byte{0x84}, body(cat(ProtectedEdDSA[:1:1], []byte{0x01, 0x27, 0x04}, bstr(rootKID)), unprot, p.Payload, sig)), ErrMalformed},
		{"detached payload", cat([]byte{0x84}, bstr(ProtectedEdDSA), unprot, []byte{0xf6}, bstr(sig)), ErrMalformed},
		{"short signature", cat([]byte{0x84}, body(ProtectedEdDSA, unprot, p.Payload, sig[:63])), ErrMalformed},
		{"three elements", cat([]byte{0x83}, bstr(ProtectedEdDSA), unprot, bstr(p.Payload)), ErrMalformed},
		{"five elements", cat([]byte{0x85}, body(ProtectedEdDSA, unprot, p.Payload, sig), []byte{0x00}), ErrMalformed},
		{"empty", nil, ErrMalformed},
		{"truncated", good[:len(good)-1], ErrMalformed},
		{"oversized", cat(good, make([]byte, MaxSize+1-len(good))), ErrTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.raw, testRoots())
			wantErr(t, err, tc.want)
		})
	}
}

func TestParseOversized(t *testing.T) {
	// A correctly signed credential that is too large is refused before
	// anything is decoded, whatever it contains.
	c := claimsFor(KindOperator, RoleAdmin)
	payload, err := encodeClaims(&c, make([]byte, KIDLen))
	if err != nil {
		t.Fatal(err)
	}
	big := cat(payload[:len(payload):len(payload)], make([]byte, MaxSize))
	raw := signPayload(t, rootKey, rootKID, big)
	_, err = Parse(raw, testRoots())
	wantErr(t, err, ErrTooLarge)
	_, err = Parse(make([]byte, MaxSize+1), testRoots())
	wantErr(t, err, ErrTooLarge)
	if _, err := Parse(make([]byte, MaxSize), testRoots()); errors.Is(err, ErrTooLarge) {
		t.Fatal("MaxSize bytes refused as too large")
	}
}

func TestIssueRejectsInvalidClaims(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Claims)
		want error
	}{
		{"kind 0", func(c *Claims) { c.Kind = 0 }, ErrInvalidClaims},
		{"kind 5", func(c *Claims) { c.Kind = 5 }, ErrInvalidClaims},
		{"operator without role", func(c *Claims) { c.Role = RoleNone }, ErrInvalidClaims},
		{"operator role 3", func(c *Claims) { c.Role = 3 }, ErrInvalidClaims},
		{"unknown perm bit", func(c *Claims) { c.Perms |= 1 << 12 }, ErrInvalidClaims},
		{"empty subject", func(c *Claims) { c.Subject = "" }, ErrInvalidClaims},
		{"long subject", func(c *Claims) { c.Subject = strings.Repeat("x", 65) }, ErrInvalidClaims},
		{"invalid UTF-8 subject", func(c *Claims) { c.Subject = "\xff" }, ErrInvalidClaims},
		{"long issuer", func(c *Claims) { c.Issuer = strings.Repeat("x", 65) }, ErrInvalidClaims},
		{"no nbf", func(c *Claims) { c.NotBefore = time.Time{} }, ErrInvalidClaims},
		{"no exp", func(c *Claims) { c.Expiry = time.Time{} }, ErrInvalidClaims},
		{"exp == nbf", func(c *Claims) { c.Expiry = c.NotBefore }, ErrInvalidClaims},
		{"exp after 2106", func(c *Claims) { c.Expiry = time.Unix(1<<32, 0) }, ErrInvalidClaims},
		{"nbf before 1970", func(c *Claims) { c.NotBefore = time.Unix(-1, 0) }, ErrInvalidClaims},
		{"short key", func(c *Claims) { c.PublicKey = c.PublicKey[:31] }, ErrInvalidClaims},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := claimsFor(KindOperator, RoleOperator)
			tc.mod(&c)
			_, err := Issue(rootKey, rootKID, c)
			wantErr(t, err, tc.want)
		})
	}
	lock := claimsFor(KindLock, RoleNone)
	lock.Role = RoleOperator
	_, err := Issue(rootKey, rootKID, lock)
	wantErr(t, err, ErrInvalidClaims)
	lock = claimsFor(KindLock, RoleNone)
	lock.Subject = "A1B2C3D4E5F60718"
	_, err = Issue(rootKey, rootKID, lock)
	wantErr(t, err, ErrInvalidClaims)

	_, err = Issue(rootKey[:32], rootKID, claimsFor(KindLock, RoleNone))
	wantErr(t, err, ErrBadKey)
	_, err = Issue(rootKey, nil, claimsFor(KindLock, RoleNone))
	wantErr(t, err, ErrBadKey)
	_, err = Issue(rootKey, make([]byte, MaxRootKIDLen+1), claimsFor(KindLock, RoleNone))
	wantErr(t, err, ErrBadKey)
}

func TestIssueOptionalClaims(t *testing.T) {
	c := claimsFor(KindGateway, RoleNone)
	c.Issuer = ""
	c.IssuedAt = time.Time{}
	c.Perms = 0
	c.NotBefore = c.NotBefore.Add(999 * time.Millisecond) // truncated
	cert, err := Parse(mustIssue(t, c), testRoots())
	if err != nil {
		t.Fatal(err)
	}
	if cert.Issuer != "" || !cert.IssuedAt.IsZero() || !cert.NotBefore.Equal(t0) || cert.Perms != 0 {
		t.Fatalf("optional claims: %+v", cert.Claims)
	}
	// iat = 0 (1970) is a present claim, not an absent one.
	c.IssuedAt = time.Unix(0, 0)
	cert, err = Parse(mustIssue(t, c), testRoots())
	if err != nil || cert.IssuedAt.IsZero() || cert.IssuedAt.Unix() != 0 {
		t.Fatalf("iat 0: %v %v", cert.IssuedAt, err)
	}
}

// The worked example of docs/protocol.md §5.10: root seed 32×0x01, root
// kid RootKID(root), lock seed 32×0x02, lock ID a1b2c3d4e5f60718,
// nbf = iat = 2025-01-01T00:00:00Z, exp = 2045-01-01T00:00:00Z.
const workedExample = "8443a10127a1044834750f98bd59fcfc5872a8016a666c6565742d726f6f7402706131623263336434653566363037313804" +
	"1a8d132300051a67748580061a6774858008a101a401010248a1b2c3d4e5f607182006215820" +
	"8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b3943a00010000013a00010001005840" +
	"56cd0633775028973afe02d790d6b3e64671b15e3329c62ea764e40efb6cd0be0a4b4b58b2c99acba8efd403e1dceead33d71dfbc041a26f34cc3d01622cc704"

func workedExampleClaims() Claims {
	return Claims{
		Issuer:    "fleet-root",
		Subject:   "a1b2c3d4e5f60718",
		Kind:      KindLock,
		NotBefore: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		Expiry:    time.Date(2045, 1, 1, 0, 0, 0, 0, time.UTC),
		IssuedAt:  time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		PublicKey: pubOf(keyFromSeed(0x02)),
	}
}

func TestWorkedExample(t *testing.T) {
	raw := mustIssue(t, workedExampleClaims())
	if got := hex.EncodeToString(raw); got != workedExample {
		t.Fatalf("worked example changed:\n got %s\nwant %s", got, workedExample)
	}
	if hex.EncodeToString(rootKID) != "34750f98bd59fcfc" {
		t.Fatalf("root kid %x", rootKID)
	}
	if _, err := Parse(raw, testRoots()); err != nil {
		t.Fatal(err)
	}
	// The spec must show the same bytes.
	doc, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatalf("reading the spec: %v", err)
	}
	flat := strings.Join(strings.Fields(string(doc)), "")
	if !strings.Contains(flat, workedExample) {
		t.Fatal("docs/protocol.md does not contain the worked example's hex (§5.10)")
	}
}

func BenchmarkParse(b *testing.B) {
	raw := mustIssue(b, claimsFor(KindOperator, RoleAdmin))
	roots := testRoots()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(raw, roots); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssue(b *testing.B) {
	c := claimsFor(KindOperator, RoleAdmin)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Issue(rootKey, rootKID, c); err != nil {
			b.Fatal(err)
		}
	}
}
