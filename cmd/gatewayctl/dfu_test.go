package main

import (
	"archive/zip"
	"bytes"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/dfu"
)

// dfuFixture makes a DFU key with dfu keygen and a package with dfu
// package (version 3, hardware 52, SoftDevice 0x0101) in a new directory;
// p names a file in it.
func dfuFixture(t *testing.T) (p func(string) string, packageOut string) {
	t.Helper()
	d := t.TempDir()
	p = func(n string) string { return filepath.Join(d, n) }
	if code, out, errs := runCode(t, "dfu", "keygen", "-o", p("dfu.key")); code != exitOK {
		t.Fatal(out, errs)
	}
	fw := make([]byte, 10000)
	for i := range fw {
		fw[i] = byte(i * 7)
	}
	if err := os.WriteFile(p("lock_app.bin"), fw, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCode(t, "dfu", "package", "-key", p("dfu.key"), "-app", p("lock_app.bin"),
		"-fw-version", "3", "-hw-version", "52", "-sd-req", "0x0101,0x0102", "-o", p("pkg.zip"))
	if code != exitOK || errs != "" {
		t.Fatalf("dfu package: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	return p, out
}

var initHashLine = regexp.MustCompile(`(?m)^init hash \(enter-dfu's init_hash, SHA-256 of lock_app\.dat\): ([0-9a-f]{64})$`)

// TestDFURoundTrip: dfu keygen writes a P-256 key (0600) and its public
// half and refuses to overwrite it; dfu package writes a package that
// firmware/dfu parses and verifies under that key, with the image, versions
// and SoftDevices given, and prints the init hash the gateway computes
// ((*Image).InitHash, the .dat's SHA-256); dfu verify accepts it against
// the lock's hardware, SoftDevice and version, and prints the same hash.
func TestDFURoundTrip(t *testing.T) {
	p, out := dfuFixture(t)
	if st, err := os.Stat(p("dfu.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key: %v %v", st, err)
	}
	if code, _, errs := runCode(t, "dfu", "keygen", "-o", p("dfu.key")); code != exitFailed || !strings.Contains(errs, "refusing to overwrite") {
		t.Errorf("keygen over a key: exit %d, %q", code, errs)
	}
	pub, err := readDFUPublicKey(p("dfu.key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(p("pkg.zip"))
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := dfu.Parse(raw, dfu.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pkg.Verify(dfu.Policy{Key: pub, Device: dfu.Device{HWVersion: 52, SoftDeviceFWID: 0x0102, AppVersion: 3}}); err != nil {
		t.Fatal(err)
	}
	fw, _ := os.ReadFile(p("lock_app.bin"))
	img := pkg.Images[0]
	init := img.InitPacket.Init
	if len(pkg.Images) != 1 || img.Kind != dfu.KindApplication || img.BinFile != "lock_app.bin" || !bytes.Equal(img.Firmware, fw) ||
		init.GetFwVersion() != 3 || init.GetHwVersion() != 52 || len(init.GetSdReq()) != 2 || init.GetSdReq()[1] != 0x0102 {
		t.Fatalf("package: %s %s %d bytes, init %v", img.Kind, img.BinFile, len(img.Firmware), init)
	}
	// Byte for byte firmware/dfu's Generate for the same arguments
	// (nrfutil's layout; dfu.Sign is deterministic, RFC 6979).
	key, err := readDFUPrivateKey(p("dfu.key"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := dfu.Generate(dfu.Spec{Key: key, HWVersion: 52, SDReq: []uint32{0x0101, 0x0102},
		Images: []dfu.ImageSpec{{Kind: dfu.KindApplication, Name: "lock_app", Firmware: fw, FWVersion: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, want) {
		t.Error("dfu package's zip differs from dfu.Generate's")
	}
	h := img.InitHash()
	m := initHashLine.FindStringSubmatch(out)
	if m == nil || m[1] != hex.EncodeToString(h[:]) {
		t.Errorf("package printed %q, want init hash %x", out, h)
	}
	if !strings.Contains(out, "application lock_app.bin: 10000 bytes, fw_version 3, hw_version 52, sd_req 0x0101,0x0102") {
		t.Errorf("package output: %s", out)
	}
	code, vout, errs := runCode(t, "dfu", "verify", "-pub", p("dfu.key.pub"), "-hw-version", "52", "-sd", "0x0102", "-lock-fw-version", "3", p("pkg.zip"))
	if code != exitOK || errs != "" {
		t.Fatalf("verify: exit %d\nstdout: %s\nstderr: %s", code, vout, errs)
	}
	for _, s := range []string{"verified", "hw_version 52", "sd_req names 0x0102", "fw_version not below 3", "image hash"} {
		if !strings.Contains(vout, s) {
			t.Errorf("verify output lacks %q: %s", s, vout)
		}
	}
	if m := initHashLine.FindStringSubmatch(vout); m == nil || m[1] != hex.EncodeToString(h[:]) {
		t.Errorf("verify printed %q, want init hash %x", vout, h)
	}
}

// tamper rewrites the package's lock_app.bin with one byte changed (same
// size), as an attacker with the package but not the key could.
func tamper(t *testing.T, in, out string) {
	t.Helper()
	zr, err := zip.OpenReader(in)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if f.Name == "lock_app.bin" {
			b[100] ^= 0x01
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.Name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAttackDFUVerifyRefuses: dfu verify refuses, with exit 1 and the
// reason on stderr (nothing "verified" on stdout), a package signed by
// another DFU key, one for other hardware, one for another SoftDevice, a
// downgrade (the lock runs a higher version) and one whose image was
// changed after signing.
func TestAttackDFUVerifyRefuses(t *testing.T) {
	p, _ := dfuFixture(t)
	if code, out, errs := runCode(t, "dfu", "keygen", "-o", p("other.key")); code != exitOK {
		t.Fatal(out, errs)
	}
	tamper(t, p("pkg.zip"), p("tampered.zip"))
	for _, c := range []struct {
		name   string
		args   []string
		reason string
	}{
		{"other key", []string{"-pub", p("other.key.pub"), p("pkg.zip")}, "signature does not verify"},
		{"wrong hardware", []string{"-pub", p("dfu.key.pub"), "-hw-version", "53", p("pkg.zip")}, "wrong hardware version: package for hardware 52, lock is 53"},
		{"wrong SoftDevice", []string{"-pub", p("dfu.key.pub"), "-sd", "0x0103", p("pkg.zip")}, "SoftDevice requirement not met"},
		{"downgrade", []string{"-pub", p("dfu.key.pub"), "-hw-version", "52", "-lock-fw-version", "4", p("pkg.zip")}, "firmware version too low: version 3 below the lock's 4"},
		{"tampered image", []string{"-pub", p("dfu.key.pub"), p("tampered.zip")}, "firmware hash mismatch: lock_app.bin"},
		{"not a package", []string{"-pub", p("dfu.key.pub"), p("lock_app.bin")}, "not a valid zip"},
	} {
		code, out, errs := runCode(t, append([]string{"dfu", "verify"}, c.args...)...)
		if code != exitFailed || !strings.Contains(errs, "refused") || !strings.Contains(errs, c.reason) || strings.Contains(out, "verified") {
			t.Errorf("%s: exit %d, want %d with %q\nstdout: %s\nstderr: %s", c.name, code, exitFailed, c.reason, out, errs)
		}
	}
	// The untampered package still passes with the right key.
	if code, out, errs := runCode(t, "dfu", "verify", "-pub", p("dfu.key.pub"), "-hw-version", "52", p("pkg.zip")); code != exitOK {
		t.Errorf("verify: exit %d\n%s%s", code, out, errs)
	}
}

// TestDFUUsage: dfu's usage errors exit 2 (no subcommand, an unknown one,
// missing flags, a bad number, sd_req 0x00, a public key for -key); a
// file that is not there exits 1.
func TestDFUUsage(t *testing.T) {
	p, _ := dfuFixture(t)
	pkg := func(extra ...string) []string {
		return append([]string{"dfu", "package", "-key", p("dfu.key"), "-app", p("lock_app.bin"), "-hw-version", "52", "-o", p("x.zip")}, extra...)
	}
	for _, c := range []struct {
		name string
		args []string
		want int
	}{
		{"no subcommand", []string{"dfu"}, exitUsage},
		{"unknown subcommand", []string{"dfu", "frob"}, exitUsage},
		{"keygen without -o", []string{"dfu", "keygen"}, exitUsage},
		{"package without -fw-version", pkg("-sd-req", "0x0101"), exitUsage},
		{"package without -sd-req", pkg("-fw-version", "3"), exitUsage},
		{"fw-version not a number", pkg("-fw-version", "three", "-sd-req", "0x0101"), exitUsage},
		{"fw-version over 32 bits", pkg("-fw-version", "4294967296", "-sd-req", "0x0101"), exitUsage},
		{"sd-req 0x00", pkg("-fw-version", "3", "-sd-req", "0x00"), exitUsage},
		{"sd-req not hex", pkg("-fw-version", "3", "-sd-req", "s132"), exitUsage},
		{"public key as -key", []string{"dfu", "package", "-key", p("dfu.key.pub"), "-app", p("lock_app.bin"), "-fw-version", "3",
			"-hw-version", "52", "-sd-req", "0x0101", "-o", p("x.zip")}, exitFailed},
		{"missing image", []string{"dfu", "package", "-key", p("dfu.key"), "-app", p("nope.bin"), "-fw-version", "3",
			"-hw-version", "52", "-sd-req", "0x0101", "-o", p("x.zip")}, exitFailed},
		{"verify without package", []string{"dfu", "verify", "-pub", p("dfu.key.pub")}, exitUsage},
		{"verify without -pub", []string{"dfu", "verify", p("pkg.zip")}, exitUsage},
		{"verify missing package", []string{"dfu", "verify", "-pub", p("dfu.key.pub"), p("nope.zip")}, exitFailed},
		{"private key as -pub", []string{"dfu", "verify", "-pub", p("dfu.key"), p("pkg.zip")}, exitFailed},
	} {
		if code, out, errs := runCode(t, c.args...); code != c.want {
			t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", c.name, code, c.want, out, errs)
		}
	}
	if _, err := os.Stat(p("x.zip")); err == nil {
		t.Error("a refused dfu package wrote its output")
	}
}

// TestDFUHelp: dfu -h and help dfu list the subcommands; each
// subcommand's -h and `help dfu SUB` print its own usage line and flags on
// stdout, nothing on stderr, exit 0; gatewayctl help lists dfu.
func TestDFUHelp(t *testing.T) {
	for _, args := range [][]string{{"dfu", "-h"}, {"help", "dfu"}, {"dfu", "help"}} {
		code, out, errs := runCode(t, args...)
		if code != exitOK || errs != "" || !strings.HasPrefix(out, "usage: gatewayctl dfu ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
		for _, sub := range []string{"keygen", "package", "verify"} {
			if !strings.Contains(out, "  "+sub+" ") {
				t.Errorf("%q lacks %s: %s", args, sub, out)
			}
		}
	}
	flagsOf := map[string][]string{
		"keygen":  {"-o"},
		"package": {"-key", "-app", "-fw-version N", "-hw-version N", "-sd-req", "-o"},
		"verify":  {"-pub", "-hw-version N", "-sd FWID", "-lock-fw-version N"},
	}
	for sub, fl := range flagsOf {
		for _, args := range [][]string{{"dfu", sub, "-h"}, {"dfu", sub, "-help"}, {"help", "dfu", sub}, {"dfu", "help", sub}} {
			code, out, errs := runCode(t, args...)
			if code != exitOK || errs != "" || !strings.HasPrefix(out, "usage: gatewayctl dfu "+sub+" ") || !strings.Contains(out, "Exit status:") {
				t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errs)
			}
			for _, f := range fl {
				if !strings.Contains(out, "  "+f) {
					t.Errorf("%q lacks %s: %s", args, f, out)
				}
			}
		}
	}
	if _, out, _ := runCode(t, "help"); !strings.Contains(out, "\n  dfu keygen ") || !strings.Contains(out, "\n  dfu verify ") {
		t.Errorf("help does not list dfu: %s", out)
	}
}
