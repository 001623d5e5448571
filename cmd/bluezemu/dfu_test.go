package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
)

func writeKey(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDFUKeyRefused: -dfu-key refuses a missing file, a PEM that is not a
// public key, and a key that is not P-256, each naming the problem.
func TestDFUKeyRefused(t *testing.T) {
	dir := t.TempDir()
	k384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k384.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	writeKey(t, filepath.Join(dir, "p384.pem"), "PUBLIC KEY", der)
	writeKey(t, filepath.Join(dir, "priv.pem"), "EC PRIVATE KEY", []byte{1, 2, 3})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for file, want := range map[string]string{
		"missing.pem": "no such file",
		"priv.pem":    "want a PEM PUBLIC KEY",
		"p384.pem":    "want an ECDSA P-256 key",
	} {
		var out bytes.Buffer
		err := run(ctx, []string{"-bus", "unix:path=/nonexistent/socket", "-dfu-key", filepath.Join(dir, file)}, &out)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("-dfu-key %s: %v, want an error with %q", file, err, want)
		}
	}
}

// TestDFUHostsWholeLocks: with -dfu-key the locks are hosted whole
// (application and bootloader) and say so.
func TestDFUHostsWholeLocks(t *testing.T) {
	dir := t.TempDir()
	bus, err := emulator.StartBus(t.Context(), dir)
	if err != nil {
		t.Fatalf("%v (needs dbus-daemon: run scripts/deps.sh)", err)
	}
	defer bus.Close()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "dfu.pem")
	writeKey(t, key, "PUBLIC KEY", der)
	sock := filepath.Join(dir, "ctl.sock")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		done <- run(ctx, []string{"-bus", bus.Addr, "-locks", "2", "-dfu-key", key, "-control", sock}, &out)
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no control socket: %v\n%s", err, <-done)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), "dfu=true"); n != 2 {
		t.Fatalf("%d locks hosted whole, want 2:\n%s", n, out.String())
	}
}
