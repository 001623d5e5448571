package dfu

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/gatewayd/gatewayd/firmware/dfu/dfupb"
)

// TestGenerateParseVerify: a package Generate writes parses and verifies
// for the lock it names, with its image and init packet intact.
func TestGenerateParseVerify(t *testing.T) {
	fw := firmware(10_000)
	p, err := Parse(generate(t, appSpec(t, 3, fw)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(policy(t)); err != nil {
		t.Fatal(err)
	}
	if len(p.Images) != 1 || p.Images[0].Kind != KindApplication || !bytes.Equal(p.Images[0].Firmware, fw) {
		t.Fatalf("images: %+v", p.Images)
	}
	init := p.Images[0].InitPacket.Init
	if init.GetFwVersion() != 3 || init.GetAppSize() != 10_000 || init.GetHwVersion() != 52 {
		t.Fatalf("init command: %v", init)
	}
}

// TestGenerateLayoutAsNrfutil: the zip holds exactly the files nrfutil
// writes, stored (Python's ZipFile default), with its manifest byte for
// byte (sorted keys, 4-space indent, no final newline).
func TestGenerateLayoutAsNrfutil(t *testing.T) {
	data := generate(t, appSpec(t, 3, firmware(100)))
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if f.Method != zip.Store {
			t.Errorf("%s: method %d, nrfutil stores", f.Name, f.Method)
		}
	}
	if want := []string{"lock_app.bin", "lock_app.dat", "manifest.json"}; !equalStrings(names, want) {
		t.Fatalf("files %q, want %q", names, want)
	}
	if got := string(filesOf(t, data)[ManifestName]); got != appManifest {
		t.Fatalf("manifest:\n%s\nwant:\n%s", got, appManifest)
	}
	sdbl := Spec{Key: testKey(t, "fleet"), HWVersion: 52, SDReq: []uint32{0x101}, Images: []ImageSpec{
		{Kind: KindSoftDeviceBootloader, Name: "sd_bl", Firmware: firmware(300), FWVersion: 2, SDSize: 200, BLSize: 100},
		{Kind: KindApplication, Name: "app", Firmware: firmware(50), FWVersion: 3},
	}}
	want := `{
    "manifest": {
        "application": {
            "bin_file": "app.bin",
            "dat_file": "app.dat"
        },
        "softdevice_bootloader": {
            "bin_file": "sd_bl.bin",
            "dat_file": "sd_bl.dat",
            "info_read_only_metadata": {
                "bl_size": 100,
                "sd_size": 200
            }
        }
    }
}`
	pkg := generate(t, sdbl)
	if got := string(filesOf(t, pkg)[ManifestName]); got != want {
		t.Fatalf("manifest:\n%s\nwant:\n%s", got, want)
	}
	p, err := Parse(pkg, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Images) != 2 || p.Images[0].Kind != KindSoftDeviceBootloader || p.Images[1].Kind != KindApplication {
		t.Fatalf("transfer order: %v, %v", p.Images[0].Kind, p.Images[1].Kind)
	}
	if err := p.Verify(policy(t)); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyWithNewSoftDevice: a package that brings a SoftDevice and an
// application for it (nrfutil's --sd-id) verifies: the application is
// checked against the SoftDevice the package installs, and the
// SoftDevice+bootloader image against the lock's; without the SoftDevice
// image the same application is refused.
func TestVerifyWithNewSoftDevice(t *testing.T) {
	s := Spec{Key: testKey(t, "fleet"), HWVersion: 52, SDReq: []uint32{0x101}, SDID: []uint32{0x0123}, Images: []ImageSpec{
		{Kind: KindSoftDeviceBootloader, Name: "sd_bl", Firmware: firmware(300), FWVersion: 2, SDSize: 200, BLSize: 100},
		{Kind: KindApplication, Name: "app", Firmware: firmware(50), FWVersion: 3},
	}}
	p, err := Parse(generate(t, s), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Images[1].InitPacket.Init.GetSdReq(); len(got) != 1 || got[0] != 0x0123 {
		t.Fatalf("application's sd_req %#x, want the --sd-id", got)
	}
	if err := p.Verify(policy(t)); err != nil {
		t.Fatal(err)
	}
	s.Images, s.SDReq = s.Images[1:], s.SDID
	p, _ = Parse(generate(t, s), Limits{})
	if err := p.Verify(policy(t)); !errors.Is(err, ErrSoftDevice) {
		t.Fatalf("application for another SoftDevice alone: %v", err)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestInitPacketAsNrfutil: the init command carries every field nrfutil
// sets, in field order, present even when zero (is_debug false, sd_size
// 0), and the signature covers exactly the init command's bytes as they
// stand in the packet.
func TestInitPacketAsNrfutil(t *testing.T) {
	s := appSpec(t, 7, firmware(1000))
	dat, err := InitPacketFor(s.InitCommand(s.Images[0]), s.Key)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseInitPacket(dat)
	if err != nil {
		t.Fatal(err)
	}
	var nums []protowire.Number
	b := p.Command
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:]
		b = b[protowire.ConsumeFieldValue(num, typ, b):]
		nums = append(nums, num)
	}
	if want := []protowire.Number{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; len(nums) != len(want) || nums[0] != 1 || nums[9] != 10 {
		t.Fatalf("init command fields %v, want %v", nums, want)
	}
	standalone, _ := proto.MarshalOptions{Deterministic: true}.Marshal(p.Init)
	if !bytes.Equal(standalone, p.Command) {
		t.Fatal("the signed bytes differ from the init command's encoding")
	}
	if p.Init.GetHash().GetHashType() != dfupb.HashType_SHA256 || !bytes.Equal(p.Init.GetHash().GetHash(), FirmwareHash(firmware(1000))) {
		t.Fatal("hash not SHA-256 little-endian")
	}
	if err := VerifySignature(p, &s.Key.PublicKey); err != nil {
		t.Fatal(err)
	}
	// Sign is deterministic: the vectors depend on it.
	again, _ := InitPacketFor(s.InitCommand(s.Images[0]), s.Key)
	if !bytes.Equal(dat, again) {
		t.Fatal("signing is not deterministic")
	}
}

// TestNRFPublicKey: the bootloader's key encoding round-trips and is the
// little-endian halves of the SEC1 point.
func TestNRFPublicKey(t *testing.T) {
	pub := &testKey(t, "fleet").PublicKey
	pk, err := NRFPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sec1, _ := pub.Bytes()
	if pk[0] != sec1[32] || pk[31] != sec1[1] || pk[32] != sec1[64] || pk[63] != sec1[33] {
		t.Fatal("halves not little-endian")
	}
	back, err := ParseNRFPublicKey(pk)
	if err != nil || !back.Equal(pub) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := ParseNRFPublicKey(pk[:63]); err == nil {
		t.Fatal("63 bytes accepted")
	}
}

// TestParseRefuses: each malformed package is refused with its reason.
func TestParseRefuses(t *testing.T) {
	fw := firmware(100)
	good := filesOf(t, generate(t, appSpec(t, 3, fw)))
	dat := string(good["lock_app.dat"])
	bin := string(fw)
	signed, _ := ParseInitPacket([]byte(dat))
	unsignedCmd, _ := proto.Marshal(&dfupb.Packet{Command: &dfupb.Command{OpCode: dfupb.OpCode_INIT.Enum(), Init: signed.Init}})
	both := append(append([]byte{}, good["lock_app.dat"]...), unsignedCmd...)
	reset, _ := proto.Marshal(&dfupb.Packet{Command: &dfupb.Command{OpCode: dfupb.OpCode_RESET.Enum(), Reset_: &dfupb.ResetCommand{Timeout: proto.Uint32(1)}}})
	for _, c := range []struct {
		name string
		data []byte
		want error
	}{
		{"not a zip", []byte("PK\x03\x04 but not a zip"), ErrZip},
		{"empty zip", zipOf(t), ErrMissingFile},
		{"no manifest", zipOf(t, "lock_app.bin", bin, "lock_app.dat", dat), ErrMissingFile},
		{"no bin", zipOf(t, "lock_app.dat", dat, ManifestName, appManifest), ErrMissingFile},
		{"no dat", zipOf(t, "lock_app.bin", bin, ManifestName, appManifest), ErrMissingFile},
		{"extra file", zipOf(t, "lock_app.bin", bin, "lock_app.dat", dat, ManifestName, appManifest, "extra.bin", "x"), ErrUnexpectedFile},
		{"duplicate entry", zipOf(t, "lock_app.bin", bin, "lock_app.bin", bin, "lock_app.dat", dat, ManifestName, appManifest), ErrZip},
		{"empty bin", zipOf(t, "lock_app.bin", "", "lock_app.dat", dat, ManifestName, appManifest), ErrSize},
		{"manifest not JSON", zipOf(t, "lock_app.bin", bin, "lock_app.dat", dat, ManifestName, "{"), ErrManifest},
		{"manifest unknown key", zipOf(t, "lock_app.bin", bin, "lock_app.dat", dat, ManifestName, `{"manifest":{"application":{"bin_file":"lock_app.bin","dat_file":"lock_app.dat","init_packet_data":{}}}}`), ErrManifest},
		{"manifest no image", zipOf(t, ManifestName, `{"manifest":{}}`), ErrManifest},
		{"manifest trailing data", zipOf(t, "lock_app.bin", bin, "lock_app.dat", dat, ManifestName, appManifest+"{}"), ErrManifest},
		{"manifest same file twice", zipOf(t, "x.bin", bin, ManifestName, `{"manifest":{"application":{"bin_file":"x.bin","dat_file":"x.bin"}}}`), ErrManifest},
		{"manifest no dat_file", zipOf(t, "x.bin", bin, ManifestName, `{"manifest":{"application":{"bin_file":"x.bin"}}}`), ErrManifest},
		{"truncated init packet", zipOf(t, "lock_app.bin", bin, "lock_app.dat", dat[:len(dat)-10], ManifestName, appManifest), ErrInitPacket},
		{"empty init packet", zipOf(t, "lock_app.bin", bin, "lock_app.dat", "", ManifestName, appManifest), ErrInitPacket},
		{"both commands", zipOf(t, "lock_app.bin", bin, "lock_app.dat", string(both), ManifestName, appManifest), ErrInitPacket},
		{"reset command", zipOf(t, "lock_app.bin", bin, "lock_app.dat", string(reset), ManifestName, appManifest), ErrInitPacket},
		{"init packet too large", zipOf(t, "lock_app.bin", bin, "lock_app.dat", dat+string(make([]byte, MaxInitPacket)), ManifestName, appManifest), ErrTooLarge},
	} {
		_, err := Parse(c.data, Limits{})
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

// TestParseInitPacketRefuses: init packets the bootloader would read
// differently, or not at all.
func TestParseInitPacketRefuses(t *testing.T) {
	s := appSpec(t, 3, firmware(100))
	init := s.InitCommand(s.Images[0])
	initBytes, _ := proto.Marshal(init)
	cmdWith := func(extra []byte) []byte {
		c := protowire.AppendTag(nil, 1, protowire.VarintType)
		c = protowire.AppendVarint(c, 1)
		c = protowire.AppendTag(c, 2, protowire.BytesType)
		c = protowire.AppendBytes(c, initBytes)
		c = append(c, extra...)
		p := protowire.AppendTag(nil, 1, protowire.BytesType)
		return protowire.AppendBytes(p, c)
	}
	twoInits := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), initBytes)
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1)
	big := s.InitCommand(s.Images[0])
	big.SdReq = []uint32{1, 2, 3, 4, 5}
	bigDat, _ := InitPacketFor(big, nil)
	for _, c := range []struct {
		name string
		raw  []byte
	}{
		{"init twice", cmdWith(twoInits)},
		{"field after init", cmdWith(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1))},
		{"unknown field", cmdWith(unknown)},
		{"five sd_req", bigDat},
		{"garbage", []byte{0xff, 0xff, 0xff}},
	} {
		if _, err := ParseInitPacket(c.raw); !errors.Is(err, ErrInitPacket) {
			t.Errorf("%s: %v, want ErrInitPacket", c.name, err)
		}
	}
	if _, err := ParseInitPacket(cmdWith(nil)); err != nil {
		t.Fatalf("well-formed unsigned packet: %v", err)
	}
}

// TestVerifyRefuses: packages that parse but do not fit the lock.
func TestVerifyRefuses(t *testing.T) {
	fw := firmware(100)
	key := testKey(t, "fleet")
	for _, c := range []struct {
		name string
		edit func(*Spec, *ImageSpec)
		want error
	}{
		{"wrong hw_version", func(s *Spec, _ *ImageSpec) { s.HWVersion = 51 }, ErrHWVersion},
		{"sd_req without the lock's", func(s *Spec, _ *ImageSpec) { s.SDReq = []uint32{0xB6} }, ErrSoftDevice},
		{"sd_req replaces the SoftDevice", func(s *Spec, _ *ImageSpec) { s.SDReq = []uint32{0, 0x101} }, ErrSoftDevice},
		{"bootloader type in application slot", func(_ *Spec, im *ImageSpec) { im.Kind = KindBootloader }, ErrInitCommand},
		{"size differs", func(_ *Spec, im *ImageSpec) { im.Firmware = firmware(99) }, ErrSize},
	} {
		pkg, err := Parse(withInit(t, fw, key, c.edit), Limits{})
		if err != nil {
			t.Fatalf("%s: parse: %v", c.name, err)
		}
		if err := pkg.Verify(policy(t)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	pkg, _ := Parse(withInit(t, fw, key, nil), Limits{})
	pol := policy(t)
	pol.MaxImage = 99
	if err := pkg.Verify(pol); !errors.Is(err, ErrTooLarge) {
		t.Errorf("image larger than the bank: %v", err)
	}
}

// TestCheckInitVersions: the bootloader's version rules.
func TestCheckInitVersions(t *testing.T) {
	s := appSpec(t, 2, firmware(100))
	init := s.InitCommand(s.Images[0])
	if _, err := CheckInit(init, lock, false); err != nil {
		t.Fatalf("same version: %v (the SDK accepts it)", err)
	}
	init.FwVersion = nil
	if _, err := CheckInit(init, lock, true); !errors.Is(err, ErrInitCommand) {
		t.Fatalf("no fw_version: %v", err)
	}
	bl := s.InitCommand(ImageSpec{Kind: KindBootloader, Firmware: firmware(10), FWVersion: 1})
	if _, err := CheckInit(bl, lock, false); !errors.Is(err, ErrDowngrade) {
		t.Fatalf("bootloader of the same version: %v", err)
	}
	bl.FwVersion = proto.Uint32(2)
	if n, err := CheckInit(bl, lock, false); err != nil || n != 10 {
		t.Fatalf("newer bootloader: %d, %v", n, err)
	}
	bl.HwVersion = nil
	if _, err := CheckInit(bl, lock, false); !errors.Is(err, ErrInitCommand) {
		t.Fatalf("no hw_version: %v", err)
	}
}

// TestErrorsCarryNoSignature: a refused signature's error names neither
// the signature nor the key.
func TestErrorsCarryNoSignature(t *testing.T) {
	pkg, _ := Parse(withInit(t, firmware(100), testKey(t, "other fleet"), nil), Limits{})
	err := pkg.Verify(policy(t))
	sig := pkg.Images[0].InitPacket.Signature
	for _, s := range []string{fmt.Sprintf("%x", sig[:8]), fmt.Sprintf("% x", sig[:8]), string(sig[:8])} {
		if strings.Contains(err.Error(), s) {
			t.Fatal("error carries signature bytes")
		}
	}
	if !errors.Is(err, ErrSignature) {
		t.Fatal(err)
	}
}
