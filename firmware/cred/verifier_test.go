package cred

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/edhoc"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func newVerifier(kinds ...Kind) (*Verifier, *clock) {
	clk := &clock{t: t0.Add(time.Hour)}
	return &Verifier{Roots: testRoots(), Now: clk.Now, Kinds: kinds, Cache: NewCache(0)}, clk
}

func byValue(raw []byte) []byte { return cat([]byte{0xa1, 0x0d}, raw) }

func TestVerifierAcceptsByValue(t *testing.T) {
	v, _ := newVerifier(KindLock)
	raw := mustIssue(t, claimsFor(KindLock, RoleNone))
	cred, err := v.ResolveCredential(byValue(raw))
	if err != nil {
		t.Fatal(err)
	}
	c, ok := cred.Info.(*Cert)
	if !ok || c.Subject != "a1b2c3d4e5f60718" {
		t.Fatalf("Info = %#v", cred.Info)
	}
	if !bytes.Equal(cred.IDCred, byValue(raw)) || !bytes.Equal(cred.Cred, raw) {
		t.Fatal("IDCred or Cred wrong")
	}
	if v.Cache.Len() != 1 {
		t.Fatalf("cache holds %d", v.Cache.Len())
	}
}

func TestVerifierWrongKind(t *testing.T) {
	// An operator credential presented where a lock is expected.
	v, _ := newVerifier(KindLock)
	_, err := v.ResolveCredential(byValue(mustIssue(t, claimsFor(KindOperator, RoleAdmin))))
	wantErr(t, err, edhoc.ErrCredentialRejected, ErrWrongKind)
	if v.Cache.Len() != 0 {
		t.Fatal("a rejected credential was cached")
	}
	// No kinds: nothing is accepted.
	v, _ = newVerifier()
	_, err = v.ResolveCredential(byValue(mustIssue(t, claimsFor(KindLock, RoleNone))))
	wantErr(t, err, edhoc.ErrCredentialRejected, ErrWrongKind)
}

func TestVerifierExpiredAndNotYetValid(t *testing.T) {
	v, clk := newVerifier(KindUser)
	raw := byValue(mustIssue(t, claimsFor(KindUser, RoleRider)))
	clk.Set(t0.Add(366 * 24 * time.Hour))
	_, err := v.ResolveCredential(raw)
	wantErr(t, err, edhoc.ErrCredentialRejected, ErrExpired)
	clk.Set(t0.Add(-time.Second))
	_, err = v.ResolveCredential(raw)
	wantErr(t, err, edhoc.ErrCredentialRejected, ErrNotYetValid)
}

func TestVerifierWrongSubject(t *testing.T) {
	v, _ := newVerifier(KindLock)
	v.Subject = "0000000000000001" // the lock we meant to reach
	_, err := v.ResolveCredential(byValue(mustIssue(t, claimsFor(KindLock, RoleNone))))
	wantErr(t, err, edhoc.ErrCredentialRejected, ErrWrongSubject)
	v.Subject = "a1b2c3d4e5f60718"
	if _, err := v.ResolveCredential(byValue(mustIssue(t, claimsFor(KindLock, RoleNone)))); err != nil {
		t.Fatal(err)
	}
}

func TestVerifierRequirePermission(t *testing.T) {
	in := claimsFor(KindGateway, RoleNone)
	in.Perms = PermAll // claims Unlock, but the gateway cap removes it
	raw := byValue(mustIssue(t, in))

	v, _ := newVerifier(KindGateway)
	v.Require = PermUnlock
	_, err := v.ResolveCredential(raw)
	wantErr(t, err, edhoc.ErrCredentialRejected, ErrMissingPermission)

	v.Require = PermAllowBond | PermStatus
	if _, err := v.ResolveCredential(raw); err != nil {
		t.Fatalf("gateway with allow-bond: %v", err)
	}
}

func TestVerifierRejectsBadCredentials(t *testing.T) {
	v, _ := newVerifier(KindLock, KindGateway, KindOperator, KindUser)
	good := mustIssue(t, claimsFor(KindLock, RoleNone))
	foreign, _ := Issue(rootKey2, rootKID2, claimsFor(KindLock, RoleNone))
	forged, _ := Issue(keyFromSeed(0x66), rootKID, claimsFor(KindLock, RoleNone))
	tampered := bytes.Clone(good)
	tampered[len(tampered)-70] ^= 1
	for _, tc := range []struct {
		name   string
		idCred []byte
		want   error
	}{
		{"unknown root", byValue(foreign), ErrUnknownRoot},
		{"bad signature", byValue(forged), ErrBadSignature},
		{"tampered", byValue(tampered), ErrBadSignature},
		{"trailing byte", cat(byValue(good), []byte{0}), ErrMalformed},
		{"tagged", byValue(cat([]byte{0xd2}, good)), ErrMalformed},
		{"bstr-wrapped CWT", cat([]byte{0xa1, 0x0d}, bstr(good)), ErrMalformed},
		{"oversized", byValue(make([]byte, MaxSize+1)), ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.ResolveCredential(tc.idCred)
			wantErr(t, err, edhoc.ErrCredentialRejected, tc.want)
			if errors.Is(err, edhoc.ErrUnknownCredential) {
				t.Fatal("also wraps ErrUnknownCredential")
			}
		})
	}
	if v.Cache.Len() != 0 {
		t.Fatal("a rejected credential was cached")
	}
}

func TestVerifierIDCredShapes(t *testing.T) {
	v, _ := newVerifier(KindLock)
	good := mustIssue(t, claimsFor(KindLock, RoleNone))
	kid := unhex(t, "a1b2c3d4e5f60718")
	for _, tc := range []struct {
		name   string
		idCred []byte
		want   error
	}{
		{"empty", nil, ErrMalformed},
		{"not a map", enc([]byte{1}), ErrMalformed},
		{"bare bstr kid", enc(kid), ErrMalformed},
		{"garbage", []byte{0xff, 0x00}, ErrMalformed},
		{"indefinite map", cat([]byte{0xbf, 0x04}, enc(kid), []byte{0xff}), ErrMalformed},
		{"kid with trailing byte", cat([]byte{0xa1, 0x04}, enc(kid), []byte{0x00}), ErrMalformed},
		{"kid as tstr", cat([]byte{0xa1, 0x04}, enc("a1b2c3d4")), ErrMalformed},
		{"kid as int", []byte{0xa1, 0x04, 0x01}, ErrMalformed},
		{"empty kid", []byte{0xa1, 0x04, 0x40}, ErrMalformed},
		{"kid with non-shortest length", cat([]byte{0xa1, 0x04, 0x58, 0x08}, kid), ErrMalformed},
		{"non-shortest map header", cat([]byte{0xb8, 0x01, 0x04}, enc(kid)), ErrMalformed},
		{"non-shortest label", cat([]byte{0xa1, 0x18, 0x0d}, good), ErrMalformed},
		{"kccs (14)", cat([]byte{0xa1, 0x0e}, canonicalLockPayload()), ErrUnsupportedIDCred},
		{"x5t (34)", cat([]byte{0xa1, 0x18, 0x22}, enc([]any{-16, []byte{1}})), ErrUnsupportedIDCred},
		{"kid and kcwt", cat([]byte{0xa2, 0x04}, enc(kid), []byte{0x0d}, good), ErrUnsupportedIDCred},
		{"empty map", []byte{0xa0}, ErrUnsupportedIDCred},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.ResolveCredential(tc.idCred)
			wantErr(t, err, edhoc.ErrUnknownCredential, tc.want)
			if errors.Is(err, edhoc.ErrCredentialRejected) {
				t.Fatal("also wraps ErrCredentialRejected")
			}
		})
	}
}

func TestVerifierCacheHitByKID(t *testing.T) {
	v, _ := newVerifier(KindOperator)
	raw := mustIssue(t, claimsFor(KindOperator, RoleAdmin))
	first, err := v.ResolveCredential(byValue(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := first.Info.(*Cert)
	byKID := cat([]byte{0xa1, 0x04, 0x48}, c.KID)
	cred, err := v.ResolveCredential(byKID)
	if err != nil {
		t.Fatalf("by kid: %v", err)
	}
	if !bytes.Equal(cred.IDCred, byKID) || !bytes.Equal(cred.Cred, raw) ||
		!cred.PublicKey.Equal(c.PublicKey) || cred.Info.(*Cert) != c {
		t.Fatal("credential from cache differs")
	}

	// A preloaded cache works the same way.
	v2, _ := newVerifier(KindOperator)
	v2.Cache.Put(c)
	if _, err := v2.ResolveCredential(byKID); err != nil {
		t.Fatalf("preloaded: %v", err)
	}
}

func TestVerifierCacheMiss(t *testing.T) {
	v, _ := newVerifier(KindLock)
	byKID := cat([]byte{0xa1, 0x04, 0x48}, unhex(t, "a1b2c3d4e5f60718"))
	_, err := v.ResolveCredential(byKID)
	wantErr(t, err, edhoc.ErrUnknownCredential, ErrUnknownKID)
	if errors.Is(err, edhoc.ErrCredentialRejected) {
		t.Fatal("a miss also wraps ErrCredentialRejected")
	}
	v.Cache = nil // no cache at all: every kid misses
	_, err = v.ResolveCredential(byKID)
	wantErr(t, err, edhoc.ErrUnknownCredential, ErrUnknownKID)
	// By value still works without a cache.
	if _, err := v.ResolveCredential(byValue(mustIssue(t, claimsFor(KindLock, RoleNone)))); err != nil {
		t.Fatal(err)
	}
}

func TestVerifierCachedEntryRechecked(t *testing.T) {
	v, clk := newVerifier(KindUser)
	cred, err := v.ResolveCredential(byValue(mustIssue(t, claimsFor(KindUser, RoleRider))))
	if err != nil {
		t.Fatal(err)
	}
	c := cred.Info.(*Cert)
	byKID := c.EDHOC(false).IDCred

	// Expiry is checked on every resolve, also for cached entries.
	clk.Set(c.Expiry)
	_, err = v.ResolveCredential(byKID)
	wantErr(t, err, edhoc.ErrCredentialRejected, ErrExpired)
	clk.Set(c.Expiry.Add(-time.Second))
	if _, err := v.ResolveCredential(byKID); err != nil {
		t.Fatalf("before exp: %v", err)
	}

	// So is the kind: a verifier that shares the cache but wants locks.
	locks := &Verifier{Roots: v.Roots, Now: v.Now, Kinds: []Kind{KindLock}, Cache: v.Cache}
	_, err = locks.ResolveCredential(byKID)
	wantErr(t, err, edhoc.ErrCredentialRejected, ErrWrongKind)

	// And the permissions.
	strict := &Verifier{Roots: v.Roots, Now: v.Now, Kinds: []Kind{KindUser}, Require: PermAddUser, Cache: v.Cache}
	_, err = strict.ResolveCredential(byKID)
	wantErr(t, err, edhoc.ErrCredentialRejected, ErrMissingPermission)

	// And the root: once retired, credentials it signed stop working, even
	// from the cache.
	retired := &Verifier{Roots: Roots{string(rootKID2): pubOf(rootKey2)}, Now: v.Now, Kinds: []Kind{KindUser}, Cache: v.Cache}
	_, err = retired.ResolveCredential(byKID)
	wantErr(t, err, edhoc.ErrCredentialRejected, ErrUnknownRoot)
	// A root kid now bound to another key: the signature is checked again.
	rebound := &Verifier{Roots: Roots{string(rootKID): pubOf(rootKey2)}, Now: v.Now, Kinds: []Kind{KindUser}, Cache: v.Cache}
	_, err = rebound.ResolveCredential(byKID)
	wantErr(t, err, edhoc.ErrCredentialRejected, ErrBadSignature)
}

func TestVerifierCheckReverifiesForeignCert(t *testing.T) {
	v, _ := newVerifier(KindOperator)
	c, err := Parse(mustIssue(t, claimsFor(KindOperator, RoleOperator)), testRoots())
	if err != nil {
		t.Fatal(err)
	}
	// A Cert built by hand, not by Parse, is not trusted: Check parses Raw.
	fake := &Cert{Claims: c.Claims, KID: c.KID, RootKID: c.RootKID, Raw: c.Raw}
	fake.Role = RoleAdmin
	got, err := v.Check(fake)
	if err != nil {
		t.Fatal(err)
	}
	if got.Role != RoleOperator {
		t.Fatal("Check trusted hand-made claims")
	}
	fake.Raw = nil
	_, err = v.Check(fake)
	wantErr(t, err, ErrMalformed)
}

func TestVerifierVerify(t *testing.T) {
	v, _ := newVerifier(KindOperator)
	v.Require = PermUnlock
	c, err := v.Verify(mustIssue(t, claimsFor(KindOperator, RoleOperator)))
	if err != nil || !c.Allows(PermUnlock) {
		t.Fatalf("Verify: %v", err)
	}
	_, err = v.Verify(mustIssue(t, claimsFor(KindUser, RoleRider)))
	wantErr(t, err, ErrWrongKind)
	if errors.Is(err, edhoc.ErrCredentialRejected) {
		t.Fatal("Verify wraps an edhoc error")
	}
	if v.Cache.Len() != 0 {
		t.Fatal("Verify touched the cache")
	}
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	cache := NewCache(3)
	cert := func(i int) *Cert { return &Cert{KID: []byte{byte(i)}, Claims: Claims{NotBefore: t0}} }
	for i := range 3 {
		cache.Put(cert(i))
	}
	if _, ok := cache.Get([]byte{0}); !ok { // 0 is now the most recent
		t.Fatal("0 missing")
	}
	cache.Put(cert(3)) // evicts 1
	if _, ok := cache.Get([]byte{1}); ok {
		t.Fatal("1 not evicted")
	}
	for _, i := range []int{0, 2, 3} {
		if _, ok := cache.Get([]byte{byte(i)}); !ok {
			t.Fatalf("%d evicted", i)
		}
	}
	if cache.Len() != 3 {
		t.Fatalf("Len %d", cache.Len())
	}
	cache.Remove([]byte{2})
	if _, ok := cache.Get([]byte{2}); ok || cache.Len() != 2 {
		t.Fatal("Remove failed")
	}

	var zero Cache
	for i := range DefaultCacheSize + 10 {
		zero.Put(&Cert{KID: []byte(fmt.Sprint(i))})
	}
	if zero.Len() != DefaultCacheSize {
		t.Fatalf("zero Cache holds %d", zero.Len())
	}
}

func TestCacheKeepsNewerCredential(t *testing.T) {
	cache := NewCache(4)
	older := &Cert{KID: []byte("k"), Claims: Claims{Subject: "old", NotBefore: t0}}
	newer := &Cert{KID: []byte("k"), Claims: Claims{Subject: "new", NotBefore: t0.Add(time.Hour)}}
	cache.Put(newer)
	cache.Put(older) // a replay of the older credential
	if c, _ := cache.Get([]byte("k")); c != newer {
		t.Fatal("older credential displaced the newer one")
	}
	renewed := &Cert{KID: []byte("k"), Claims: Claims{Subject: "renewed", NotBefore: t0.Add(2 * time.Hour)}}
	cache.Put(renewed)
	if c, _ := cache.Get([]byte("k")); c != renewed || cache.Len() != 1 {
		t.Fatal("renewed credential not stored")
	}
}

func TestCacheConcurrent(t *testing.T) {
	v, _ := newVerifier(KindLock, KindGateway, KindOperator, KindUser)
	// Large enough that the 8*50 filler entries below never evict a real
	// credential between its by-value and by-kid resolution: this test is
	// about concurrent safety (run it with -race), not eviction.
	v.Cache = NewCache(1024)
	var raws [][]byte
	for _, k := range allKinds {
		raws = append(raws, mustIssue(t, claimsFor(k.kind, k.role)))
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				raw := raws[(g+i)%len(raws)]
				cred, err := v.ResolveCredential(byValue(raw))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := v.ResolveCredential(cred.Info.(*Cert).EDHOC(false).IDCred); err != nil {
					t.Error(err)
					return
				}
				v.Cache.Put(&Cert{KID: []byte{byte(g), byte(i)}})
				v.Cache.Len()
			}
		})
	}
	wg.Wait()
}

func BenchmarkResolveByValue(b *testing.B) {
	v, _ := newVerifier(KindOperator)
	idCred := byValue(mustIssue(b, claimsFor(KindOperator, RoleAdmin)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.ResolveCredential(idCred); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResolveByKID(b *testing.B) {
	v, _ := newVerifier(KindOperator)
	cred, err := v.ResolveCredential(byValue(mustIssue(b, claimsFor(KindOperator, RoleAdmin))))
	if err != nil {
		b.Fatal(err)
	}
	idCred := cred.Info.(*Cert).EDHOC(false).IDCred
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.ResolveCredential(idCred); err != nil {
			b.Fatal(err)
		}
	}
}
