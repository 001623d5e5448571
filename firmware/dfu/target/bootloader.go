package target

import (
	"bytes"
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
	// RequireAuthorisation refuses every init packet (operation not
	// permitted) while no AuthorisedInitHash is set: the fleet's build,
	// whose bootloader updates only what an enter-dfu named.
	RequireAuthorisation bool
	// AllowDowngrade builds the bootloader without downgrade prevention
	// (NRF_DFU_APP_DOWNGRADE_PREVENTION 0). Off for the fleet.
	AllowDowngrade bool
	// Cut, if set, is asked at each step of an activation whether the
	// power fails there (tests; it is asked again after each boot, so it
	// says yes once per point it cuts): the bootloader stops as a power
	// cut stops it, the connection ends, and it boots again as Reset does.
	Cut func(CutPoint) bool
	// Logger gets one line per refused request (nil: none).
	Logger *slog.Logger
}

const defaultBankSize = 160 << 10

// CutPoint names a step of activation at which a power cut is modelled.
type CutPoint int

// The steps of activation, in order, as the SDK's dual-bank bootloader
// runs them: the image's hash is checked at the last Execute; the
// settings page records the bank as valid (the commit point); the
// response is sent and the bootloader resets; the bank is copied over the
// running image; the settings page records the copy done.
const (
	// CutBeforeCommit: the hash matched, the settings page does not yet
	// say so. The old image runs; the last object is sent again.
	CutBeforeCommit CutPoint = iota + 1
	// CutAfterCommit: the settings page says the bank is valid; nothing
	// copied yet. The next boot copies it.
	CutAfterCommit
	// CutDuringCopy: half the bank is copied over the running image,
	// which is no longer valid. The next boot copies it again.
	CutDuringCopy
	// CutAfterCopy: the new image is in place, the settings page still
	// says a copy is due. The next boot copies it again (the same bytes).
	CutAfterCopy
)

// CutPoints lists the points of activation in order.
var CutPoints = []CutPoint{CutBeforeCommit, CutAfterCommit, CutDuringCopy, CutAfterCopy}

// String names the point.
func (p CutPoint) String() string {
	switch p {
	case CutBeforeCommit:
		return "before-commit"
	case CutAfterCommit:
		return "after-commit"
	case CutDuringCopy:
		return "during-copy"
	case CutAfterCopy:
		return "after-copy"
	}
	return fmt.Sprintf("cut(%d)", int(p))
}

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
	boots                 int
	// authorised is the SHA-256 of the one init packet the bootloader
	// executes (Options.AuthorisedInitHash, then Authorise): kept in the
	// settings page.
	authorised []byte
	// pending is the activation the settings page commits to: the bank
	// is valid and is copied over the running image at the next boot.
	pending *activation
}

// activation is a committed image waiting to be copied into place.
type activation struct {
	image []byte
	dev   dfu.Device
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
	return &Bootloader{opts: opts, log: log, current: dfu.ObjectCommand, dev: opts.Device, active: opts.Firmware,
		authorised: slices.Clone(opts.AuthorisedInitHash)}
}

// Authorise writes to the settings page the SHA-256 of the one init
// packet the bootloader may execute from now on: what an authorised
// enter-dfu named (the lock's application writes it before it resets
// into the bootloader). Progress kept for another init packet is
// forgotten, so that a transfer authorised before cannot go on under a
// new authorisation; progress for this one is kept, and the transfer
// resumes.
func (b *Bootloader) Authorise(initHash []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.authorised = slices.Clone(initHash)
	other := func(cmd []byte, size uint32) bool {
		sum := sha256.Sum256(cmd)
		return uint32(len(cmd)) != size || subtle.ConstantTimeCompare(sum[:], initHash) != 1
	}
	if b.saved.cmdSize > 0 && other(b.saved.cmd, b.saved.cmdSize) {
		b.resetProgress()
		b.save()
	}
	if b.cmdSize > 0 && other(b.cmd, b.cmdSize) {
		b.resetProgress()
	}
}

// Authorised returns the init packet hash the settings page authorises
// (nil: none).
func (b *Bootloader) Authorised() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.authorised)
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
	b.resetLocked()
}

// resetLocked reboots: the connection ends, an activation the settings
// page committed to is carried out (the SDK's nrf_bootloader_fw_activate
// at boot), and progress returns to the settings page.
func (b *Bootloader) resetLocked() {
	b.boots++
	if b.conn != nil {
		b.conn.closed = true
		b.conn = nil
	}
	if b.pending != nil {
		b.copyLocked()
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
	if c.closed && after == nil {
		return nil, ErrDisconnected // a power cut: no response
	}
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
	if b.authorised == nil && b.opts.RequireAuthorisation {
		fail(dfu.ResNotPermitted, 0, errors.New("no init packet is authorised: enter-dfu names one"))
		return
	}
	if h := b.authorised; h != nil {
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
	if b.cut(CutBeforeCommit) {
		return res, nil
	}
	dev := b.dev
	image := b.active
	switch b.init.Init.GetType() {
	case dfupb.FwType_APPLICATION:
		dev.AppVersion = b.init.Init.GetFwVersion()
		image = b.bank
	case dfupb.FwType_BOOTLOADER, dfupb.FwType_SOFTDEVICE_BOOTLOADER:
		dev.BootloaderVersion = b.init.Init.GetFwVersion()
	}
	// The commit point: the settings page says the bank is valid.
	b.resetProgress()
	b.pending = &activation{image: image, dev: dev}
	b.save()
	if b.cut(CutAfterCommit) {
		return res, nil
	}
	return res, func() {
		// The response is sent; the bootloader resets and, at boot,
		// copies the bank over the running image.
		c.closed = true
		b.conn = nil
		b.boots++
		b.copyLocked()
	}
}

// cut models a power cut at p if Options.Cut asks for one: the
// connection ends and the bootloader boots again from its settings page.
func (b *Bootloader) cut(p CutPoint) bool {
	if b.opts.Cut == nil || !b.opts.Cut(p) {
		return false
	}
	b.log.Debug("dfu power cut", "at", p)
	b.resetLocked()
	return true
}

// copyLocked copies the committed bank over the running image, then
// clears the commitment. A power cut during the copy leaves the running
// image half written (not bootable); the next boot copies again, from
// the bank, which the copy never touches.
func (b *Bootloader) copyLocked() {
	p := b.pending
	if len(p.image) > 1 && !bytes.Equal(b.active, p.image) {
		half := slices.Clone(b.active)
		if len(half) < len(p.image) {
			half = append(half, make([]byte, len(p.image)-len(half))...)
		}
		copy(half, p.image[:len(p.image)/2])
		b.active = half
		if b.cut(CutDuringCopy) {
			return
		}
	}
	b.active, b.dev = p.image, p.dev
	if b.cut(CutAfterCopy) {
		return
	}
	b.pending = nil
	b.activations++
}

// Boots is how many times the bootloader started again: a Reset, a
// power cut, the reset after an activation. The lock leaves DFU mode at
// each (firmware/lock/device).
func (b *Bootloader) Boots() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.boots
}
