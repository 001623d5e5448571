package config

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/internal/atomicfile"
	"github.com/gatewayd/gatewayd/internal/filetrust"
)

// GatewayKeys are the gateway's identity and the fleet roots it trusts,
// loaded and cross-checked by LoadKeys.
type GatewayKeys struct {
	// Cert is the gateway credential, verified under Roots.
	Cert *cred.Cert
	// Key is the private key Cert certifies. Never log it.
	Key ed25519.PrivateKey
	// Roots are the trusted fleet roots.
	Roots cred.Roots
}

// LoadKeys reads the files k names and checks that they fit together: the
// private key file is mode 0600 (or stricter) and holds an Ed25519 key in
// PEM PKCS #8; every fleet root file holds an Ed25519 public key in PEM
// PKIX; the credential parses under those roots, is a gateway credential
// for gatewayID, certifies the private key's public key, and is valid at
// now. Every error names the file and the fix; none contains key bytes.
func LoadKeys(k Keys, gatewayID string, now time.Time) (*GatewayKeys, error) {
	key, err := ReadPrivateKey(k.PrivateKey)
	if err != nil {
		return nil, err
	}
	roots := cred.Roots{}
	for _, p := range k.FleetRoots {
		pub, err := ReadPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("fleet root: %w", err)
		}
		roots.Add(cred.RootKID(pub), pub)
	}
	raw, err := ReadPublic(k.Credential, MaxKeyFile)
	if err != nil {
		return nil, fmt.Errorf("gateway credential: %w", err)
	}
	c, err := cred.Parse(raw, roots)
	if err != nil {
		return nil, fmt.Errorf("%w: gateway credential %s does not verify under the fleet roots %s: %w",
			ErrKeys, k.Credential, strings.Join(k.FleetRoots, ", "), err)
	}
	if c.Kind != cred.KindGateway {
		return nil, fmt.Errorf("%w: %s is a %v credential, not a gateway credential", ErrKeys, k.Credential, c.Kind)
	}
	if c.Subject != gatewayID {
		return nil, fmt.Errorf("%w: %s is the credential of gateway %q, but gateway_id is %q", ErrKeys, k.Credential, c.Subject, gatewayID)
	}
	if !bytes.Equal(c.PublicKey, key.Public().(ed25519.PublicKey)) {
		return nil, fmt.Errorf("%w: %s certifies a different key than %s holds: issue a credential for this key", ErrKeys, k.Credential, k.PrivateKey)
	}
	if err := c.CheckAt(now); err != nil {
		return nil, fmt.Errorf("%w: %s: %w (valid %s to %s): renew the gateway credential", ErrKeys, k.Credential, err,
			c.NotBefore.Format(time.RFC3339), c.Expiry.Format(time.RFC3339))
	}
	return &GatewayKeys{Cert: c, Key: key, Roots: roots}, nil
}

// Bounds of what a file can hold; a larger one is refused before it is
// read (a misconfigured path to /dev/zero or a log file).
const (
	// MaxKeyFile bounds a key, a password, a credential or a fleet root.
	MaxKeyFile = 64 << 10
	// MaxCertFile bounds a PEM file of certificates (a CA bundle).
	MaxCertFile = 1 << 20
	// MaxConfigFile bounds the configuration file.
	MaxConfigFile = 1 << 20
)

// readFile reads a file gatewayd must be able to trust (internal/filetrust):
// a regular file (never a FIFO or a device: it is checked before it is
// opened, opened without blocking and checked again), at most max bytes,
// owned by root or the user gatewayd runs as (a secret: by that user, mode
// 0600), in directories nobody else can write. Errors wrap ErrPermissions
// for the file's type, owner or mode, else ErrKeys, and name the file and
// the command that fixes it.
func readFile(path string, kind filetrust.Kind, max int64) ([]byte, error) {
	b, err := filetrust.ReadFile(path, kind, max)
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, filetrust.ErrUntrusted), errors.Is(err, filetrust.ErrNotRegular), errors.Is(err, filetrust.ErrUnreadable):
		return nil, fmt.Errorf("%w: %w", ErrPermissions, err)
	default:
		return nil, fmt.Errorf("%w: %w", ErrKeys, err)
	}
}

// ReadSecret reads a secret file (a private key, a password): a regular
// file of at most MaxKeyFile bytes, owned by the user gatewayd runs as, that
// its group and others cannot read (see readFile). The content is
// returned without a trailing newline.
func ReadSecret(path string) ([]byte, error) {
	b, err := readFile(path, filetrust.Secret, MaxKeyFile)
	if err != nil {
		return nil, err
	}
	return bytes.TrimRight(b, "\r\n"), nil
}

// ReadPublic reads a file that is not secret but must not be changed by
// anyone else (a fleet root, a credential, a certificate): a regular file
// of at most max bytes, owned by root or the user gatewayd runs as, that
// its group and others cannot write (see readFile).
func ReadPublic(path string, max int64) ([]byte, error) {
	return readFile(path, filetrust.Public, max)
}

// ReadPrivateKey reads an Ed25519 private key in PEM PKCS #8 from a file
// only its owner can read (ReadSecret). Errors wrap ErrKeys or
// ErrPermissions and never contain key bytes.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := ReadSecret(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s: want a PEM \"PRIVATE KEY\" block (openssl genpkey -algorithm ed25519)", ErrKeys, path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: not a PKCS #8 private key", ErrKeys, path)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s: a %T, not an Ed25519 key", ErrKeys, path, k)
	}
	return ek, nil
}

// ReadPublicKey reads an Ed25519 public key in PEM PKIX from a file only
// root or gatewayd's user can change (ReadPublic). Errors wrap ErrKeys or
// ErrPermissions.
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := ReadPublic(path, MaxKeyFile)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: %s: want a PEM \"PUBLIC KEY\" block", ErrKeys, path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKeys, path, err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s: a %T, not an Ed25519 key", ErrKeys, path, k)
	}
	return ek, nil
}

// WritePrivateKey writes key as PEM PKCS #8, mode 0600, atomically (a
// temporary file renamed over path). For provisioning tools and tests.
func WritePrivateKey(path string, key ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// WritePublicKey writes pub as PEM PKIX, mode 0644.
func WritePublicKey(path string, pub ed25519.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}

// WriteFile writes b to path with mode perm, atomically.
func WriteFile(path string, b []byte, perm fs.FileMode) error { return writeAtomic(path, b, perm) }

func writeAtomic(path string, b []byte, perm fs.FileMode) error {
	return atomicfile.Write(path, perm, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}
