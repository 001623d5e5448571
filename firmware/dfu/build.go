package dfu

import (
	"archive/zip"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gatewayd/gatewayd/firmware/dfu/dfupb"
)

// Spec describes a package for [Generate], as the arguments of `nrfutil
// pkg generate` do.
type Spec struct {
	// Key signs the init packets (--key-file); nil leaves them unsigned.
	Key *ecdsa.PrivateKey
	// HWVersion is --hw-version; SDReq is --sd-req (nrfutil's default
	// when empty: 0xFFFE), the SoftDevices the package's images run on;
	// SDID is --sd-id, the application's sd_req when the package also
	// brings a SoftDevice (the new SoftDevice's FWID).
	HWVersion uint32
	SDReq     []uint32
	SDID      []uint32
	// IsDebug is --debug-mode.
	IsDebug bool
	// Images, at most one per kind.
	Images []ImageSpec
	// Modified is every zip entry's time (zero: 1980-01-01, the zip
	// epoch), so the same spec gives the same bytes.
	Modified time.Time
}

// ImageSpec is one image of a [Spec].
type ImageSpec struct {
	Kind Kind
	// Name is the file name without extension (nrfutil takes the .hex
	// file's name): Name.bin and Name.dat. For a SoftDevice+bootloader
	// image nrfutil always writes sd_bl.
	Name string
	// Firmware is the image (the .bin).
	Firmware []byte
	// FWVersion is --application-version or --bootloader-version (nrfutil
	// writes 0xFFFFFFFF for a SoftDevice).
	FWVersion uint32
	// SDSize and BLSize split a SoftDevice+bootloader image.
	SDSize, BLSize uint32
}

// InitCommand builds an image's init command as nrfutil 6.1.7 does: every
// field set explicitly (so present on the wire even when zero), sd_req
// without duplicates, SHA-256 stored little-endian, CRC boot validation.
func (s Spec) InitCommand(im ImageSpec) *dfupb.InitCommand {
	sdReq := s.SDReq
	if im.Kind == KindApplication && len(s.SDID) > 0 && s.bringsSoftDevice() {
		sdReq = s.SDID
	}
	if len(sdReq) == 0 {
		sdReq = []uint32{0xFFFE}
	}
	var uniq []uint32
	for _, v := range sdReq {
		if !slices.Contains(uniq, v) {
			uniq = append(uniq, v)
		}
	}
	var sd, bl, app uint32
	bv := []*dfupb.BootValidation{{Type: dfupb.ValidationType_VALIDATE_GENERATED_CRC.Enum(), Bytes: []byte{}}}
	switch im.Kind {
	case KindApplication:
		app = uint32(len(im.Firmware))
	case KindSoftDevice:
		sd = uint32(len(im.Firmware))
	case KindBootloader:
		bl = uint32(len(im.Firmware))
	case KindSoftDeviceBootloader:
		sd, bl = im.SDSize, im.BLSize
		bv = append(bv, &dfupb.BootValidation{Type: dfupb.ValidationType_VALIDATE_GENERATED_CRC.Enum(), Bytes: []byte{}})
	}
	return &dfupb.InitCommand{
		FwVersion:      proto.Uint32(im.FWVersion),
		HwVersion:      proto.Uint32(s.HWVersion),
		SdReq:          uniq,
		Type:           im.Kind.fwType().Enum(),
		SdSize:         proto.Uint32(sd),
		BlSize:         proto.Uint32(bl),
		AppSize:        proto.Uint32(app),
		Hash:           &dfupb.Hash{HashType: dfupb.HashType_SHA256.Enum(), Hash: FirmwareHash(im.Firmware)},
		IsDebug:        proto.Bool(s.IsDebug),
		BootValidation: bv,
	}
}

func (s Spec) bringsSoftDevice() bool {
	for _, im := range s.Images {
		if im.Kind == KindSoftDevice || im.Kind == KindSoftDeviceBootloader {
			return true
		}
	}
	return false
}

// InitPacketFor encodes an init command as a .dat: signed with key (nil:
// unsigned), as nrfutil signs, over the init command's encoding.
func InitPacketFor(init *dfupb.InitCommand, key *ecdsa.PrivateKey) ([]byte, error) {
	cmd := &dfupb.Command{OpCode: dfupb.OpCode_INIT.Enum(), Init: init}
	if key == nil {
		return marshal(&dfupb.Packet{Command: cmd})
	}
	initBytes, err := marshal(init)
	if err != nil {
		return nil, err
	}
	sig, err := Sign(key, initBytes)
	if err != nil {
		return nil, err
	}
	return marshal(&dfupb.Packet{SignedCommand: &dfupb.SignedCommand{
		Command:       cmd,
		SignatureType: dfupb.SignatureType_ECDSA_P256_SHA256.Enum(),
		Signature:     sig,
	}})
}

func marshal(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("dfu: marshal %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	return b, nil
}

// Sign signs data as nrfutil does: ECDSA P-256 over SHA-256, r‖s with
// each half little-endian. The signature is deterministic (RFC 6979).
func Sign(key *ecdsa.PrivateKey, data []byte) ([]byte, error) {
	digest := sha256.Sum256(data)
	der, err := key.Sign(nil, digest[:], crypto.SHA256) // nil: RFC 6979
	if err != nil {
		return nil, fmt.Errorf("dfu: sign: %w", err)
	}
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &rs); err != nil {
		return nil, fmt.Errorf("dfu: sign: %w", err)
	}
	r, s := make([]byte, 32), make([]byte, 32)
	rs.R.FillBytes(r)
	rs.S.FillBytes(s)
	return append(reversed(r), reversed(s)...), nil
}

// Generate builds a package as `nrfutil pkg generate` does: per image a
// .bin and a signed .dat, and manifest.json (sorted keys, 4-space indent,
// no final newline), stored uncompressed (Python's ZipFile default).
func Generate(s Spec) ([]byte, error) {
	var m manifest
	type file struct {
		name string
		data []byte
	}
	var files []file
	for _, im := range s.Images {
		if im.Name == "" {
			return nil, fmt.Errorf("dfu: generate: %s image without a name", im.Kind)
		}
		slot := m.image(im.Kind)
		if *slot != nil {
			return nil, fmt.Errorf("dfu: generate: two %s images", im.Kind)
		}
		mi := &manifestImage{BinFile: im.Name + ".bin", DatFile: im.Name + ".dat"}
		if im.Kind == KindSoftDeviceBootloader {
			mi.Info = &manifestInfo{BLSize: proto.Uint32(im.BLSize), SDSize: proto.Uint32(im.SDSize)}
		}
		*slot = mi
		dat, err := InitPacketFor(s.InitCommand(im), s.Key)
		if err != nil {
			return nil, err
		}
		files = append(files, file{mi.BinFile, im.Firmware}, file{mi.DatFile, dat})
	}
	mj, err := json.MarshalIndent(m, "", "    ")
	if err != nil {
		return nil, fmt.Errorf("dfu: generate: manifest: %w", err)
	}
	files = append(files, file{ManifestName, mj})
	slices.SortFunc(files, func(a, b file) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	mod := s.Modified
	if mod.IsZero() {
		mod = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Store, Modified: mod})
		if err != nil {
			return nil, fmt.Errorf("dfu: generate: %w", err)
		}
		if _, err := w.Write(f.data); err != nil {
			return nil, fmt.Errorf("dfu: generate: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("dfu: generate: %w", err)
	}
	return buf.Bytes(), nil
}
