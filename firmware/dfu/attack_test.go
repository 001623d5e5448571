package dfu

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"errors"
	"hash/crc32"
	"testing"
)

// TestAttackZipBomb: an entry that inflates far past the limits is refused:
// by its header when it admits its size (ErrTooLarge, nothing inflated),
// and when the header lies, by archive/zip at the declared size (ErrZip)
// or by Parse's own bound at the limit (ErrTooLarge), never after
// inflating the whole stream.
func TestAttackZipBomb(t *testing.T) {
	const inflated = 4 << 20 // 4 MiB of zeros, 4 KiB deflated: 8 times the default image limit
	var comp bytes.Buffer
	fw, _ := flate.NewWriter(&comp, flate.BestCompression)
	zeros := make([]byte, 1<<20)
	for range inflated >> 20 {
		fw.Write(zeros)
	}
	fw.Close()
	crc := crc32.NewIEEE()
	for range inflated >> 20 {
		crc.Write(zeros)
	}
	good := filesOf(t, generate(t, appSpec(t, 3, firmware(100))))
	bomb := func(declared uint64) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for _, n := range []string{"lock_app.dat", ManifestName} {
			w, _ := zw.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Store})
			w.Write(good[n])
		}
		w, err := zw.CreateRaw(&zip.FileHeader{
			Name: "lock_app.bin", Method: zip.Deflate, CRC32: crc.Sum32(),
			CompressedSize64: uint64(comp.Len()), UncompressedSize64: declared,
		})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(comp.Bytes())
		zw.Close()
		return buf.Bytes()
	}
	if _, err := Parse(bomb(inflated), Limits{}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("bomb declaring its size: %v, want ErrTooLarge", err)
	}
	if _, err := Parse(bomb(1000), Limits{}); !errors.Is(err, ErrZip) {
		t.Errorf("bomb declaring 1000 bytes: %v, want ErrZip", err)
	}
	// Too many entries, and a package too large to start with.
	files := []string{}
	for i := range maxFiles + 1 {
		files = append(files, string(rune('a'+i))+".bin", "x")
	}
	if _, err := Parse(zipOf(t, files...), Limits{}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("%d entries: %v", maxFiles+1, err)
	}
	if _, err := Parse(make([]byte, 101), Limits{MaxPackage: 100}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("package over the limit: %v", err)
	}
}

// TestAttackPathTraversal: names that are paths, in the zip or in the
// manifest, are refused before anything is read.
func TestAttackPathTraversal(t *testing.T) {
	good := filesOf(t, generate(t, appSpec(t, 3, firmware(100))))
	bin, dat := string(good["lock_app.bin"]), string(good["lock_app.dat"])
	for _, name := range []string{"../lock_app.bin", "/etc/passwd", "dir/lock_app.bin", `..\lock_app.bin`, ".hidden", "..", "a\x00b", "lock app.bin"} {
		data := zipOf(t, "lock_app.bin", bin, "lock_app.dat", dat, ManifestName, appManifest, name, "x")
		if _, err := Parse(data, Limits{}); !errors.Is(err, ErrFileName) {
			t.Errorf("zip entry %q: %v, want ErrFileName", name, err)
		}
		m := `{"manifest":{"application":{"bin_file":` + quote(name) + `,"dat_file":"lock_app.dat"}}}`
		data = zipOf(t, "lock_app.bin", bin, "lock_app.dat", dat, ManifestName, m)
		if _, err := Parse(data, Limits{}); !errors.Is(err, ErrFileName) {
			t.Errorf("manifest naming %q: %v, want ErrFileName", name, err)
		}
	}
}

func quote(s string) string {
	var b bytes.Buffer
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte("0123456789abcdef"[r>>4])
			b.WriteByte("0123456789abcdef"[r&15])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// TestAttackWrongSignature: one flipped bit anywhere in the signature, or
// an init command altered after signing (a higher hw_version, another
// hash), fails the signature check.
func TestAttackWrongSignature(t *testing.T) {
	fw := firmware(100)
	data := generate(t, appSpec(t, 3, fw))
	good := filesOf(t, data)
	for _, bit := range []int{0, 255, 256, 511} {
		p, err := Parse(data, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		p.Images[0].InitPacket.Signature[bit/8] ^= 1 << (bit % 8)
		if err := p.Verify(policy(t)); !errors.Is(err, ErrSignature) {
			t.Errorf("signature bit %d flipped: %v", bit, err)
		}
	}
	// Change hw_version inside the signed packet: 0x10 (field 2) 0x34 (52).
	dat := good["lock_app.dat"]
	i := bytes.Index(dat, []byte{0x10, 52})
	if i < 0 {
		t.Fatal("hw_version not found in the init packet")
	}
	altered := bytes.Clone(dat)
	altered[i+1] = 53
	p, err := Parse(zipOf(t, "lock_app.bin", string(fw), "lock_app.dat", string(altered), ManifestName, appManifest), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Images[0].InitPacket.Init.GetHwVersion(); got != 53 {
		t.Fatalf("the alteration hit another field: hw_version %d", got)
	}
	pol := policy(t)
	pol.Device.HWVersion = 53
	if err := p.Verify(pol); !errors.Is(err, ErrSignature) {
		t.Errorf("hw_version altered after signing: %v", err)
	}
	// An unsigned packet is refused as such.
	p, _ = Parse(withInit(t, fw, nil, nil), Limits{})
	if err := p.Verify(policy(t)); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned: %v", err)
	}
}

// TestAttackWrongHash: a firmware image swapped for another of the same
// size, or with one byte changed, does not match the signed hash.
func TestAttackWrongHash(t *testing.T) {
	fw := firmware(5000)
	good := filesOf(t, generate(t, appSpec(t, 3, fw)))
	flipped := bytes.Clone(fw)
	flipped[2500] ^= 1
	for _, bad := range [][]byte{flipped, bytes.Repeat([]byte{0xAA}, 5000)} {
		if bytes.Equal(bad, fw) {
			t.Fatal("test image equals the good one")
		}
		p, err := Parse(zipOf(t, "lock_app.bin", string(bad), "lock_app.dat", string(good["lock_app.dat"]), ManifestName, appManifest), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Verify(policy(t)); !errors.Is(err, ErrHash) {
			t.Errorf("substituted image: %v, want ErrHash", err)
		}
	}
}

// TestAttackAnotherFleetsKey: a well-formed package signed by another
// fleet's DFU key is refused.
func TestAttackAnotherFleetsKey(t *testing.T) {
	s := appSpec(t, 3, firmware(100))
	s.Key = testKey(t, "another fleet")
	p, err := Parse(generate(t, s), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(policy(t)); !errors.Is(err, ErrSignature) {
		t.Fatalf("another fleet's package: %v, want ErrSignature", err)
	}
	pol := policy(t)
	pol.Key = &s.Key.PublicKey
	if err := p.Verify(pol); err != nil {
		t.Fatalf("under its own fleet's key: %v", err)
	}
}

// TestAttackDowngrade: a validly signed package older than the lock's
// firmware is refused, unless the policy (an admin-signed rollout) allows
// a downgrade.
func TestAttackDowngrade(t *testing.T) {
	p, err := Parse(generate(t, appSpec(t, 1, firmware(100))), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(policy(t)); !errors.Is(err, ErrDowngrade) {
		t.Fatalf("version 1 on a lock at 2: %v, want ErrDowngrade", err)
	}
	pol := policy(t)
	pol.AllowDowngrade = true
	if err := p.Verify(pol); err != nil {
		t.Fatalf("allowed downgrade: %v", err)
	}
}

// TestAttackOversizedImage: an image larger than the limit is refused while
// reading, without holding more than the limit.
func TestAttackOversizedImage(t *testing.T) {
	s := appSpec(t, 3, firmware(70_000))
	if _, err := Parse(generate(t, s), Limits{MaxImage: 65_536}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("70 kB image with a 64 KiB limit: %v", err)
	}
}
