package mosquitto

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// PKI is a throwaway certificate authority for tests and the demo: a CA,
// a server certificate for 127.0.0.1, and client certificates by CN,
// written as PEM files in Dir (keys mode 0600). Production certificates
// come from the fleet's own CA.
type PKI struct {
	Dir  string
	Pool *x509.CertPool // the CA, for a client's RootCAs

	mu  sync.Mutex
	ca  *x509.Certificate
	key *ecdsa.PrivateKey
	seq int64
}

// NewPKI makes a CA valid for a day and the server certificate
// (server.crt, server.key) in dir.
func NewPKI(dir string) (*PKI, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "throwaway fleet CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, Pool: x509.NewCertPool(), key: key, seq: 1}
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	p.Pool.AddCert(p.ca)
	if err := write(filepath.Join(dir, "ca.crt"), "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	if _, err := p.Issue("server", true); err != nil {
		return nil, err
	}
	return p, nil
}

// CAFile is the CA certificate's path.
func (p *PKI) CAFile() string { return filepath.Join(p.Dir, "ca.crt") }

// CertFile and KeyFile are the paths of cn's certificate and key.
func (p *PKI) CertFile(cn string) string { return filepath.Join(p.Dir, cn+".crt") }

// KeyFile is the path of cn's private key.
func (p *PKI) KeyFile(cn string) string { return filepath.Join(p.Dir, cn+".key") }

// Issue makes a certificate for cn (a server certificate for 127.0.0.1
// if server, else a client one), writes cn.crt and cn.key, and returns it.
func (p *PKI) Issue(cn string, server bool) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	p.mu.Lock()
	p.seq++
	serial := p.seq
	p.mu.Unlock()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := write(p.CertFile(cn), "CERTIFICATE", der, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	if err := write(p.KeyFile(cn), "EC PRIVATE KEY", kder, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func write(path, typ string, der []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return fmt.Errorf("mosquitto: write %s: %w", path, err)
	}
	return nil
}
