package device

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/gatewayd/gatewayd/firmware/dfu/target"
	"github.com/gatewayd/gatewayd/firmware/lock"
)

// Mode says which program the lock runs.
type Mode uint8

// Modes.
const (
	// ModeApplication: the lock's application (firmware/lock) runs and
	// serves the lock service.
	ModeApplication Mode = iota
	// ModeBootloader: the bootloader runs in DFU mode and serves the DFU
	// service, for the one update enter-dfu authorised.
	ModeBootloader
)

// String returns "application" or "bootloader".
func (m Mode) String() string {
	if m == ModeBootloader {
		return "bootloader"
	}
	return "application"
}

// BootloaderName is the name the bootloader advertises (the SDK's
// NRF_DFU_BLE_ADV_NAME default).
const BootloaderName = "DfuTarg"

// Options configure a Device.
type Options struct {
	// Lock configures the application. Its Bootloader is the device's,
	// and Firmware is set from the running image's version at each boot.
	Lock lock.Options
	// Bootloader is the bootloader's build: the fleet's DFU key, the
	// hardware and versions before any update (Device.AppVersion is the
	// running application's), the bank size, the running image. The
	// device sets RequireAuthorisation.
	Bootloader target.Options
	// Address is the application's BLE address, "AA:BB:CC:DD:EE:FF".
	Address string
	// Version formats an application version for the lock's results;
	// nil: VersionString.
	Version func(uint32) string
}

// VersionString is the default form of an application version (the init
// packet's fw_version) in the lock's results: major*10000 + minor*100 +
// patch, so 10203 is "1.2.3".
func VersionString(v uint32) string {
	return fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
}

// Device is one reference lock: application and bootloader. It is safe
// for concurrent use.
type Device struct {
	opts Options
	bl   *target.Bootloader

	mu    sync.Mutex
	mode  Mode
	app   *lock.Lock
	boots int // the bootloader's boots seen
}

// New boots the lock's application.
func New(opts Options) (*Device, error) {
	if opts.Version == nil {
		opts.Version = VersionString
	}
	if _, err := parseAddress(opts.Address); err != nil {
		return nil, err
	}
	opts.Bootloader.RequireAuthorisation = true
	d := &Device{opts: opts}
	d.bl = target.New(opts.Bootloader)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.bootLocked(); err != nil {
		return nil, err
	}
	return d, nil
}

// bootLocked starts the application on the running image.
func (d *Device) bootLocked() error {
	_, dev := d.bl.Active()
	o := d.opts.Lock
	o.Bootloader = entry{d}
	o.Firmware = d.opts.Version(dev.AppVersion)
	l, err := lock.New(o)
	if err != nil {
		d.app = nil
		return fmt.Errorf("device: booting the application: %w", err)
	}
	d.app, d.mode, d.boots = l, ModeApplication, d.bl.Boots()
	return nil
}

// settleLocked boots the application if the bootloader started again
// since the device last looked: an activation, a power cut or a reset
// ends DFU mode.
func (d *Device) settleLocked() error {
	if d.mode == ModeBootloader && d.bl.Boots() != d.boots {
		return d.bootLocked()
	}
	return nil
}

// Mode returns what the lock runs now.
func (d *Device) Mode() Mode {
	d.mu.Lock()
	defer d.mu.Unlock()
	_ = d.settleLocked()
	return d.mode
}

// Lock returns the running application: ErrInBootloader while the
// bootloader runs. Each boot makes a new one (from the same storage).
func (d *Device) Lock() (*lock.Lock, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.settleLocked(); err != nil {
		return nil, err
	}
	if d.mode != ModeApplication {
		return nil, ErrInBootloader
	}
	return d.app, nil
}

// Bootloader returns the bootloader to connect to: ErrNotInBootloader
// while the application runs.
func (d *Device) Bootloader() (*target.Bootloader, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.settleLocked(); err != nil {
		return nil, err
	}
	if d.mode != ModeBootloader {
		return nil, ErrNotInBootloader
	}
	return d.bl, nil
}

// Firmware returns the running application image and its version.
func (d *Device) Firmware() ([]byte, uint32) {
	img, dev := d.bl.Active()
	return img, dev.AppVersion
}

// Advertising is what the lock advertises now.
type Advertising struct {
	Mode Mode
	// Address is the application's address; in bootloader mode the
	// SDK's unbonded buttonless bootloader advertises at address+1 (the
	// least significant byte, the last of the string, plus one, wrapping
	// without carry as nrf_dfu_ble.c's addr[0] += 1) so that centrals do
	// not mix up the cached GATT tables of the two.
	Address string
	// Name is empty for the application (the lock payload of
	// docs/protocol.md §1.1 identifies it), BootloaderName in DFU mode.
	Name string
}

// Advertising returns what the lock advertises now.
func (d *Device) Advertising() Advertising {
	d.mu.Lock()
	defer d.mu.Unlock()
	_ = d.settleLocked()
	if d.mode == ModeApplication {
		return Advertising{Mode: ModeApplication, Address: d.opts.Address}
	}
	return Advertising{Mode: ModeBootloader, Address: BootloaderAddress(d.opts.Address), Name: BootloaderName}
}

// BootloaderAddress returns the address the bootloader advertises for an
// application at addr: its least significant byte plus one, mod 256.
func BootloaderAddress(addr string) string {
	b, err := parseAddress(addr)
	if err != nil {
		return addr
	}
	b[5]++
	parts := make([]string, 6)
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02X", x)
	}
	return strings.Join(parts, ":")
}

func parseAddress(addr string) ([6]byte, error) {
	var b [6]byte
	parts := strings.Split(addr, ":")
	if len(parts) != 6 {
		return b, fmt.Errorf("device: BLE address %q, want AA:BB:CC:DD:EE:FF", addr)
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 16, 8)
		if err != nil || len(p) != 2 {
			return b, fmt.Errorf("device: BLE address %q, want AA:BB:CC:DD:EE:FF", addr)
		}
		b[i] = byte(n)
	}
	return b, nil
}

// PowerCut cuts the power and restores it: the bootloader boots from its
// settings page (finishing an activation it committed to), then the
// application starts on the valid image, whatever mode ran before.
func (d *Device) PowerCut() error {
	d.bl.Reset()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bootLocked()
}

// Buttonless is a write to the SDK's buttonless DFU characteristic
// (8EC90003-…): the lock has none, and refuses, whoever asks. The only
// way into the bootloader is an authorised enter-dfu.
func (d *Device) Buttonless() error { return ErrNoButtonless }

// entry is the application's side of the bootloader (lock.Bootloader);
// unexported, so that nothing but the application's enter-dfu can reset
// the lock into DFU mode.
type entry struct{ d *Device }

// AuthoriseDFU writes the hash to the bootloader's settings page.
func (e entry) AuthoriseDFU(initHash [32]byte) error {
	e.d.bl.Authorise(initHash[:])
	return nil
}

// ResetIntoBootloader resets the lock into DFU mode.
func (e entry) ResetIntoBootloader() {
	d := e.d
	d.bl.Reset()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mode, d.app, d.boots = ModeBootloader, nil, d.bl.Boots()
}
