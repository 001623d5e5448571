package config

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/internal/filetrust/filetrusttest"
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

// TestUnreadableKeyFilesNameUserAndMode: an MQTT password file and a
// private key the daemon's user may not read (root made them, mode 0600)
// are refused with ErrPermissions, not ErrKeys, and the error names the
// key, the file, the user gatewayd runs as, and the chown and chmod that
// fix it; before, it said only "gateway keys unusable: permission
// denied". As root (CI), the reads run as nobody.
func TestUnreadableKeyFilesNameUserAndMode(t *testing.T) {
	if os.Getenv("CONFIG_CHILD") != "" {
		_, _, err := MQTTSecrets(MQTT{Username: "u", PasswordFile: os.Getenv("CONFIG_PW")})
		fmt.Printf("RESULT password permissions=%v keys=%v: %v\n", errors.Is(err, ErrPermissions), errors.Is(err, ErrKeys), err)
		_, err = LoadKeys(Keys{PrivateKey: os.Getenv("CONFIG_KEY")}, "dock-1", time.Now())
		fmt.Printf("RESULT key permissions=%v keys=%v: %v\n", errors.Is(err, ErrPermissions), errors.Is(err, ErrKeys), err)
		return
	}
	dir := t.TempDir()
	pw, key := filepath.Join(dir, "mqtt.pass"), filepath.Join(dir, "gateway.key")
	for _, p := range []string{pw, key} {
		if err := os.WriteFile(p, []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"CONFIG_CHILD=1", "CONFIG_PW=" + pw, "CONFIG_KEY=" + key}
	var out []byte
	if os.Geteuid() == 0 {
		out = filetrusttest.RunAsNobody(t, dir, "TestUnreadableKeyFilesNameUserAndMode", env)
	} else {
		for _, p := range []string{pw, key} {
			if err := os.Chmod(p, 0); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestUnreadableKeyFilesNameUserAndMode$", "-test.count=1")
		cmd.Env = append(os.Environ(), env...)
		var err error
		if out, err = cmd.CombinedOutput(); err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
	}
	for what, wants := range map[string][]string{
		"password": {"permissions=true keys=false", "mqtt.password_file: ", pw + ": gatewayd runs as", "gatewayd runs as", "may not read it", "chown ", " && chmod 600 " + pw},
		"key":      {"permissions=true keys=false", key, "gatewayd runs as", "may not read it", "chown ", " && chmod 600 " + key},
	} {
		var got string
		for _, line := range strings.Split(string(out), "\n") {
			if rest, ok := strings.CutPrefix(line, "RESULT "+what+" "); ok {
				got = rest
			}
		}
		t.Logf("%s: %s", what, got)
		for _, w := range wants {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", what, got, w)
			}
		}
		if os.Geteuid() == 0 && !strings.Contains(got, "user nobody (uid 65534)") {
			t.Errorf("%s: %q does not name the user", what, got)
		}
	}
}
