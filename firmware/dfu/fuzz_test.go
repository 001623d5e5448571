package dfu

import (
	"bytes"
	"testing"
)

// FuzzParse: no zip makes Parse panic or return a package that Verify
// cannot check, and every refusal is one of the sentinels.
func FuzzParse(f *testing.F) {
	fw := firmware(300)
	f.Add(generate(f, appSpec(f, 3, fw)))
	f.Add(withInit(f, fw, nil, nil))
	f.Add(zipOf(f, ManifestName, appManifest))
	f.Add(zipOf(f, "../x", "y"))
	f.Add([]byte("PK\x05\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	pol := policy(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, Limits{MaxImage: 64 << 10})
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if len(p.Images) == 0 {
			t.Fatal("package without images")
		}
		for _, img := range p.Images {
			if img.InitPacket == nil || len(img.Firmware) == 0 || len(img.Firmware) > 64<<10 {
				t.Fatalf("image %s: %d bytes", img.Kind, len(img.Firmware))
			}
		}
		if err := p.Verify(pol); err != nil && !isSentinel(err) {
			t.Fatalf("verify error without a sentinel: %v", err)
		}
	})
}

// FuzzParseManifest: manifest.json's decoder never panics and accepts
// only plain, distinct file names.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(appManifest))
	f.Add([]byte(`{"manifest":{"softdevice_bootloader":{"bin_file":"sd_bl.bin","dat_file":"sd_bl.dat","info_read_only_metadata":{"bl_size":1,"sd_size":2}}}}`))
	f.Add([]byte(`{"manifest":{"application":{"bin_file":"../a","dat_file":"b"}}}`))
	f.Add([]byte(`{"manifest":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(b)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		for _, k := range kinds {
			if mi := *m.image(k); mi != nil {
				if checkName(mi.BinFile) != nil || checkName(mi.DatFile) != nil || mi.BinFile == mi.DatFile {
					t.Fatalf("accepted names %q, %q", mi.BinFile, mi.DatFile)
				}
			}
		}
	})
}

// FuzzParseInitPacket: no init packet makes the decoder panic; an accepted
// one has an init command within the bootloader's limits whose bytes lie
// inside the packet, and its signature check does not panic.
func FuzzParseInitPacket(f *testing.F) {
	s := appSpec(f, 3, firmware(100))
	signed, _ := InitPacketFor(s.InitCommand(s.Images[0]), s.Key)
	unsigned, _ := InitPacketFor(s.InitCommand(s.Images[0]), nil)
	f.Add(signed)
	f.Add(unsigned)
	f.Add(signed[:len(signed)/2])
	f.Add([]byte{0x12, 0x00})
	key := &s.Key.PublicKey
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseInitPacket(b)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if p.Init == nil || len(b) > MaxInitPacket || !bytes.Contains(b, p.Command) {
			t.Fatal("accepted packet without a proper init command")
		}
		if err := VerifySignature(p, key); err != nil && !isSentinel(err) {
			t.Fatalf("signature error without a sentinel: %v", err)
		}
		_, _ = CheckInit(p.Init, lock, false)
	})
}

// FuzzParseResponse: Control Point notifications decode strictly and
// re-encode to the same bytes.
func FuzzParseResponse(f *testing.F) {
	f.Add(Response{Op: OpSelect, Result: ResSuccess, MaxSize: 4096, Offset: 1, CRC: 2}.Marshal())
	f.Add(Response{Op: OpExecute, Result: ResExtError, Ext: ExtVerificationFailed}.Marshal())
	f.Add(Response{Op: OpCRC, Result: ResSuccess, Offset: 9, CRC: 9}.Marshal())
	f.Add([]byte{0x60, 0x07, 0x01, 0xf4})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseResponse(b)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if got := r.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("re-encoded % x, got % x", got, b)
		}
	})
}
