// Package dfuvectors generates the DFU test vectors in
// firmware/testdata/dfu for the lock's firmware team: a package as
// `nrfutil pkg generate` writes it, signed by a published test DFU key;
// init packets the bootloader must accept or refuse, each with the
// response notification the reference bootloader answers at Execute; and
// the transcript of a whole transfer. Everything is derived from fixed
// seeds (ECDSA signatures are RFC 6979 deterministic), so the output is
// byte-for-byte reproducible; a test fails when the committed files drift.
// Regenerate with `go run ./firmware/cmd/gendfu`.
//
// It may import the standard library and firmware/ packages only.
package dfuvectors

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"

	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/dfu/controller"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
)

// Hex is a byte string written as lowercase hex in JSON.
type Hex []byte

// MarshalJSON implements json.Marshaler.
func (h Hex) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

// UnmarshalJSON implements json.Unmarshaler.
func (h *Hex) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	*h = v
	return err
}

// Seed returns 32 bytes for a label: SHA-256("gatewayd dfu vectors: " || label).
func Seed(label string) []byte {
	h := sha256.Sum256([]byte("gatewayd dfu vectors: " + label))
	return h[:]
}

// Key returns a fixed P-256 key whose private scalar is Seed(label).
func Key(label string) (*ecdsa.PrivateKey, error) {
	return ecdsa.ParseRawPrivateKey(elliptic.P256(), Seed(label))
}

// Lock is the lock the vectors are for.
var Lock = dfu.Device{HWVersion: 52, SoftDeviceFWID: 0x0101, AppVersion: 2, BootloaderVersion: 1}

// PackageFile is the package's name in firmware/testdata/dfu.
const PackageFile = "package.zip"

// Firmware is the image of the vectors' package: a SHA-256 counter stream
// of 5000 bytes (two data objects: 4096 and 904 bytes).
func Firmware() []byte {
	var out []byte
	for i := uint32(0); len(out) < 5000; i++ {
		h := sha256.Sum256(binary.BigEndian.AppendUint32([]byte("gatewayd dfu vectors: firmware"), i))
		out = append(out, h[:]...)
	}
	return out[:5000]
}

// Spec is the package's nrfutil arguments.
func Spec(key *ecdsa.PrivateKey) dfu.Spec {
	return dfu.Spec{
		Key: key, HWVersion: Lock.HWVersion, SDReq: []uint32{Lock.SoftDeviceFWID},
		Images: []dfu.ImageSpec{{Kind: dfu.KindApplication, Name: "lock_app", Firmware: Firmware(), FWVersion: 3}},
	}
}

// KeyVector is the test fleet's DFU key.
type KeyVector struct {
	Note          string `json:"note"`
	PrivateScalar Hex    `json:"private_scalar"`
	PublicSEC1    Hex    `json:"public_key_sec1"`
	PublicNRF     Hex    `json:"public_key_nrf"`
}

// ImageVector is one image of the package, taken apart.
type ImageVector struct {
	Kind           string `json:"kind"`
	BinFile        string `json:"bin_file"`
	DatFile        string `json:"dat_file"`
	FirmwareSize   int    `json:"firmware_size"`
	FirmwareSHA256 Hex    `json:"firmware_sha256"`
	FirmwareCRC32  uint32 `json:"firmware_crc32"`
	InitPacket     Hex    `json:"init_packet"`
	InitCommand    Hex    `json:"init_command_signed_bytes"`
	Signature      Hex    `json:"signature_r_s_little_endian"`
	HashLE         Hex    `json:"hash_little_endian"`
}

// InitCase is an init packet the bootloader must answer at Execute as
// given.
type InitCase struct {
	Name       string `json:"name"`
	InitPacket Hex    `json:"init_packet"`
	Execute    Hex    `json:"execute_response"`
}

// Step is one exchange of the transcript: a Control Point write and its
// notification, or a Packet write (offset and length in the image or the
// init packet) and the receipt it triggered, if any.
type Step struct {
	ControlPoint Hex    `json:"control_point,omitempty"`
	Packet       string `json:"packet,omitempty"`
	Offset       *int   `json:"offset,omitempty"`
	Length       int    `json:"length,omitempty"`
	Notification Hex    `json:"notification,omitempty"`
}

// Transfer is the transcript of one whole update.
type Transfer struct {
	ATTMTU int    `json:"att_mtu"`
	PRN    int    `json:"prn"`
	Steps  []Step `json:"steps"`
}

// Vectors is firmware/testdata/dfu/vectors.json.
type Vectors struct {
	Description   string        `json:"description"`
	Spec          string        `json:"spec"`
	Key           KeyVector     `json:"dfu_key"`
	OtherFleetKey Hex           `json:"other_fleet_private_scalar"`
	Lock          dfu.Device    `json:"lock"`
	Package       string        `json:"package"`
	PackageSHA256 Hex           `json:"package_sha256"`
	Images        []ImageVector `json:"images"`
	InitPackets   []InitCase    `json:"init_packets"`
	Corrupted     InitCase      `json:"corrupted_image"`
	Transfer      Transfer      `json:"transfer"`
}

// Files returns the files of firmware/testdata/dfu by name.
func Files() (map[string][]byte, error) {
	key, err := Key("fleet dfu key")
	if err != nil {
		return nil, err
	}
	other, err := Key("another fleet's dfu key")
	if err != nil {
		return nil, err
	}
	zipBytes, err := dfu.Generate(Spec(key))
	if err != nil {
		return nil, err
	}
	p, err := dfu.Parse(zipBytes, dfu.Limits{})
	if err != nil {
		return nil, err
	}
	if err := p.Verify(dfu.Policy{Key: &key.PublicKey, Device: Lock}); err != nil {
		return nil, err
	}
	sec1, err := key.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	nrf, err := dfu.NRFPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(zipBytes)
	v := &Vectors{
		Description: "Nordic Secure DFU: a package as nrfutil 6.1.7 writes it (package.zip beside this file), signed by the test fleet's " +
			"DFU key; init packets with the response (60 04 result [ext]) the bootloader answers at their Execute; the image corrupted " +
			"after signing, refused at the last Execute; and a whole transfer at ATT MTU 247, PRN 4, as the gateway's controller runs it " +
			"against the reference bootloader. All multi-byte protocol fields are little-endian. Keys are for tests only.",
		Spec: "docs/dfu.md",
		Key: KeyVector{
			Note:          "private_scalar = SHA-256(\"gatewayd dfu vectors: fleet dfu key\"); public_key_nrf is the bootloader's pk[64] (x then y, each little-endian)",
			PrivateScalar: Seed("fleet dfu key"), PublicSEC1: sec1, PublicNRF: nrf,
		},
		OtherFleetKey: Seed("another fleet's dfu key"),
		Lock:          Lock,
		Package:       PackageFile,
		PackageSHA256: sum[:],
	}
	for _, img := range p.Images {
		h := sha256.Sum256(img.Firmware)
		v.Images = append(v.Images, ImageVector{
			Kind: string(img.Kind), BinFile: img.BinFile, DatFile: img.DatFile,
			FirmwareSize: len(img.Firmware), FirmwareSHA256: h[:], FirmwareCRC32: crc32.ChecksumIEEE(img.Firmware),
			InitPacket: img.InitPacket.Raw, InitCommand: img.InitPacket.Command, Signature: img.InitPacket.Signature,
			HashLE: img.InitPacket.Init.GetHash().GetHash(),
		})
	}
	if v.InitPackets, err = initCases(key, other); err != nil {
		return nil, err
	}
	img := p.Images[0]
	if v.Corrupted, err = corrupted(key, img); err != nil {
		return nil, err
	}
	if v.Transfer, err = transcript(key, img); err != nil {
		return nil, err
	}
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return map[string][]byte{PackageFile: zipBytes, "vectors.json": append(js, '\n')}, nil
}

func bootloader(key *ecdsa.PrivateKey) *target.Bootloader {
	return target.New(target.Options{Key: &key.PublicKey, Device: Lock, Firmware: []byte("old")})
}

// execute plays Select, Create, the packet in MTU-247 writes and Execute
// against a fresh reference bootloader and returns Execute's response.
func execute(key *ecdsa.PrivateKey, init []byte) ([]byte, error) {
	c := bootloader(key).Connect(247)
	c.EnableNotifications()
	if _, err := c.WriteControlPoint(dfu.CreateRequest(dfu.ObjectCommand, uint32(len(init)))); err != nil {
		return nil, err
	}
	for i := 0; i < len(init); i += c.MaxPacket() {
		if _, err := c.WritePacket(init[i:min(i+c.MaxPacket(), len(init))]); err != nil {
			return nil, err
		}
	}
	return c.WriteControlPoint(dfu.ExecuteRequest())
}

func initCases(key, other *ecdsa.PrivateKey) ([]InitCase, error) {
	type variant struct {
		name string
		key  *ecdsa.PrivateKey
		edit func(*dfu.Spec)
		mut  func([]byte)
	}
	var out []InitCase
	for _, c := range []variant{
		{name: "valid", key: key},
		{name: "signature altered (last byte of s flipped): invalid object", key: key, mut: func(b []byte) { b[len(b)-1] ^= 0x01 }},
		{name: "signed by another fleet's key: invalid object", key: other},
		{name: "unsigned: extended error signature missing", key: nil},
		{name: "hw_version 51: extended error hardware version", key: key, edit: func(s *dfu.Spec) { s.HWVersion = 51 }},
		{name: "sd_req 0x00B6 only: extended error SoftDevice", key: key, edit: func(s *dfu.Spec) { s.SDReq = []uint32{0xB6} }},
		{name: "fw_version 1 (lock at 2): extended error firmware version", key: key, edit: func(s *dfu.Spec) { s.Images[0].FWVersion = 1 }},
	} {
		s := Spec(c.key)
		if c.edit != nil {
			c.edit(&s)
		}
		dat, err := dfu.InitPacketFor(s.InitCommand(s.Images[0]), c.key)
		if err != nil {
			return nil, err
		}
		if c.mut != nil {
			c.mut(dat)
		}
		res, err := execute(key, dat)
		if err != nil {
			return nil, fmt.Errorf("dfuvectors: %s: %w", c.name, err)
		}
		out = append(out, InitCase{Name: c.name, InitPacket: dat, Execute: res})
	}
	return out, nil
}

// corrupted transfers the image with one byte flipped after signing and
// records the last Execute's response.
func corrupted(key *ecdsa.PrivateKey, img *dfu.Image) (InitCase, error) {
	bad := *img
	bad.Firmware = bytes.Clone(img.Firmware)
	bad.Firmware[1234] ^= 0xFF
	rec := &recorder{conn: bootloader(key).Connect(247)}
	rec.conn.EnableNotifications()
	_, err := controller.New(controller.Options{PRN: -1}).Send(context.Background(), rec, &bad)
	if err == nil || len(rec.steps) == 0 {
		return InitCase{}, fmt.Errorf("dfuvectors: the corrupted image was accepted")
	}
	return InitCase{
		Name:       "firmware byte 1234 XOR 0xFF after signing: the last Execute answers extended error hash mismatch",
		InitPacket: img.InitPacket.Raw,
		Execute:    rec.steps[len(rec.steps)-1].Notification,
	}, nil
}

func transcript(key *ecdsa.PrivateKey, img *dfu.Image) (Transfer, error) {
	b := bootloader(key)
	rec := &recorder{conn: b.Connect(247), init: len(img.InitPacket.Raw)}
	rec.conn.EnableNotifications()
	if _, err := controller.New(controller.Options{PRN: 4}).Send(context.Background(), rec, img); err != nil {
		return Transfer{}, fmt.Errorf("dfuvectors: transcript: %w", err)
	}
	if active, _ := b.Active(); !bytes.Equal(active, img.Firmware) {
		return Transfer{}, fmt.Errorf("dfuvectors: transcript: image not activated")
	}
	return Transfer{ATTMTU: rec.conn.ATTMTU(), PRN: 4, Steps: rec.steps}, nil
}

// recorder is a controller.Transport straight onto a bootloader
// connection that writes down every exchange.
type recorder struct {
	conn  *target.Conn
	init  int // init packet length: packet writes up to it are the init packet
	sent  int
	steps []Step
	notes chan []byte
}

func (r *recorder) ATTMTU() int { return r.conn.ATTMTU() }

func (r *recorder) Notifications() <-chan []byte {
	if r.notes == nil {
		r.notes = make(chan []byte, 4)
	}
	return r.notes
}

func (r *recorder) push(n []byte) {
	r.Notifications()
	if n != nil {
		r.notes <- n
	}
}

func (r *recorder) WriteControlPoint(_ context.Context, req []byte) error {
	n, err := r.conn.WriteControlPoint(req)
	if err != nil {
		return err
	}
	r.steps = append(r.steps, Step{ControlPoint: req, Notification: n})
	r.push(n)
	return nil
}

func (r *recorder) WritePacket(_ context.Context, data []byte) error {
	n, err := r.conn.WritePacket(data)
	if err != nil {
		return err
	}
	off, what := r.sent, "init_packet"
	if r.sent >= r.init {
		off, what = r.sent-r.init, "firmware"
	}
	r.sent += len(data)
	r.steps = append(r.steps, Step{Packet: what, Offset: &off, Length: len(data), Notification: n})
	r.push(n)
	return nil
}
