package controller

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"time"

	"github.com/gatewayd/gatewayd/firmware/dfu"
)

// Transport is one connection to a bootloader's DFU service.
type Transport interface {
	// WriteControlPoint writes a request to the Control Point (write
	// with response). Notifications must be enabled.
	WriteControlPoint(ctx context.Context, req []byte) error
	// WritePacket writes to the Packet characteristic (write without
	// response), at most ATTMTU()-3 bytes.
	WritePacket(ctx context.Context, data []byte) error
	// Notifications delivers the Control Point's notifications in
	// order; it is closed when the link drops.
	Notifications() <-chan []byte
	// ATTMTU is the connection's ATT MTU.
	ATTMTU() int
}

// Options configure a controller. The zero value works.
type Options struct {
	// PRN is the number of Packet writes between receipt notifications
	// (default 12; negative: none, the CRC is checked per object only).
	PRN int
	// ResponseTimeout bounds the wait for each response (default 10 s, a
	// safety net against a silent target, not a pace).
	ResponseTimeout time.Duration
	// Retries is how often an object whose CRC check fails is re-sent
	// (default 3).
	Retries int
	// Progress, if set, is called after each executed data object with
	// the firmware bytes the target holds and the image's size.
	Progress func(done, total int)
	// Logger (nil: none).
	Logger *slog.Logger
}

// Controller sends images to bootloaders.
type Controller struct {
	opts Options
	log  *slog.Logger
}

// New returns a controller.
func New(opts Options) *Controller {
	if opts.PRN == 0 {
		opts.PRN = 12
	}
	if opts.PRN < 0 {
		opts.PRN = 0
	}
	if opts.ResponseTimeout <= 0 {
		opts.ResponseTimeout = 10 * time.Second
	}
	if opts.Retries <= 0 {
		opts.Retries = 3
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Controller{opts: opts, log: log}
}

// Stats count what one Send did.
type Stats struct {
	// ResumedAt is the firmware offset the target reported at the start
	// (0 for a fresh transfer).
	ResumedAt int
	// InitResumed says the init packet was already there.
	InitResumed bool
	// PacketWrites and PacketBytes count Packet writes (init packet and
	// firmware, re-sends included).
	PacketWrites, PacketBytes int
	// Requests counts Control Point requests (each one round trip).
	Requests int
	// Receipts counts PRN notifications waited for (each a round trip).
	Receipts int
}

// session is one Send over one transport.
type session struct {
	c     *Controller
	tr    Transport
	ctx   context.Context
	stats Stats
}

// Send transfers one image and returns when the target has executed its
// last data object (it then validates, activates and resets) or on the
// first error. On ErrDisconnected, Send again on a new connection resumes.
func (c *Controller) Send(ctx context.Context, tr Transport, img *dfu.Image) (Stats, error) {
	s := &session{c: c, tr: tr, ctx: ctx}
	if img == nil || img.InitPacket == nil || len(img.Firmware) == 0 {
		return s.stats, ErrNoImage
	}
	if err := s.request(dfu.SetPRNRequest(uint16(c.opts.PRN)), dfu.OpSetPRN, nil); err != nil {
		return s.stats, err
	}
	if err := s.sendInit(img.InitPacket.Raw); err != nil {
		return s.stats, fmt.Errorf("controller: init packet: %w", err)
	}
	if err := s.sendFirmware(img.Firmware); err != nil {
		return s.stats, fmt.Errorf("controller: firmware: %w", err)
	}
	return s.stats, nil
}

// request writes a Control Point request and waits for its response;
// a response other than success is a *dfu.ResponseError.
func (s *session) request(req []byte, op dfu.Op, out *dfu.Response) error {
	s.stats.Requests++
	if err := s.tr.WriteControlPoint(s.ctx, req); err != nil {
		return fmt.Errorf("%w: write %s: %v", ErrDisconnected, op, err)
	}
	r, err := s.response(op)
	if err != nil {
		return err
	}
	if out != nil {
		*out = r
	}
	return nil
}

// response waits for the response to op.
func (s *session) response(op dfu.Op) (dfu.Response, error) {
	timer := time.NewTimer(s.c.opts.ResponseTimeout)
	defer timer.Stop()
	select {
	case b, ok := <-s.tr.Notifications():
		if !ok {
			return dfu.Response{}, fmt.Errorf("%w: waiting for the %s response", ErrDisconnected, op)
		}
		r, err := dfu.ParseResponse(b)
		if err != nil {
			return dfu.Response{}, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		if r.Op != op {
			return dfu.Response{}, fmt.Errorf("%w: response to %s while waiting for %s", ErrProtocol, r.Op, op)
		}
		if r.Result != dfu.ResSuccess {
			return r, &dfu.ResponseError{Op: r.Op, Result: r.Result, Ext: r.Ext}
		}
		return r, nil
	case <-timer.C:
		return dfu.Response{}, fmt.Errorf("%w: %s after %v", ErrTimeout, op, s.c.opts.ResponseTimeout)
	case <-s.ctx.Done():
		return dfu.Response{}, fmt.Errorf("controller: waiting for %s: %w", op, s.ctx.Err())
	}
}

// errMismatch is a stream whose offset or CRC came back wrong: the object
// is re-sent.
var errMismatch = errors.New("offset or CRC mismatch")

// stream writes data in ATT_MTU-3 chunks from offset (CRC crc so far),
// checks the target's offset and CRC at every receipt notification and
// at the end, and returns the CRC after data.
func (s *session) stream(data []byte, offset int, crc uint32) (uint32, error) {
	size := s.tr.ATTMTU() - 3
	if size <= 0 {
		return 0, fmt.Errorf("%w: ATT MTU %d", ErrProtocol, s.tr.ATTMTU())
	}
	check := func(r dfu.Response) error {
		if int(r.Offset) != offset || r.CRC != crc {
			s.c.log.Debug("dfu offset or CRC mismatch", "want_offset", offset, "got_offset", r.Offset)
			return errMismatch
		}
		return nil
	}
	n := 0
	for i := 0; i < len(data); i += size {
		chunk := data[i:min(i+size, len(data))]
		if err := s.tr.WritePacket(s.ctx, chunk); err != nil {
			return 0, fmt.Errorf("%w: write packet: %v", ErrDisconnected, err)
		}
		s.stats.PacketWrites++
		s.stats.PacketBytes += len(chunk)
		crc = crc32.Update(crc, crc32.IEEETable, chunk)
		offset += len(chunk)
		n++
		if s.c.opts.PRN > 0 && n%s.c.opts.PRN == 0 {
			s.stats.Receipts++
			r, err := s.response(dfu.OpCRC)
			if err != nil {
				return 0, err
			}
			if err := check(r); err != nil {
				return 0, err
			}
		}
	}
	var r dfu.Response
	if err := s.request(dfu.CRCRequest(), dfu.OpCRC, &r); err != nil {
		return 0, err
	}
	return crc, check(r)
}

// sendInit sends the init packet as the command object, or completes the
// one the target holds (pc-nrfutil's send_init_packet).
func (s *session) sendInit(init []byte) error {
	var sel dfu.Response
	if err := s.request(dfu.SelectRequest(dfu.ObjectCommand), dfu.OpSelect, &sel); err != nil {
		return err
	}
	if len(init) > int(sel.MaxSize) {
		return fmt.Errorf("%w: %d bytes, target takes %d", ErrInitTooLarge, len(init), sel.MaxSize)
	}
	if off := int(sel.Offset); off > 0 && off <= len(init) && crc32.ChecksumIEEE(init[:off]) == sel.CRC {
		s.stats.InitResumed = true
		_, err := s.stream(init[off:], off, sel.CRC)
		if err == nil {
			return s.request(dfu.ExecuteRequest(), dfu.OpExecute, nil)
		}
		if !errors.Is(err, errMismatch) {
			return err
		}
		s.stats.InitResumed = false
	}
	for attempt := 0; ; attempt++ {
		if err := s.request(dfu.CreateRequest(dfu.ObjectCommand, uint32(len(init))), dfu.OpCreate, nil); err != nil {
			return err
		}
		_, err := s.stream(init, 0, 0)
		if err == nil {
			return s.request(dfu.ExecuteRequest(), dfu.OpExecute, nil)
		}
		if !errors.Is(err, errMismatch) {
			return err
		}
		if attempt+1 >= s.c.opts.Retries {
			return fmt.Errorf("%w: init packet, %d attempts", ErrCRC, attempt+1)
		}
	}
}

// sendFirmware sends the image as data objects from where the target
// stands (pc-nrfutil's send_firmware).
func (s *session) sendFirmware(fw []byte) error {
	var sel dfu.Response
	if err := s.request(dfu.SelectRequest(dfu.ObjectData), dfu.OpSelect, &sel); err != nil {
		return err
	}
	max := int(sel.MaxSize)
	off, crc := int(sel.Offset), sel.CRC
	if max <= 0 || off > len(fw) {
		return fmt.Errorf("%w: select data: max size %d, offset %d of %d", ErrProtocol, max, off, len(fw))
	}
	s.stats.ResumedAt = off
	if off > 0 {
		var err error
		if off, crc, err = s.recover(fw, max, off, crc); err != nil {
			return err
		}
	}
	for off < len(fw) {
		obj := fw[off:min(off+max, len(fw))]
		var next uint32
		for attempt := 0; ; attempt++ {
			if err := s.request(dfu.CreateRequest(dfu.ObjectData, uint32(len(obj))), dfu.OpCreate, nil); err != nil {
				return err
			}
			var err error
			next, err = s.stream(obj, off, crc)
			if err == nil {
				break
			}
			if !errors.Is(err, errMismatch) {
				return err
			}
			if attempt+1 >= s.c.opts.Retries {
				return fmt.Errorf("%w: object at %d, %d attempts", ErrCRC, off, attempt+1)
			}
		}
		if err := s.request(dfu.ExecuteRequest(), dfu.OpExecute, nil); err != nil {
			return err
		}
		off, crc = off+len(obj), next
		if s.c.opts.Progress != nil {
			s.c.opts.Progress(off, len(fw))
		}
	}
	return nil
}

// recover continues from the target's offset: a wrong CRC drops the
// object in flight (or the last one, at an object boundary); a right one
// completes the object in flight and executes it (executing an executed
// object again changes nothing).
func (s *session) recover(fw []byte, max, off int, crc uint32) (int, uint32, error) {
	rem := off % max
	if crc32.ChecksumIEEE(fw[:off]) != crc {
		if rem != 0 {
			off -= rem
		} else {
			off -= max
		}
		return off, crc32.ChecksumIEEE(fw[:off]), nil
	}
	if rem != 0 && off != len(fw) {
		next, err := s.stream(fw[off:min(off-rem+max, len(fw))], off, crc)
		if errors.Is(err, errMismatch) {
			off -= rem
			return off, crc32.ChecksumIEEE(fw[:off]), nil
		}
		if err != nil {
			return 0, 0, err
		}
		off, crc = min(off-rem+max, len(fw)), next
	}
	if err := s.request(dfu.ExecuteRequest(), dfu.OpExecute, nil); err != nil {
		return 0, 0, err
	}
	return off, crc, nil
}
