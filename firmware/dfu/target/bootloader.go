package target

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"slices"
	"sync"

	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/dfu/dfupb"
)

// Options configure a bootloader as its build does the SDK's.
type Options struct {
	// Key is the fleet's DFU key (the SDK's dfu_public_key.c).
	Key *ecdsa.PublicKey
	// Device is the lock: hardware version (NRF_DFU_HW_VERSION), its
	// SoftDevice, and the versions it runs before the update.
	Device dfu.Device
	// BankSize is the largest image the bank takes (default 160 KiB: the
	// nRF52832's application area split in two banks beside S132 and the
	// bootloader).
	BankSize int
	// Firmware is the application running before the update.
	Firmware []byte
	// AuthorisedInitHash, when set, is the SHA-256 of the only init
	// packet the bootloader executes: the one an authorised enter-dfu
	// command named. Others are refused with operation not permitted.
	AuthorisedInitHash []byte
	// AllowDowngrade builds the bootloader without downgrade prevention
	// (NRF_DFU_APP_DOWNGRADE_PREVENTION 0). Off for the fleet.
	AllowDowngrade bool
	// Logger gets one line per refused request (nil: none).
	Logger *slog.Logger
}

const defaultBankSize = 160 << 10

// Bootloader is the reference bootloader: the settings page (progress of
// a transfer, kept across connections) and the banks.
type Bootloader struct {
	opts Options
	log  *slog.Logger

	mu   sync.Mutex
	conn *Conn // the current connection, nil when none
	// current is the object type of the last Select or Create (the SDK
	// keeps it in a static: write, CRC and execute do not name it).
	current byte

	// The init packet: its bytes so far, declared size and CRC.
	cmd     []byte
	cmdSize uint32
	cmdCRC  uint32
	// init is the executed, valid init packet (nil before), fwSize the
	// image size it declares.
	init   *dfu.InitPacket
	fwSize uint32
	// The data objects: the current object's size, the firmware offset
	// and CRC so far, and both at the last executed object.
	objSize             uint32
	offset, crc         uint32
	offsetLast, crcLast uint32
	bank                []byte
	// saved is the progress as last written to the settings page: at
	// each successful Execute (the SDK's NRF_DFU_SAVE_PROGRESS_IN_FLASH)
	// and when a transfer ends. Reset returns to it.
	saved                 settings
	dev                   dfu.Device
	active                []byte
	activations, failures int
}

// New returns a bootloader with nothing received.
func New(opts Options) *Bootloader {
	if opts.BankSize <= 0 {
		opts.BankSize = defaultBankSize
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Bootloader{opts: opts, log: log, current: dfu.ObjectCommand, dev: opts.Device, active: opts.Firmware}
}

// Active returns the firmware the lock runs and its versions.
func (b *Bootloader) Active() ([]byte, dfu.Device) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.active, b.dev
}

// Activations is how many updates the bootloader activated.
func (b *Bootloader) Activations() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.activations
}

// Progress returns the init packet's and the firmware's offsets.
func (b *Bootloader) Progress() (cmdOffset, fwOffset uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return uint32(len(b.cmd)), b.offset
}

// resetProgress forgets the transfer (nrf_dfu_settings_progress_reset).
// The bank's bytes stay: they are flash.
func (b *Bootloader) resetProgress() {
	b.cmd, b.cmdSize, b.cmdCRC = nil, 0, 0
	b.init, b.fwSize = nil, 0
	b.objSize, b.offset, b.crc, b.offsetLast, b.crcLast = 0, 0, 0, 0, 0
}

// settings is the progress the settings page holds.
type settings struct {
	cmd                                               []byte
	cmdSize, cmdCRC                                   uint32
	init                                              *dfu.InitPacket
	fwSize, objSize, offset, crc, offsetLast, crcLast uint32
}

// save writes the progress to the settings page.
func (b *Bootloader) save() {
	b.saved = settings{
		cmd: slices.Clone(b.cmd), cmdSize: b.cmdSize, cmdCRC: b.cmdCRC, init: b.init,
		fwSize: b.fwSize, objSize: b.objSize, offset: b.offset, crc: b.crc, offsetLast: b.offsetLast, crcLast: b.crcLast,
	}
}

// Reset reboots the lock into its bootloader again (a power cycle, a
// watchdog, the SDK's inactivity timeout): the connection ends and the
// progress returns to what the settings page held at the last Execute;
// bytes written since stay in flash but count for nothing.
func (b *Bootloader) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		b.conn.closed = true
		b.conn = nil
	}
	s := b.saved
	b.cmd, b.cmdSize, b.cmdCRC, b.init = slices.Clone(s.cmd), s.cmdSize, s.cmdCRC, s.init
	b.fwSize, b.objSize, b.offset, b.crc, b.offsetLast, b.crcLast = s.fwSize, s.objSize, s.offset, s.crc, s.offsetLast, s.crcLast
	b.current = dfu.ObjectCommand
}

// Connect starts a connection at the given ATT MTU (what the central
// asked for; the bootloader answers the exchange with MTU-3 rounded down
// to a multiple of 4 so that flash writes stay word-aligned, and at most
// 247). A previous connection ends.
func (b *Bootloader) Connect(attMTU int) *Conn {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		b.conn.closed = true
	}
	attMTU = min(max(attMTU, 23), 247)
	c := &Conn{b: b, mtu: 3 + (attMTU-3)&^3}
	b.conn = c
	return c
}

// Conn is one BLE connection to the bootloader.
type Conn struct {
	b       *Bootloader
	mtu     int
	notify  bool
	prn     uint16
	prnLeft uint16
	closed  bool
}

// ATTMTU is the connection's ATT MTU after the exchange.
func (c *Conn) ATTMTU() int { return c.mtu }

// MaxPacket is the longest Packet write: ATT_MTU-3.
func (c *Conn) MaxPacket() int { return c.mtu - 3 }

// EnableNotifications writes the Control Point's CCCD.
func (c *Conn) EnableNotifications() {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.notify = true
}

// Closed says whether the connection ended (after activation the
// bootloader resets).
func (c *Conn) Closed() bool {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	return c.closed
}

// Disconnect ends the connection, as a dropped link does. The transfer's
// progress stays.
func (c *Conn) Disconnect() {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.closed = true
	if c.b.conn == c {
		c.b.conn = nil
	}
}

// WriteControlPoint handles one request and returns its response
// notification.
func (c *Conn) WriteControlPoint(req []byte) ([]byte, error) {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.closed {
		return nil, ErrDisconnected
	}
	if !c.notify {
		return nil, ErrNotificationsDisabled
	}
	res, after := b.handle(c, req)
	if res.Result != dfu.ResSuccess {
		b.log.Debug("dfu request refused", "op", res.Op, "result", res.Result, "ext", res.Ext)
	}
	out := res.Marshal()
	if after != nil {
		after()
	}
	return out, nil
}

// WritePacket takes one write to the Packet characteristic and returns
// the PRN notification it triggers, if any. A write the current object
// cannot take is dropped, as the SDK drops it: the controller sees the
// offset and CRC not move.
func (c *Conn) WritePacket(data []byte) ([]byte, error) {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.closed {
		return nil, ErrDisconnected
	}
	if len(data) > c.MaxPacket() {
		return nil, ErrTooLong
	}
	if len(data) == 0 {
		return nil, nil
	}
	var offset, crc uint32
	switch b.current {
	case dfu.ObjectCommand:
		if uint32(len(b.cmd)+len(data)) > b.cmdSize {
			b.log.Debug("dfu init packet write past its size dropped")
			return nil, nil
		}
		b.cmd = append(b.cmd, data...)
		b.cmdCRC = crc32.Update(b.cmdCRC, crc32.IEEETable, data)
		offset, crc = uint32(len(b.cmd)), b.cmdCRC
	case dfu.ObjectData:
		if b.init == nil || b.offset-b.offsetLast+uint32(len(data)) > b.objSize {
			b.log.Debug("dfu data write outside an object dropped")
			return nil, nil
		}
		copy(b.bank[b.offset:], data)
		b.offset += uint32(len(data))
		b.crc = crc32.Update(b.crc, crc32.IEEETable, data)
		offset, crc = b.offset, b.crc
	default:
		return nil, nil
	}
	if c.prn == 0 {
		return nil, nil
	}
	c.prnLeft--
	if c.prnLeft > 0 {
		return nil, nil
	}
	c.prnLeft = c.prn
	return dfu.Response{Op: dfu.OpCRC, Result: dfu.ResSuccess, Offset: offset, CRC: crc}.Marshal(), nil
}

// handle runs one Control Point request; after, if set, runs once the
// response is encoded (the reset after activation).
func (b *Bootloader) handle(c *Conn, req []byte) (dfu.Response, func()) {
	if len(req) == 0 {
		return dfu.Response{Result: dfu.ResInvalidOpcode}, nil
	}
	op := dfu.Op(req[0])
	res := dfu.Response{Op: op, Result: dfu.ResSuccess}
	args := req[1:]
	fail := func(r dfu.Result) (dfu.Response, func()) { res.Result = r; return res, nil }
	wantLen := map[dfu.Op]int{dfu.OpCreate: 5, dfu.OpSetPRN: 2, dfu.OpCRC: 0, dfu.OpExecute: 0, dfu.OpSelect: 1, dfu.OpMTUGet: 0}
	n, known := wantLen[op]
	if !known {
		return fail(dfu.ResNotSupported)
	}
	if len(args) != n {
		return fail(dfu.ResInvalidParameter)
	}
	switch op {
	case dfu.OpSetPRN:
		c.prn = binary.LittleEndian.Uint16(args)
		c.prnLeft = c.prn
		return res, nil
	case dfu.OpMTUGet:
		res.MTU = uint16(c.MaxPacket())
		return res, nil
	case dfu.OpSelect, dfu.OpCreate:
		b.current = args[0]
	}
	switch b.current {
	case dfu.ObjectCommand:
		return b.command(c, op, args, res)
	case dfu.ObjectData:
		return b.data(c, op, args, res)
	}
	return fail(dfu.ResInvalidObject)
}

// command handles a request on the command object (the init packet).
func (b *Bootloader) command(c *Conn, op dfu.Op, args []byte, res dfu.Response) (dfu.Response, func()) {
	switch op {
	case dfu.OpSelect:
		res.MaxSize, res.Offset, res.CRC = dfu.MaxInitPacket, uint32(len(b.cmd)), b.cmdCRC
	case dfu.OpCRC:
		res.Offset, res.CRC = uint32(len(b.cmd)), b.cmdCRC
	case dfu.OpCreate:
		size := binary.LittleEndian.Uint32(args[1:])
		switch {
		case size == 0:
			res.Result = dfu.ResInvalidParameter
		case size > dfu.MaxInitPacket:
			res.Result = dfu.ResInsufficientResources
		default:
			b.resetProgress()
			b.cmdSize = size
			c.prnLeft = c.prn
		}
	case dfu.OpExecute:
		b.executeCommand(&res)
	}
	return res, nil
}

// executeCommand validates the init packet (nrf_dfu_validation_init_cmd_execute).
func (b *Bootloader) executeCommand(res *dfu.Response) {
	if uint32(len(b.cmd)) != b.cmdSize || b.cmdSize == 0 {
		res.Result = dfu.ResNotPermitted
		return
	}
	if b.init != nil {
		return // executed before: nothing changes
	}
	p, err := dfu.ParseInitPacket(b.cmd)
	if err != nil {
		b.log.Debug("dfu init packet does not decode", "err", err)
		res.Result = dfu.ResInvalidObject
		return
	}
	fail := func(r dfu.Result, ext dfu.ExtError, err error) {
		b.log.Debug("dfu init packet refused", "err", err)
		res.Result, res.Ext = r, ext
		b.resetProgress()
		b.save()
		b.failures++
	}
	if h := b.opts.AuthorisedInitHash; h != nil {
		sum := sha256.Sum256(b.cmd)
		if subtle.ConstantTimeCompare(sum[:], h) != 1 {
			fail(dfu.ResNotPermitted, 0, errors.New("not the authorised init packet"))
			return
		}
	}
	if err := dfu.VerifySignature(p, b.opts.Key); err != nil {
		if ext, ok := dfu.ExtErrorOf(err); ok {
			fail(dfu.ResExtError, ext, err)
		} else {
			fail(dfu.ResInvalidObject, 0, err) // a signature that does not verify
		}
		return
	}
	size, err := dfu.CheckInit(p.Init, b.dev, b.opts.AllowDowngrade)
	if err != nil {
		ext, _ := dfu.ExtErrorOf(err)
		fail(dfu.ResExtError, ext, err)
		return
	}
	if int(size) > b.opts.BankSize {
		fail(dfu.ResInsufficientResources, 0, fmt.Errorf("image of %d bytes, bank of %d", size, b.opts.BankSize))
		return
	}
	b.init, b.fwSize = p, size
	b.bank = make([]byte, size)
	b.save()
}

// data handles a request on a data object (firmware).
func (b *Bootloader) data(c *Conn, op dfu.Op, args []byte, res dfu.Response) (dfu.Response, func()) {
	switch op {
	case dfu.OpSelect:
		res.MaxSize, res.Offset, res.CRC = dfu.MaxDataObject, b.offset, b.crc
	case dfu.OpCRC:
		res.Offset, res.CRC = b.offset, b.crc
	case dfu.OpCreate:
		size := binary.LittleEndian.Uint32(args[1:])
		switch {
		case b.init == nil:
			res.Result = dfu.ResNotPermitted
		case size == 0:
			res.Result = dfu.ResInvalidParameter
		case size%dfu.PageSize != 0 && b.offsetLast+size != b.fwSize:
			res.Result = dfu.ResInvalidParameter
		case size > dfu.MaxDataObject:
			res.Result = dfu.ResInsufficientResources
		case b.offsetLast+size > b.fwSize:
			res.Result = dfu.ResNotPermitted
		default:
			b.objSize = size
			b.crc, b.offset = b.crcLast, b.offsetLast
			c.prnLeft = c.prn
		}
	case dfu.OpExecute:
		if b.init == nil || b.offset-b.offsetLast != b.objSize {
			res.Result = dfu.ResNotPermitted
			return res, nil
		}
		b.objSize = 0
		b.crcLast, b.offsetLast = b.crc, b.offset
		if b.offset == b.fwSize {
			return b.activate(c, res)
		}
		b.save()
	}
	return res, nil
}

// activate checks the whole image's hash and, when it matches, makes it
// the running firmware; the connection ends after the response, as the
// SDK's bootloader resets.
func (b *Bootloader) activate(c *Conn, res dfu.Response) (dfu.Response, func()) {
	want := b.init.Init.GetHash().GetHash()
	if subtle.ConstantTimeCompare(dfu.FirmwareHash(b.bank), want) != 1 {
		b.log.Debug("dfu image hash mismatch")
		res.Result, res.Ext = dfu.ResExtError, dfu.ExtVerificationFailed
		b.resetProgress()
		b.save()
		b.failures++
		return res, nil
	}
	switch b.init.Init.GetType() {
	case dfupb.FwType_APPLICATION:
		b.active = b.bank
		b.dev.AppVersion = b.init.Init.GetFwVersion()
	case dfupb.FwType_BOOTLOADER, dfupb.FwType_SOFTDEVICE_BOOTLOADER:
		b.dev.BootloaderVersion = b.init.Init.GetFwVersion()
	}
	b.activations++
	b.resetProgress()
	b.save()
	return res, func() {
		c.closed = true
		b.conn = nil
	}
}
