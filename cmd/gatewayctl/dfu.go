package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/dfu"
)

// dfuUsage is `gatewayctl dfu -h`: the offline half of lock firmware
// updates (docs/dfu.md). Rollouts through the gateways are not built yet.
const dfuUsage = `usage: gatewayctl dfu SUBCOMMAND [FLAGS] [ARGS]

Lock firmware packages (Nordic Secure DFU, docs/dfu.md), offline:
  keygen  -o FILE                     the fleet DFU key: P-256, FILE (PEM "EC PRIVATE KEY", 0600,
                                      as nrfutil keys generate writes it) and FILE.pub (PEM "PUBLIC KEY")
  package -key KEY -app APP.bin -fw-version N -hw-version N -sd-req 0xID[,0xID] -o PKG.zip
                                      a package as nrfutil pkg generate builds it; prints its init hash
  verify  -pub PUB.pem [-hw-version N] [-sd 0xID] [-lock-fw-version N] PKG.zip
                                      check a package as the gateway and the lock's bootloader do

The init hash is what an admin's enter-dfu names (docs/dfu.md §3); gateways
do not carry enter-dfu or send packages yet.

dfu SUBCOMMAND -h: the subcommand's flags and their defaults.

Exit status: 0 done; 1 failed (a file, or verify refused the package,
with the reason on stderr); 2 usage (gatewayctl -h).
`

// dfuMaxPackage is the largest package verify reads: firmware/dfu's
// default limit.
const dfuMaxPackage = 2 << 20

func dfuCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, dfuUsage)
		return fmt.Errorf("dfu: no subcommand: %w", errUsage)
	}
	switch args[0] {
	case "keygen":
		return dfuKeygen(args[1:], stdout)
	case "package":
		return dfuPackage(args[1:], stdout)
	case "verify":
		return dfuVerify(args[1:], stdout)
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && synopsis["dfu "+args[1]] != "" {
			return dfuCmd([]string{args[1], "-h"}, stdout, stderr)
		}
		fmt.Fprint(stdout, dfuUsage)
		return flag.ErrHelp
	default:
		fmt.Fprint(stderr, dfuUsage)
		return fmt.Errorf("dfu: unknown subcommand %q: %w", args[0], errUsage)
	}
}

func dfuKeygen(args []string, stdout io.Writer) error {
	fs := flags("dfu keygen")
	out := fs.String("o", "", "private key file to write (PEM \"EC PRIVATE KEY\", mode 0600); the public key goes to FILE.pub")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *out == "" || fs.NArg() != 0 {
		return fmt.Errorf("dfu keygen: -o FILE is required: %w", errUsage)
	}
	for _, p := range []string{*out, *out + ".pub"} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("dfu keygen: %s exists; refusing to overwrite a key", p)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("dfu keygen: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("dfu keygen: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("dfu keygen: %w", err)
	}
	nrf, err := dfu.NRFPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("dfu keygen: %w", err)
	}
	if err := config.WriteFile(*out, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("dfu keygen: %w", err)
	}
	if err := config.WriteFile(*out+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return fmt.Errorf("dfu keygen: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s (DFU signing key, P-256, private, 0600) and %s.pub\n", *out, *out)
	fmt.Fprintf(stdout, "bootloader public key pk[64] (dfu_public_key.c: x then y, each little-endian): %x\n", nrf)
	return nil
}

// readDFUPrivateKey reads the fleet DFU key: a P-256 key in PEM, SEC1 ("EC
// PRIVATE KEY", as nrfutil keys generate and dfu keygen write it) or PKCS
// #8 ("PRIVATE KEY"), from a file only its owner can read.
func readDFUPrivateKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := config.ReadSecret(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: want a PEM \"EC PRIVATE KEY\" block (gatewayctl dfu keygen, nrfutil keys generate)", path)
	}
	var key any
	switch blk.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("%s: a PEM %q block, want \"EC PRIVATE KEY\" (gatewayctl dfu keygen, nrfutil keys generate)", path, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: not a private key", path)
	}
	k, ok := key.(*ecdsa.PrivateKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s: not a P-256 key (the DFU key is ECDSA P-256)", path)
	}
	return k, nil
}

// readDFUPublicKey reads the fleet DFU key's public half: PEM "PUBLIC KEY"
// (PKIX) of a P-256 key, from a file nobody else can change.
func readDFUPublicKey(path string) (*ecdsa.PublicKey, error) {
	b, err := config.ReadPublic(path, config.MaxKeyFile)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%s: want a PEM \"PUBLIC KEY\" block (dfu keygen's FILE.pub, openssl ec -pubout)", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s: not a P-256 key (the DFU key is ECDSA P-256)", path)
	}
	return pub, nil
}

// u32Flag is a uint32 flag (decimal, or 0x hex) that knows whether it was
// given.
type u32Flag struct {
	v   uint32
	set bool
}

func (f *u32Flag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.FormatUint(uint64(f.v), 10)
}

func (f *u32Flag) Set(s string) error {
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return fmt.Errorf("want an unsigned 32-bit number")
	}
	f.v, f.set = uint32(v), true
	return nil
}

// parseSDReq parses -sd-req: SoftDevice FWIDs separated by commas.
func parseSDReq(s string) ([]uint32, error) {
	var ids []uint32
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseUint(strings.TrimSpace(f), 0, 32)
		if err != nil {
			return nil, fmt.Errorf("-sd-req %q: want FWIDs such as 0x0101, separated by commas", s)
		}
		if v == 0 {
			return nil, fmt.Errorf("-sd-req 0x00 (replace the SoftDevice) is refused by the locks' BLE bootloader")
		}
		ids = append(ids, uint32(v))
	}
	return ids, nil
}

func sdList(ids []uint32) string {
	s := make([]string, len(ids))
	for i, v := range ids {
		s[i] = fmt.Sprintf("0x%04X", v)
	}
	return strings.Join(s, ",")
}

func dfuPackage(args []string, stdout io.Writer) error {
	fs := flags("dfu package")
	keyPath := fs.String("key", "", "the fleet DFU key (P-256, PEM; mode 0600): signs the init packet")
	app := fs.String("app", "", "the application image (.bin); its name without extension names the package's files")
	var fwVersion, hwVersion u32Flag
	fs.Var(&fwVersion, "fw-version", "the application's version `N` (nrfutil --application-version)")
	fs.Var(&hwVersion, "hw-version", "the locks' hardware version `N` (nrfutil --hw-version)")
	sdReq := fs.String("sd-req", "", "the SoftDevice FWIDs the image runs on, such as 0x0101 (nrfutil --sd-req)")
	out := fs.String("o", "", "the package to write (zip)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *keyPath == "" || *app == "" || !fwVersion.set || !hwVersion.set || *sdReq == "" || *out == "" || fs.NArg() != 0 {
		return fmt.Errorf("dfu package: -key, -app, -fw-version, -hw-version, -sd-req and -o are required: %w", errUsage)
	}
	sd, err := parseSDReq(*sdReq)
	if err != nil {
		return fmt.Errorf("dfu package: %v: %w", err, errUsage)
	}
	name := strings.TrimSuffix(filepath.Base(*app), filepath.Ext(*app))
	if name == "" || strings.HasPrefix(name, ".") {
		return fmt.Errorf("dfu package: -app %s: the file's name names the package's images; want a plain name such as lock_app.bin: %w", *app, errUsage)
	}
	key, err := readDFUPrivateKey(*keyPath)
	if err != nil {
		return fmt.Errorf("dfu package: %w", err)
	}
	fw, err := readImage(*app)
	if err != nil {
		return fmt.Errorf("dfu package: %w", err)
	}
	pkg, err := dfu.Generate(dfu.Spec{
		Key:       key,
		HWVersion: hwVersion.v,
		SDReq:     sd,
		Images:    []dfu.ImageSpec{{Kind: dfu.KindApplication, Name: name, Firmware: fw, FWVersion: fwVersion.v}},
	})
	if err != nil {
		return fmt.Errorf("dfu package: %w", err)
	}
	// Read back as a gateway would, so what is written is a package the
	// fleet takes (and its init hash is the one the gateway computes).
	p, err := dfu.Parse(pkg, dfu.Limits{MaxPackage: dfuMaxPackage})
	if err != nil {
		return fmt.Errorf("dfu package: %w", err)
	}
	if err := p.Verify(dfu.Policy{Key: &key.PublicKey, Device: dfu.Device{HWVersion: hwVersion.v, SoftDeviceFWID: sd[0]}}); err != nil {
		return fmt.Errorf("dfu package: the package does not verify: %w", err)
	}
	if err := config.WriteFile(*out, pkg, 0o644); err != nil {
		return fmt.Errorf("dfu package: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s: %d bytes\n", *out, len(pkg))
	printImages(stdout, p)
	return nil
}

// readImage reads a firmware image of at most the nRF52832's flash.
func readImage(path string) ([]byte, error) {
	const maxImage = 512 << 10 // firmware/dfu's default MaxImage
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxImage+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	switch {
	case len(b) > maxImage:
		return nil, fmt.Errorf("%s: larger than %d bytes (the nRF52832's flash)", path, maxImage)
	case len(b) == 0:
		return nil, fmt.Errorf("%s: empty image", path)
	}
	return b, nil
}

// printImages prints each image's size, versions and init hash.
func printImages(w io.Writer, p *dfu.Package) {
	for _, img := range p.Images {
		init := img.InitPacket.Init
		fmt.Fprintf(w, "%s %s: %d bytes, fw_version %d, hw_version %d, sd_req %s\n",
			img.Kind, img.BinFile, len(img.Firmware), init.GetFwVersion(), init.GetHwVersion(), sdList(init.GetSdReq()))
		h := img.InitHash()
		fmt.Fprintf(w, "init hash (enter-dfu's init_hash, SHA-256 of %s): %s\n", img.DatFile, hex.EncodeToString(h[:]))
	}
}

func dfuVerify(args []string, stdout io.Writer) error {
	fs := flags("dfu verify")
	pubPath := fs.String("pub", "", "the fleet DFU key's public half (PEM \"PUBLIC KEY\")")
	var hwVersion, sd, lockFW u32Flag
	fs.Var(&hwVersion, "hw-version", "the lock's hardware version `N` (default: not checked)")
	fs.Var(&sd, "sd", "the `FWID` of the lock's SoftDevice, such as 0x0101 (default: any but 0x00)")
	fs.Var(&lockFW, "lock-fw-version", "the application version `N` the lock runs: a lower fw_version is a downgrade (default 0)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *pubPath == "" || fs.NArg() != 1 {
		return fmt.Errorf("dfu verify: -pub and one PKG.zip are required: %w", errUsage)
	}
	path := fs.Arg(0)
	pub, err := readDFUPublicKey(*pubPath)
	if err != nil {
		return fmt.Errorf("dfu verify: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("dfu verify: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, dfuMaxPackage+1))
	f.Close()
	if err != nil {
		return fmt.Errorf("dfu verify: read %s: %w", path, err)
	}
	p, err := dfu.Parse(data, dfu.Limits{MaxPackage: dfuMaxPackage})
	if err != nil {
		return fmt.Errorf("dfu verify: %s refused: %w", path, err)
	}
	dev := dfu.Device{HWVersion: hwVersion.v, SoftDeviceFWID: 0xFFFFFFFF, AppVersion: lockFW.v}
	hw := fmt.Sprintf("hw_version %d", hwVersion.v)
	if !hwVersion.set {
		// Not given: the package's own, so only the other checks apply.
		dev.HWVersion = p.Images[0].InitPacket.Init.GetHwVersion()
		hw = "hw_version not checked (no -hw-version)"
	}
	sdText := "sd_req any SoftDevice but 0x00 (no -sd)"
	if sd.set {
		dev.SoftDeviceFWID = sd.v
		sdText = fmt.Sprintf("sd_req names 0x%04X", sd.v)
	}
	if err := p.Verify(dfu.Policy{Key: pub, Device: dev}); err != nil {
		return fmt.Errorf("dfu verify: %s refused: %w", path, err)
	}
	fmt.Fprintf(stdout, "%s: verified: signed by the DFU key %s (ECDSA P-256), init command (type, SHA-256, %s, %s, fw_version not below %d), size and image hash\n",
		path, *pubPath, hw, sdText, lockFW.v)
	printImages(stdout, p)
	return nil
}
