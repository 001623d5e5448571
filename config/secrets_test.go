package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMQTTSecrets: the password comes from a 0600 file and a looser one
// is refused; a CA file must hold a certificate.
func TestMQTTSecrets(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tc, got, err := MQTTSecrets(MQTT{Username: "u", PasswordFile: pw})
	if err != nil || got != "hunter2" || tc != nil {
		t.Fatalf("password file: %q %v %v", got, tc, err)
	}
	if err := os.Chmod(pw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := MQTTSecrets(MQTT{Username: "u", PasswordFile: pw}); !errors.Is(err, ErrPermissions) {
		t.Errorf("world-readable password file: %v", err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := MQTTSecrets(MQTT{CAFile: ca}); err == nil {
		t.Error("a CA file without a certificate was accepted")
	}
}

// TestAttackTLSFilesNotRegular: a CA, certificate or key file that is a
// FIFO is refused before it is opened (opening it would block the start
// until something writes to it), and a CA file larger than a certificate
// bundle can be is refused before it is read.
func TestAttackTLSFilesNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, m := range []MQTT{{CAFile: fifo}, {CertFile: fifo, KeyFile: fifo}} {
		done := make(chan error, 1)
		go func() { _, _, err := MQTTSecrets(m); done <- err }()
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second): // a safety net: the fix returns at once
			if f, oerr := os.OpenFile(fifo, os.O_WRONLY, 0); oerr == nil {
				_ = f.Close()
			}
			<-done
			t.Fatalf("%+v: blocked on the FIFO", m)
		}
		if !errors.Is(err, ErrPermissions) || !strings.Contains(err.Error(), fifo+" is a FIFO") {
			t.Errorf("%+v: %v", m, err)
		}
	}
	big := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 64<<20); err != nil {
		t.Fatal(err)
	}
	if _, _, err := MQTTSecrets(MQTT{CAFile: big}); !errors.Is(err, ErrKeys) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("64 MiB CA file: %v", err)
	}
}
