package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
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
