package filetrust

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
