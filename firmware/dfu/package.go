package dfu

import (
	"archive/zip"
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"regexp"

	"github.com/gatewayd/gatewayd/firmware/dfu/dfupb"
)

// Kind is an image's key in manifest.json.
type Kind string

// Image kinds, in the order nrfutil sends them (each over its own
// connection): SoftDevice and bootloader together, SoftDevice, bootloader,
// application.
const (
	KindSoftDeviceBootloader Kind = "softdevice_bootloader"
	KindSoftDevice           Kind = "softdevice"
	KindBootloader           Kind = "bootloader"
	KindApplication          Kind = "application"
)

var kinds = []Kind{KindSoftDeviceBootloader, KindSoftDevice, KindBootloader, KindApplication}

func (k Kind) fwType() dfupb.FwType {
	switch k {
	case KindSoftDeviceBootloader:
		return dfupb.FwType_SOFTDEVICE_BOOTLOADER
	case KindSoftDevice:
		return dfupb.FwType_SOFTDEVICE
	case KindBootloader:
		return dfupb.FwType_BOOTLOADER
	}
	return dfupb.FwType_APPLICATION
}

// ManifestName is the manifest's file name in a package.
const ManifestName = "manifest.json"

// Limits bound what [Parse] reads. The zero value takes the defaults.
type Limits struct {
	// MaxPackage is the largest zip accepted (default 2 MiB).
	MaxPackage int64
	// MaxImage is the largest firmware image (default 512 KiB, the
	// nRF52832's whole flash).
	MaxImage int64
}

const (
	defaultMaxPackage = 2 << 20
	defaultMaxImage   = 512 << 10
	maxManifest       = 4 << 10
	maxFiles          = 1 + 2*4 // the manifest and a .bin and .dat per kind
)

func (l Limits) withDefaults() Limits {
	if l.MaxPackage <= 0 {
		l.MaxPackage = defaultMaxPackage
	}
	if l.MaxImage <= 0 {
		l.MaxImage = defaultMaxImage
	}
	return l
}

// Package is a parsed DFU package. Parse checks its form; [Package.Verify]
// checks it is the fleet's and fits the lock.
type Package struct {
	// Images in transfer order ([KindSoftDeviceBootloader] first,
	// [KindApplication] last).
	Images []*Image
	// Manifest is manifest.json as read.
	Manifest []byte
}

// Image is one image of a package.
type Image struct {
	Kind             Kind
	BinFile, DatFile string
	// Firmware is the .bin: the bytes sent in data objects.
	Firmware []byte
	// InitPacket is the parsed .dat: the command object.
	InitPacket *InitPacket
}

// InitHash is the SHA-256 of the image's init packet (the .dat's bytes,
// exactly as the controller sends them): what an enter-dfu command names
// (docs/protocol.md §12.4) and the only init packet the lock's bootloader
// then executes.
func (im *Image) InitHash() [32]byte { return sha256.Sum256(im.InitPacket.Raw) }

// manifest is manifest.json as nrfutil 6.1.7 writes it. Fields are in
// the order of their keys: nrfutil sorts them, and so does Generate.
type manifest struct {
	Manifest struct {
		Application          *manifestImage `json:"application,omitempty"`
		Bootloader           *manifestImage `json:"bootloader,omitempty"`
		SoftDevice           *manifestImage `json:"softdevice,omitempty"`
		SoftDeviceBootloader *manifestImage `json:"softdevice_bootloader,omitempty"`
	} `json:"manifest"`
}

func (m *manifest) image(k Kind) **manifestImage {
	switch k {
	case KindSoftDeviceBootloader:
		return &m.Manifest.SoftDeviceBootloader
	case KindSoftDevice:
		return &m.Manifest.SoftDevice
	case KindBootloader:
		return &m.Manifest.Bootloader
	}
	return &m.Manifest.Application
}

type manifestImage struct {
	BinFile string        `json:"bin_file"`
	DatFile string        `json:"dat_file"`
	Info    *manifestInfo `json:"info_read_only_metadata,omitempty"`
}

// manifestInfo is nrfutil's FWMetaData; it writes bl_size and sd_size for a
// SoftDevice+bootloader image. Informational only: the init packet, which
// is signed, is what counts.
type manifestInfo struct {
	BLSize        *uint32  `json:"bl_size,omitempty"`
	FWVersion     *uint32  `json:"fw_version,omitempty"`
	HWVersion     *uint32  `json:"hw_version,omitempty"`
	IsDebug       *bool    `json:"is_debug,omitempty"`
	SDSize        *uint32  `json:"sd_size,omitempty"`
	SoftDeviceReq []uint32 `json:"softdevice_req,omitempty"`
}

// plainName is what a file name in a package may be: no directories, no
// leading dot, printable ASCII.
var plainName = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$`)

func checkName(name string) error {
	if !plainName.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("%w: %q", ErrFileName, name)
	}
	return nil
}

// Parse takes a package apart without trusting it. It reads at most the
// limits' bytes whatever the zip's headers claim, refuses names that are
// not plain file names, files the manifest does not name, a manifest that
// is not nrfutil's, and init packets that do not decode (ParseInitPacket).
// It checks nothing cryptographic: call [Package.Verify].
func Parse(data []byte, lim Limits) (*Package, error) {
	lim = lim.withDefaults()
	if int64(len(data)) > lim.MaxPackage {
		return nil, fmt.Errorf("%w: package of %d bytes, limit %d", ErrTooLarge, len(data), lim.MaxPackage)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrZip, err)
	}
	if len(zr.File) > maxFiles {
		return nil, fmt.Errorf("%w: %d files in the zip, at most %d", ErrTooLarge, len(zr.File), maxFiles)
	}
	files := map[string]*zip.File{}
	for _, f := range zr.File {
		if err := checkName(f.Name); err != nil {
			return nil, err
		}
		if _, dup := files[f.Name]; dup {
			return nil, fmt.Errorf("%w: %q twice", ErrZip, f.Name)
		}
		if f.Flags&0x1 != 0 {
			return nil, fmt.Errorf("%w: %q is encrypted", ErrZip, f.Name)
		}
		if f.Mode().Type() != 0 {
			return nil, fmt.Errorf("%w: %q is not a regular file", ErrFileName, f.Name)
		}
		files[f.Name] = f
	}
	read := func(name string, limit int64) ([]byte, error) {
		f, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrMissingFile, name)
		}
		delete(files, name)
		if f.UncompressedSize64 > uint64(limit) {
			return nil, fmt.Errorf("%w: %q declares %d bytes, limit %d", ErrTooLarge, name, f.UncompressedSize64, limit)
		}
		rc, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("%w: open %q: %v", ErrZip, name, err)
		}
		defer rc.Close()
		// Read one byte past the limit: a lying header (a zip bomb) is
		// caught here, after limit+1 bytes, not after the whole stream.
		b, err := io.ReadAll(io.LimitReader(rc, limit+1))
		if err != nil { // zip.ErrChecksum, zip.ErrFormat, a flate error
			return nil, fmt.Errorf("%w: read %q: %v", ErrZip, name, err)
		}
		if int64(len(b)) > limit {
			return nil, fmt.Errorf("%w: %q inflates past %d bytes", ErrTooLarge, name, limit)
		}
		return b, nil
	}

	mb, err := read(ManifestName, maxManifest)
	if err != nil {
		return nil, err
	}
	m, err := parseManifest(mb)
	if err != nil {
		return nil, err
	}
	p := &Package{Manifest: mb}
	for _, k := range kinds {
		mi := *m.image(k)
		if mi == nil {
			continue
		}
		img := &Image{Kind: k, BinFile: mi.BinFile, DatFile: mi.DatFile}
		dat, err := read(mi.DatFile, MaxInitPacket)
		if err != nil {
			return nil, err
		}
		if img.InitPacket, err = ParseInitPacket(dat); err != nil {
			return nil, fmt.Errorf("%s: %w", mi.DatFile, err)
		}
		if img.Firmware, err = read(mi.BinFile, lim.MaxImage); err != nil {
			return nil, err
		}
		if len(img.Firmware) == 0 {
			return nil, fmt.Errorf("%w: %q is empty", ErrSize, mi.BinFile)
		}
		p.Images = append(p.Images, img)
	}
	for name := range files {
		return nil, fmt.Errorf("%w: %q", ErrUnexpectedFile, name)
	}
	return p, nil
}

// parseManifest decodes manifest.json strictly: known keys only, one JSON
// object, at least one image, plain and distinct file names.
func parseManifest(b []byte) (*manifest, error) {
	var m manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrManifest)
	}
	seen := map[string]bool{}
	for _, k := range kinds {
		mi := *m.image(k)
		if mi == nil {
			continue
		}
		for _, name := range []string{mi.BinFile, mi.DatFile} {
			if name == "" {
				return nil, fmt.Errorf("%w: %s without bin_file or dat_file", ErrManifest, k)
			}
			if err := checkName(name); err != nil {
				return nil, err
			}
			if seen[name] {
				return nil, fmt.Errorf("%w: %q named twice", ErrManifest, name)
			}
			seen[name] = true
		}
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("%w: no image", ErrManifest)
	}
	return &m, nil
}

// Policy is what a package must satisfy for one lock.
type Policy struct {
	// Key is the fleet's DFU key: every init packet must be signed by it.
	Key *ecdsa.PublicKey
	// Device is the lock.
	Device Device
	// MaxImage is the largest image the lock's bank takes (0: no limit
	// beyond Parse's).
	MaxImage int
	// AllowDowngrade lets fw_version be below the lock's. Set it only from
	// a rollout an admin signed that says so; the lock's bootloader must
	// allow it too.
	AllowDowngrade bool
}

// Verify checks every image against the policy, in the order the
// bootloader does and then some: the signature first (nothing else of an
// unsigned packet is trusted), the init command against the lock
// ([CheckInit]), the image's kind against its firmware type, the declared
// size against the firmware's, the firmware's hash, the bank's size.
//
// Images are checked against the lock as it will be when each is sent:
// after a SoftDevice image of the same package, the lock runs that
// SoftDevice, whose FWID the init packet does not carry; the application's
// sd_req (nrfutil's --sd-id) names it, so only its signature vouches for
// it, and the bootloader checks it against the new SoftDevice at transfer.
// Likewise a bootloader image raises the bootloader version.
func (p *Package) Verify(pol Policy) error {
	for _, img := range p.Images {
		if err := img.Verify(pol); err != nil {
			return fmt.Errorf("dfu: %s (%s): %w", img.Kind, img.DatFile, err)
		}
		init := img.InitPacket.Init
		switch img.Kind {
		case KindSoftDevice, KindSoftDeviceBootloader:
			pol.Device.SoftDeviceFWID = sdAfterUpdate
		}
		switch img.Kind {
		case KindBootloader, KindSoftDeviceBootloader:
			pol.Device.BootloaderVersion = init.GetFwVersion()
		}
	}
	return nil
}

// sdAfterUpdate stands for "the SoftDevice this package installs": any
// sd_req but 0x00 satisfies it (see Package.Verify).
const sdAfterUpdate = 0xFFFFFFFF

// Verify checks one image; see [Package.Verify].
func (img *Image) Verify(pol Policy) error {
	ip := img.InitPacket
	if err := VerifySignature(ip, pol.Key); err != nil {
		return fmt.Errorf("verify signature: %w", err)
	}
	size, err := CheckInit(ip.Init, pol.Device, pol.AllowDowngrade)
	if err != nil {
		return fmt.Errorf("check init command: %w", err)
	}
	if ip.Init.GetType() != img.Kind.fwType() {
		return fmt.Errorf("%w: init packet for %s in the manifest's %s", ErrInitCommand, ip.Init.GetType(), img.Kind)
	}
	if int(size) != len(img.Firmware) {
		return fmt.Errorf("%w: init packet says %d bytes, %s has %d", ErrSize, size, img.BinFile, len(img.Firmware))
	}
	if subtle.ConstantTimeCompare(FirmwareHash(img.Firmware), ip.Init.GetHash().GetHash()) != 1 {
		return fmt.Errorf("%w: %s", ErrHash, img.BinFile)
	}
	if pol.MaxImage > 0 && len(img.Firmware) > pol.MaxImage {
		return fmt.Errorf("%w: image of %d bytes, the lock's bank holds %d", ErrTooLarge, len(img.Firmware), pol.MaxImage)
	}
	return nil
}
