package cred

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/gatewayd/gatewayd/firmware/edhoc"
)

// Verifier decides whether a peer's credential is acceptable. It implements
// edhoc.CredentialResolver. Its fields must not change while it is in use;
// then it is safe for concurrent use.
type Verifier struct {
	// Roots are the trusted fleet roots.
	Roots Roots
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Kinds lists the kinds accepted from the peer. It fails closed: an
	// empty list accepts nothing.
	Kinds []Kind
	// Subject, if not empty, is the only subject accepted: a gateway that
	// connects to a given lock sets it to that lock's ID (16 hex digits),
	// so that another lock's valid credential is refused (misbinding,
	// RFC 9528 Appendix D.2).
	Subject string
	// Require lists permissions the peer must have (all of them) after the
	// cap is applied; 0 requires none.
	Require Perm
	// Cache, if not nil, stores credentials received by value and answers
	// ID_CRED {4: kid}. Without it, only credentials sent by value resolve.
	Cache *Cache
}

var _ edhoc.CredentialResolver = (*Verifier)(nil)

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Check applies the verifier's policy to a credential, in this order:
//
//  1. the credential's root is still in Roots with the same key; if not (or
//     if c did not come from [Parse]), c.Raw is parsed again under Roots
//     (ErrUnknownRoot, ErrBadSignature, ...);
//  2. its kind is in Kinds (ErrWrongKind);
//  3. if Subject is set, its subject equals it (ErrWrongSubject);
//  4. NotBefore <= Now() < Expiry (ErrNotYetValid, ErrExpired);
//  5. its effective permissions include Require (ErrMissingPermission).
//
// It returns the credential to use: c itself, or the re-parsed one.
func (v *Verifier) Check(c *Cert) (*Cert, error) {
	if k, ok := v.Roots[string(c.RootKID)]; !ok || c.rootKey == nil || !bytes.Equal(k, c.rootKey) {
		again, err := Parse(c.Raw, v.Roots)
		if err != nil {
			return nil, err
		}
		c = again
	}
	if !slices.Contains(v.Kinds, c.Kind) {
		return nil, fmt.Errorf("%w: %v credential %q, accepted %v", ErrWrongKind, c.Kind, c.Subject, v.Kinds)
	}
	if v.Subject != "" && c.Subject != v.Subject {
		return nil, fmt.Errorf("%w: %v credential %q, want %q", ErrWrongSubject, c.Kind, c.Subject, v.Subject)
	}
	if err := c.CheckAt(v.now()); err != nil {
		return nil, err
	}
	if v.Require != 0 && !c.Allows(v.Require) {
		return nil, fmt.Errorf("%w: %v credential %q has %v, needs %v", ErrMissingPermission, c.Kind, c.Subject, c.Effective(), v.Require)
	}
	return c, nil
}

// Verify parses raw under Roots and applies [Verifier.Check]. It does not
// use the cache. Errors wrap only this package's sentinels.
func (v *Verifier) Verify(raw []byte) (*Cert, error) {
	c, err := Parse(raw, v.Roots)
	if err != nil {
		return nil, err
	}
	return v.Check(c)
}

// ResolveCredential implements edhoc.CredentialResolver. idCred must be,
// in deterministic CBOR, exactly one of
//
//   - {13: CWT} ('kcwt', the credential embedded as a data item): it is
//     parsed, checked ([Verifier.Verify]) and, if accepted, stored in Cache;
//   - {4: h'kid'}: the credential is taken from Cache and checked again
//     ([Verifier.Check]): root, kind, validity and permissions.
//
// The returned Credential is [Cert.EDHOC] of the accepted credential; its
// Info is the *Cert.
//
// Every error wraps two sentinels, made with fmt.Errorf("%w: %w", ...):
//
//   - edhoc.ErrUnknownCredential and ErrUnknownKID on a cache miss;
//   - edhoc.ErrUnknownCredential and ErrMalformed or ErrUnsupportedIDCred
//     when idCred is not one of the two forms above;
//   - edhoc.ErrCredentialRejected and this package's reason (ErrTooLarge,
//     ErrMalformed, ErrUnknownRoot, ErrBadSignature, ErrInvalidClaims,
//     ErrBadKID, ErrWrongKind, ErrWrongSubject, ErrExpired, ErrNotYetValid,
//     ErrMissingPermission) when a credential was found but refused.
func (v *Verifier) ResolveCredential(idCred []byte) (edhoc.Credential, error) {
	kid, cwt, err := parseIDCred(idCred)
	if err != nil {
		return edhoc.Credential{}, fmt.Errorf("%w: %w", edhoc.ErrUnknownCredential, err)
	}
	if cwt != nil {
		c, err := v.Verify(cwt)
		if err != nil {
			return edhoc.Credential{}, fmt.Errorf("%w: %w", edhoc.ErrCredentialRejected, err)
		}
		if v.Cache != nil {
			v.Cache.Put(c)
		}
		return c.EDHOC(true), nil
	}
	var c *Cert
	if v.Cache != nil {
		c, _ = v.Cache.Get(kid)
	}
	if c == nil {
		return edhoc.Credential{}, fmt.Errorf("%w: %w: %x", edhoc.ErrUnknownCredential, ErrUnknownKID, kid)
	}
	c, err = v.Check(c)
	if err != nil {
		return edhoc.Credential{}, fmt.Errorf("%w: %w", edhoc.ErrCredentialRejected, err)
	}
	return c.EDHOC(false), nil
}

// parseIDCred splits ID_CRED into a kid (for {4: kid}) or a CWT (for
// {13: CWT}); exactly one is non-nil on success.
func parseIDCred(idCred []byte) (kid, cwt []byte, err error) {
	if len(idCred) > 2 && idCred[0] == 0xa1 && idCred[1] == labelKCWT {
		// The CWT's own strict parse rejects trailing bytes.
		return nil, idCred[2:], nil
	}
	if len(idCred) > 2 && idCred[0] == 0xa1 && idCred[1] == labelKID {
		if idCred[2]>>5 == 2 && decMode.Unmarshal(idCred[2:], &kid) == nil &&
			len(kid) > 0 && bytes.Equal(idCredKID(kid), idCred) {
			return kid, nil, nil
		}
		return nil, nil, fmt.Errorf("%w: ID_CRED {4: kid}: kid must be a non-empty bstr in deterministic encoding", ErrMalformed)
	}
	var m map[int64]cbor.RawMessage
	if err := decMode.Unmarshal(idCred, &m); err != nil {
		return nil, nil, fmt.Errorf("%w: ID_CRED: %w", ErrMalformed, err)
	}
	labels := make([]int64, 0, len(m))
	for l := range m {
		labels = append(labels, l)
	}
	slices.Sort(labels)
	if len(labels) == 1 && (labels[0] == labelKID || labels[0] == labelKCWT) {
		return nil, nil, fmt.Errorf("%w: ID_CRED map not in deterministic encoding", ErrMalformed)
	}
	return nil, nil, fmt.Errorf("%w: ID_CRED labels %v, want exactly 4 (kid) or 13 (kcwt)", ErrUnsupportedIDCred, labels)
}
