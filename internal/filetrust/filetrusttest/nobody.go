// Package filetrusttest helps tests of what gatewayd's user may not read:
// tests run as root (CI), who reads everything, so RunAsNobody runs a test
// of the same binary as another user.
//
// It imports only the standard library.
package filetrusttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Nobody is the uid and gid RunAsNobody runs as.
const Nobody = 65534

// RunAsNobody runs test name of this test binary as uid and gid 65534,
// with env added, and returns its output. The binary is copied into dir
// (a t.TempDir), whose directories below os.TempDir are made searchable
// for the child; nothing above it is changed.
func RunAsNobody(t *testing.T, dir, name string, env []string) []byte {
	t.Helper()
	bin := filepath.Join(dir, "child.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Clean(os.TempDir())
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if !strings.HasPrefix(d, tmp+string(filepath.Separator)) {
				t.Fatalf("%s is not searchable by others: set TMPDIR to a directory nobody (uid 65534) can reach", d)
			}
			if err := os.Chmod(d, fi.Mode().Perm()|0o055); err != nil {
				t.Fatal(err)
			}
		}
	}
	cmd := exec.Command(bin, "-test.run=^"+name+"$", "-test.count=1")
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: Nobody, Gid: Nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child as nobody: %v\n%s", err, out)
	}
	return out
}
