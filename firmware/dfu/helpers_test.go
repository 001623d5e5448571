package dfu

import (
	"archive/zip"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"testing"
)

// testKey is a fixed P-256 key derived from a label.
func testKey(t testing.TB, label string) *ecdsa.PrivateKey {
	t.Helper()
	d := sha256.Sum256([]byte("dfu test key: " + label))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// lock is the lock the test packages are for.
var lock = Device{HWVersion: 52, SoftDeviceFWID: 0x0101, AppVersion: 2, BootloaderVersion: 1}

func firmware(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func appSpec(t testing.TB, version uint32, fw []byte) Spec {
	return Spec{
		Key:       testKey(t, "fleet"),
		HWVersion: lock.HWVersion,
		SDReq:     []uint32{0x0101},
		Images:    []ImageSpec{{Kind: KindApplication, Name: "lock_app", Firmware: fw, FWVersion: version}},
	}
}

func policy(t testing.TB) Policy {
	return Policy{Key: &testKey(t, "fleet").PublicKey, Device: lock}
}

func generate(t testing.TB, s Spec) []byte {
	t.Helper()
	b, err := Generate(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// zipOf writes files (name, content pairs, in order) as a stored zip.
func zipOf(t testing.TB, files ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := 0; i+1 < len(files); i += 2 {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: files[i], Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(files[i+1]))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// filesOf reads a zip's files.
func filesOf(t testing.TB, data []byte) map[string][]byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(rc)
		rc.Close()
		out[f.Name] = b.Bytes()
	}
	return out
}

const appManifest = `{
    "manifest": {
        "application": {
            "bin_file": "lock_app.bin",
            "dat_file": "lock_app.dat"
        }
    }
}`

// withInit returns an application package whose init packet is built from
// the spec's init command after edit, signed with key.
func withInit(t testing.TB, fw []byte, key *ecdsa.PrivateKey, edit func(*Spec, *ImageSpec)) []byte {
	t.Helper()
	s := appSpec(t, 3, fw)
	im := s.Images[0]
	if edit != nil {
		edit(&s, &im)
	}
	dat, err := InitPacketFor(s.InitCommand(im), key)
	if err != nil {
		t.Fatal(err)
	}
	return zipOf(t, "lock_app.bin", string(fw), "lock_app.dat", string(dat), ManifestName, appManifest)
}
