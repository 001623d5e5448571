package channeltest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/frame"
)

// TB is the part of testing.TB the fixtures use, so that the demo command
// can use them too.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Fleet is a test fleet: a root key and credentials it issued. Keys are
// derived from a name, so fixtures are reproducible.
type Fleet struct {
	Name    string
	Root    ed25519.PrivateKey
	RootKID []byte
	Roots   cred.Roots
	// Now is the fleet's clock for validity checks.
	Now time.Time
}

// Party is a credential with its private key.
type Party struct {
	Cert *cred.Cert
	Key  ed25519.PrivateKey
}

// Seed derives a 32-byte key seed from a label (test fixtures only).
func Seed(label string) []byte {
	h := sha256.Sum256([]byte("gatewayd test seed: " + label))
	return h[:]
}

// NewFleet makes a fleet whose root key is derived from name.
func NewFleet(tb TB, name string) *Fleet {
	tb.Helper()
	root := ed25519.NewKeyFromSeed(Seed(name + "/root"))
	pub := root.Public().(ed25519.PublicKey)
	f := &Fleet{Name: name, Root: root, RootKID: cred.RootKID(pub), Roots: cred.Roots{},
		Now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	f.Roots.Add(f.RootKID, pub)
	return f
}

// Issue issues a credential for a new key derived from sub. Zero validity
// times default to a window around f.Now.
func (f *Fleet) Issue(tb TB, c cred.Claims) Party {
	tb.Helper()
	key := ed25519.NewKeyFromSeed(Seed(f.Name + "/" + c.Kind.String() + "/" + c.Subject))
	c.PublicKey = key.Public().(ed25519.PublicKey)
	if c.NotBefore.IsZero() {
		c.NotBefore = f.Now.Add(-24 * time.Hour)
	}
	if c.Expiry.IsZero() {
		c.Expiry = f.Now.Add(365 * 24 * time.Hour)
	}
	if c.Issuer == "" {
		c.Issuer = "fleet-root"
	}
	raw, err := cred.Issue(f.Root, f.RootKID, c)
	if err != nil {
		tb.Fatalf("issue %s %q: %v", c.Kind, c.Subject, err)
	}
	cert, err := cred.Parse(raw, f.Roots)
	if err != nil {
		tb.Fatalf("parse %s %q: %v", c.Kind, c.Subject, err)
	}
	return Party{Cert: cert, Key: key}
}

// Lock issues a lock credential for lock number n.
func (f *Fleet) Lock(tb TB, n uint64) Party {
	var id [8]byte
	binary.BigEndian.PutUint64(id[:], n)
	return f.Issue(tb, cred.Claims{Subject: cred.LockSubject(id), Kind: cred.KindLock})
}

// Gateway issues a gateway credential.
func (f *Fleet) Gateway(tb TB, name string) Party {
	return f.Issue(tb, cred.Claims{Subject: name, Kind: cred.KindGateway, Perms: cred.GatewayPerms})
}

// Operator issues an operator credential with role r.
func (f *Fleet) Operator(tb TB, name string, r cred.Role) Party {
	perms := cred.OperatorPerms
	if r == cred.RoleAdmin {
		perms = cred.AdminPerms
	}
	return f.Issue(tb, cred.Claims{Subject: name, Kind: cred.KindOperator, Role: r, Perms: perms})
}

// Verifier returns a verifier of this fleet accepting kinds, on f's clock,
// with a fresh cache.
func (f *Fleet) Verifier(kinds ...cred.Kind) *cred.Verifier {
	return &cred.Verifier{Roots: f.Roots, Now: func() time.Time { return f.Now }, Kinds: kinds,
		Cache: cred.NewCache(16)}
}

// GatewayConfig is the channel config of a gateway that talks to locks.
func (f *Fleet) GatewayConfig(p Party) channel.Config {
	return channel.Config{Cert: p.Cert, Key: p.Key, Verifier: f.Verifier(cred.KindLock),
		Frame: frameOpts(f)}
}

// LockConfig is the channel config of a lock that accepts gateways,
// operators and users.
func (f *Fleet) LockConfig(p Party) channel.Config {
	return channel.Config{Cert: p.Cert, Key: p.Key,
		Verifier: f.Verifier(cred.KindGateway, cred.KindOperator, cred.KindUser), Frame: frameOpts(f)}
}

func frameOpts(f *Fleet) frame.Options {
	return frame.Options{Now: func() time.Time { return f.Now }}
}
