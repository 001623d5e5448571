package cred

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/edhoc"
)

// FuzzParse feeds arbitrary bytes to every decoder of the package, three
// ways:
//
//  1. as a credential, to Parse: anything accepted must be exactly what
//     Issue produces for its claims;
//  2. as a claims payload, signed here by the test root so that it gets
//     past the signature check into the claims decoder, with the same
//     property;
//  3. as an ID_CRED, to a Verifier: every error wraps exactly one of
//     edhoc.ErrUnknownCredential and edhoc.ErrCredentialRejected.
//
// The seeds are real credentials of every kind, their payloads and their
// ID_CREDs.
func FuzzParse(f *testing.F) {
	for _, k := range allKinds {
		raw := mustIssue(f, claimsFor(k.kind, k.role))
		f.Add(raw)
		f.Add([]byte(parts(f, raw).Payload))
		f.Add(byValue(raw))
		c, err := Parse(raw, testRoots())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(c.EDHOC(false).IDCred)
	}
	f.Add(canonicalLockPayload())
	f.Add([]byte{})
	f.Add([]byte{0xa0})

	roots := testRoots()
	v := &Verifier{
		Roots: roots,
		Now:   func() time.Time { return t0.Add(time.Hour) },
		Kinds: []Kind{KindLock, KindGateway, KindOperator, KindUser},
		Cache: NewCache(4),
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// 1. As a credential.
		if c, err := Parse(data, roots); err == nil {
			checkAccepted(t, c, data)
		} else if c != nil {
			t.Fatal("Parse returned a Cert and an error")
		}

		// 2. As a claims payload, correctly signed.
		if len(data) <= MaxSize {
			signed := signPayload(t, rootKey, rootKID, data)
			if c, err := Parse(signed, roots); err == nil {
				checkAccepted(t, c, signed)
			} else if len(signed) <= MaxSize && (errors.Is(err, ErrBadSignature) || errors.Is(err, ErrUnknownRoot)) {
				t.Fatalf("correctly signed payload refused for its signature: %v", err)
			}
		}

		// 3. As an ID_CRED.
		cred, err := v.ResolveCredential(data)
		if err != nil {
			unknown := errors.Is(err, edhoc.ErrUnknownCredential)
			rejected := errors.Is(err, edhoc.ErrCredentialRejected)
			if unknown == rejected {
				t.Fatalf("error %q: unknown=%v rejected=%v", err, unknown, rejected)
			}
			return
		}
		if !bytes.Equal(cred.IDCred, data) {
			t.Fatalf("resolved ID_CRED %x is not the input %x", cred.IDCred, data)
		}
	})
}

// checkAccepted asserts the properties of an accepted credential: it is the
// canonical encoding of its claims (so reissuing it gives the same bytes),
// and its kid follows the rule.
func checkAccepted(t *testing.T, c *Cert, raw []byte) {
	t.Helper()
	if !bytes.Equal(c.Raw, raw) {
		t.Fatal("Raw differs from the input")
	}
	re, err := Issue(rootKey, c.RootKID, c.Claims)
	if err != nil {
		t.Fatalf("accepted claims cannot be issued: %v", err)
	}
	if !bytes.Equal(re, raw) {
		t.Fatalf("accepted credential is not canonical:\n got %x\nwant %x", raw, re)
	}
	kid, err := KID(c.Kind, c.Subject)
	if err != nil || !bytes.Equal(kid, c.KID) {
		t.Fatalf("kid %x breaks the rule (%x, %v)", c.KID, kid, err)
	}
	if c.Effective()&^Cap(c.Kind, c.Role) != 0 {
		t.Fatal("effective permissions exceed the cap")
	}
}
