package filetrust

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gatewayd/gatewayd/internal/filetrust/filetrusttest"
)

// TestReadFile: a regular file within its bound reads; one byte more is
// refused; a symlink in a trusted directory to a file in another is
// followed; a FIFO is refused without blocking.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, bytes.Repeat([]byte("x"), 100), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(p, Public, 100); err != nil || len(b) != 100 {
		t.Fatalf("at the bound: %d bytes, %v", len(b), err)
	}
	if _, err := ReadFile(p, Public, 99); !errors.Is(err, ErrTooLarge) {
		t.Errorf("one byte over: %v", err)
	}
	if _, err := ReadFile(p, Secret, 100); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "chmod 600 "+p) {
		t.Errorf("0644 secret: %v", err)
	}
	other := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(p, other); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(other, Public, 100); err != nil {
		t.Errorf("symlink between trusted directories: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(fifo, Secret, 100); !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "FIFO") {
		t.Errorf("FIFO: %v", err)
	}
}

// TestCheckDirsSticky: a sticky directory anyone may write (/tmp) is
// trusted, since nobody else can rename or remove what is in it; the same
// directory without the sticky bit is not.
func TestCheckDirsSticky(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "f")
	if err := CheckDirs(p); err != nil {
		t.Errorf("sticky 1777: %v", err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := CheckDirs(p); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "chmod go-w "+dir) {
		t.Errorf("0777: %v", err)
	}
}

// TestUnreadableSaysWhoAndHow: a file gatewayd's user may not read, a
// secret it may not read, and a file under a directory it may not enter
// are refused with ErrUnreadable, naming the file (or the directory), the
// user gatewayd runs as, and the command that fixes it; never a bare
// "permission denied". As root (CI) the reads run in a child process as
// nobody (uid 65534), since root reads everything.
func TestUnreadableSaysWhoAndHow(t *testing.T) {
	if os.Getenv("FILETRUST_CHILD") != "" {
		for _, c := range []struct {
			path string
			kind Kind
		}{{os.Getenv("FILETRUST_PUB"), Public}, {os.Getenv("FILETRUST_SECRET"), Secret}, {os.Getenv("FILETRUST_LOCKED"), Public}} {
			_, err := ReadFile(c.path, c.kind, 100)
			fmt.Printf("RESULT %s unreadable=%v: %v\n", c.path, errors.Is(err, ErrUnreadable), err)
		}
		return
	}
	base := t.TempDir()
	pub, secret := filepath.Join(base, "fleet-root.pem"), filepath.Join(base, "mqtt.pass")
	locked := filepath.Join(base, "locked")
	for _, p := range []string{pub, secret} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(locked, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(locked, "gateway.cwt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(locked, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(locked, 0o700) })
	env := []string{"FILETRUST_CHILD=1", "FILETRUST_PUB=" + pub, "FILETRUST_SECRET=" + secret,
		"FILETRUST_LOCKED=" + filepath.Join(locked, "gateway.cwt")}
	user := "the test's user"
	var out []byte
	if os.Geteuid() == 0 {
		out = filetrusttest.RunAsNobody(t, base, "TestUnreadableSaysWhoAndHow", env)
		user = "uid 65534"
	} else {
		cmd := exec.Command(os.Args[0], "-test.run=^TestUnreadableSaysWhoAndHow$", "-test.count=1")
		cmd.Env = append(os.Environ(), env...)
		var err error
		if out, err = cmd.CombinedOutput(); err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
	}
	results := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "RESULT "); ok {
			path, msg, _ := strings.Cut(rest, " ")
			results[path] = msg
		}
	}
	for path, wants := range map[string][]string{
		pub:                                  {"unreadable=true", pub + ": gatewayd runs as", "may not read it (mode 0000", "run: chmod 644 " + pub},
		secret:                               {"unreadable=true", "may not read it", "&& chmod 600 " + secret, "run: chown "},
		filepath.Join(locked, "gateway.cwt"): {"unreadable=true", "may not enter its directory " + locked, "(mode 0000", "&& chmod g+x " + locked},
	} {
		got, ok := results[path]
		if !ok {
			t.Errorf("%s: no result from the child:\n%s", path, out)
			continue
		}
		t.Logf("%s", got)
		for _, w := range wants {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", path, got, w)
			}
		}
		if os.Geteuid() == 0 && !strings.Contains(got, "uid 65534") {
			t.Errorf("%s: %q does not name %s", path, got, user)
		}
	}
}
