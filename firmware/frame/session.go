package frame

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gatewayd/gatewayd/firmware/internal/ccm"
)

// Exporter is EDHOC_Exporter (RFC 9528 §4.2.1) of a completed handshake:
// it returns length bytes of keying material for (label, context).
type Exporter func(label uint, context []byte, length int) ([]byte, error)

// Options are the limits of a Session. The zero value of every field selects
// its default.
type Options struct {
	// MaxSeq is the number of frames each direction may send under its key:
	// sequence numbers 0 .. MaxSeq-1. Seal refuses beyond it with
	// ErrSeqExhausted, and NeedsRekey reports true from MaxSeq - MaxSeq/10
	// on. Default DefaultMaxSeq (2^20); at most 2^32.
	MaxSeq uint64
	// MaxAuthFailures is the number of frames Open may refuse, for any
	// reason, before the session closes with ErrTooManyFailures.
	// Default DefaultMaxAuthFailures (8).
	MaxAuthFailures int
	// IdleTimeout closes the session when a Seal or Open starts this long
	// or longer after the last successful Seal or Open (or NewSession).
	// Default DefaultIdleTimeout (30 s).
	IdleTimeout time.Duration
	// MaxPlaintext is the largest plaintext Seal accepts, and
	// MaxPlaintext + Overhead the largest frame Open accepts.
	// Default DefaultMaxPlaintext (2035); at most 65535 (CCM with L = 2).
	MaxPlaintext int
	// Now is the clock used for the idle timeout. Default time.Now.
	Now func() time.Time
}

// Session is the protected channel of one EDHOC session, seen from one
// endpoint. See the package documentation for its concurrency rules.
type Session struct {
	role     Role
	maxSeq   uint64
	rekeyAt  uint64
	maxFail  int
	idle     time.Duration
	maxPlain int
	now      func() time.Time
	start    time.Time
	// monotonic is set when now is time.Now (Options.Now was nil).
	monotonic bool

	// last is the time of the last successful Seal or Open, as a duration
	// since start in nanoseconds.
	last atomic.Int64
	// closed is nil while the session is open.
	closed atomic.Pointer[closeState]

	sendMu sync.Mutex
	snd    sender

	recvMu sync.Mutex
	rcv    receiver
}

// closeState records why a session closed; cause is nil for a local Close
// or a sealed Close frame.
type closeState struct{ cause error }

// sender is the sending direction's state, guarded by Session.sendMu.
type sender struct {
	aead  cipher.AEAD
	base  [NonceLen]byte // nonce of seq 0: precomputed (S || ID_PIV || 0) ^ IV
	dir   direction
	next  uint64 // next sequence number to use
	nonce [NonceLen]byte
	aad   [AADLen]byte
}

// receiver is the receiving direction's state, guarded by Session.recvMu.
type receiver struct {
	aead     cipher.AEAD
	base     [NonceLen]byte
	dir      direction
	win      window
	failures int
	nonce    [NonceLen]byte
	aad      [AADLen]byte
}

// NewSession derives the frame keys of one EDHOC session and returns the
// protected channel of the local endpoint in the given role.
//
// exp is the session's EDHOC_Exporter; it is called three times, with
// labels LabelKeyI2R, LabelKeyR2I and LabelCommonIV and an empty context,
// and is not kept. cI and cR are the raw connection identifiers C_I and C_R
// of the handshake (0 to MaxConnIDLen bytes each, different from each
// other): the Initiator's Sender ID is C_R and the Responder's is C_I
// (RFC 9528 Appendix A.1). They are copied.
func NewSession(role Role, exp Exporter, cI, cR []byte, opts Options) (*Session, error) {
	if role != Initiator && role != Responder {
		return nil, fmt.Errorf("%w: unknown role %d", ErrBadConfig, uint8(role))
	}
	if exp == nil {
		return nil, fmt.Errorf("%w: nil exporter", ErrBadConfig)
	}
	if len(cI) > MaxConnIDLen || len(cR) > MaxConnIDLen {
		return nil, fmt.Errorf("%w: C_I is %d bytes and C_R is %d bytes, at most %d allowed",
			ErrBadConnID, len(cI), len(cR), MaxConnIDLen)
	}
	if bytes.Equal(cI, cR) {
		return nil, fmt.Errorf("%w: C_I equals C_R", ErrBadConnID)
	}
	s := &Session{
		role:     role,
		maxSeq:   opts.MaxSeq,
		maxFail:  opts.MaxAuthFailures,
		idle:     opts.IdleTimeout,
		maxPlain: opts.MaxPlaintext,
		now:      opts.Now,
	}
	switch {
	case s.maxSeq == 0:
		s.maxSeq = DefaultMaxSeq
	case s.maxSeq > 1<<32:
		return nil, fmt.Errorf("%w: MaxSeq %d exceeds 2^32", ErrBadConfig, s.maxSeq)
	}
	s.rekeyAt = s.maxSeq - s.maxSeq/10
	switch {
	case s.maxFail == 0:
		s.maxFail = DefaultMaxAuthFailures
	case s.maxFail < 0:
		return nil, fmt.Errorf("%w: negative MaxAuthFailures", ErrBadConfig)
	}
	switch {
	case s.idle == 0:
		s.idle = DefaultIdleTimeout
	case s.idle < 0:
		return nil, fmt.Errorf("%w: negative IdleTimeout", ErrBadConfig)
	}
	switch {
	case s.maxPlain == 0:
		s.maxPlain = DefaultMaxPlaintext
	case s.maxPlain < 0 || s.maxPlain > maxCCMPlaintext:
		return nil, fmt.Errorf("%w: MaxPlaintext %d outside 1..%d", ErrBadConfig, s.maxPlain, maxCCMPlaintext)
	}
	if s.now == nil {
		// elapsed reads only the monotonic clock then (time.Since), half
		// the cost of time.Now, which is a visible part of a frame's cost.
		s.monotonic = true
		s.now = time.Now
	}

	kI2R, err := export(exp, LabelKeyI2R, KeyLen)
	if err != nil {
		return nil, err
	}
	defer clear(kI2R)
	kR2I, err := export(exp, LabelKeyR2I, KeyLen)
	if err != nil {
		return nil, err
	}
	defer clear(kR2I)
	iv, err := export(exp, LabelCommonIV, CommonIVLen)
	if err != nil {
		return nil, err
	}
	defer clear(iv)
	aeadI2R, err := newAEAD(kI2R)
	if err != nil {
		return nil, err
	}
	aeadR2I, err := newAEAD(kR2I)
	if err != nil {
		return nil, err
	}

	// RFC 9528 Appendix A.1: the Initiator's Sender ID is C_R, the
	// Responder's is C_I. Each direction has its own key; both share
	// COMMON_IV, and the Sender IDs (which differ) keep their nonces apart.
	if role == Initiator {
		s.snd = sender{aead: aeadI2R, base: nonceBase(cR, iv), dir: dirI2R}
		s.rcv = receiver{aead: aeadR2I, base: nonceBase(cI, iv), dir: dirR2I, win: newWindow()}
	} else {
		s.snd = sender{aead: aeadR2I, base: nonceBase(cI, iv), dir: dirR2I}
		s.rcv = receiver{aead: aeadI2R, base: nonceBase(cR, iv), dir: dirI2R, win: newWindow()}
	}
	s.start = s.now()
	return s, nil
}

// export calls the exporter with an empty context and checks the length.
func export(exp Exporter, label uint, n int) ([]byte, error) {
	out, err := exp(label, []byte{}, n)
	if err != nil {
		return nil, fmt.Errorf("%w: label %d: %w", ErrExporter, label, err)
	}
	if len(out) != n {
		clear(out)
		return nil, fmt.Errorf("%w: label %d: got %d bytes, want %d", ErrExporter, label, len(out), n)
	}
	return out, nil
}

// newAEAD returns AES-CCM-16-64-128 under key.
func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	a, err := ccm.New(block, TagLen, NonceLen)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	return a, nil
}

// Seal protects plaintext as a frame of type typ with the next sequence
// number of the sending direction, appends the frame to dst and returns the
// extended slice. The frame is len(plaintext) + Overhead bytes long. When dst
// has that much spare capacity, Seal does not allocate.
//
// plaintext must not overlap the spare capacity of dst, except that it may
// start exactly at dst[len(dst)+HeaderLen:] to seal in place; the AEAD
// panics on any other overlap rather than write over its own input.
//
// typ must be allowed from the local role (Initiator: Request, Close;
// Responder: Response, Event, Close), or Seal returns ErrBadType. A Close
// frame carries exactly one byte, a CloseReason, and closes the session once
// sealed. On error dst is returned unchanged and no sequence number is used.
func (s *Session) Seal(dst []byte, typ Type, plaintext []byte) ([]byte, error) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if err := s.closedErr(); err != nil {
		s.snd.wipe()
		return dst, err
	}
	now := s.elapsed()
	if err := s.checkIdle(now); err != nil {
		s.snd.wipe()
		return dst, err
	}
	if !allowed(typ, s.snd.dir) {
		return dst, fmt.Errorf("%w: %v cannot be sent by the %v", ErrBadType, typ, s.role)
	}
	if typ == TypeClose && len(plaintext) != 1 {
		return dst, fmt.Errorf("%w: got %d bytes", ErrBadClose, len(plaintext))
	}
	if len(plaintext) > s.maxPlain {
		return dst, fmt.Errorf("%w: plaintext is %d bytes, at most %d allowed", ErrFrameTooLarge, len(plaintext), s.maxPlain)
	}
	if s.snd.next >= s.maxSeq {
		return dst, fmt.Errorf("%w: %d frames sent", ErrSeqExhausted, s.snd.next)
	}
	seq := uint32(s.snd.next)
	s.snd.next++

	makeNonce(&s.snd.nonce, &s.snd.base, seq)
	makeAAD(&s.snd.aad, s.snd.dir, typ, seq)
	dst = slices.Grow(dst, Overhead+len(plaintext))
	n := len(dst)
	dst = dst[:n+HeaderLen]
	dst[n] = byte(typ)
	binary.BigEndian.PutUint32(dst[n+1:n+HeaderLen], seq)
	dst = s.snd.aead.Seal(dst, s.snd.nonce[:], plaintext, s.snd.aad[:])
	s.touch(now)
	if typ == TypeClose {
		s.markClosed(nil)
		s.snd.wipe()
	}
	return dst, nil
}

// Open checks and decrypts one frame from the peer, appends its plaintext to
// dst and returns the frame type and the extended slice. When dst has
// len(frame) - Overhead bytes of spare capacity, Open does not allocate;
// dst may be frame[:0] to open in place. When dst's spare capacity
// overlaps frame in any way, Open decrypts inside frame (overwriting its
// ciphertext, and zeroing it if the tag fails) and moves the plaintext to
// dst.
//
// The checks, in order (docs/protocol.md §6.8, "Receiver checks"): the session
// is open and not idle; Overhead <= len(frame) <= MaxPlaintext + Overhead
// (ErrShortFrame, ErrFrameTooLarge); the type is known and allowed from the
// peer's role (ErrBadType), and a Close frame is Overhead + 1 bytes
// (ErrBadClose); the sequence number is not stale or replayed (ErrStale,
// ErrReplay); the tag verifies (ErrAuth). Only then is the sequence number
// recorded in the replay window and the plaintext released. Every refused
// frame counts toward MaxAuthFailures. A Close frame that opens closes the
// session; its plaintext is the one-byte CloseReason. On error dst is
// returned unchanged.
func (s *Session) Open(dst, frame []byte) (Type, []byte, error) {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	if err := s.closedErr(); err != nil {
		s.rcv.wipe()
		return 0, dst, err
	}
	now := s.elapsed()
	if err := s.checkIdle(now); err != nil {
		s.rcv.wipe()
		return 0, dst, err
	}
	typ, seq, err := s.checkFrame(frame)
	if err != nil {
		return 0, dst, s.refuse(err)
	}
	makeNonce(&s.rcv.nonce, &s.rcv.base, seq)
	makeAAD(&s.rcv.aad, s.rcv.dir, typ, seq)
	body := frame[HeaderLen:]
	var out []byte
	if spare := dst[len(dst):cap(dst)]; len(spare) >= len(body)-TagLen &&
		overlaps(spare[:len(body)-TagLen], body) && &spare[0] != &body[0] {
		// The AEAD takes its output exactly over its input or apart from
		// it: open in place inside the frame, then move the plaintext down.
		var pt []byte
		if pt, err = s.rcv.aead.Open(body[:0], s.rcv.nonce[:], body, s.rcv.aad[:]); err == nil {
			out = append(dst, pt...)
		}
	} else {
		out, err = s.rcv.aead.Open(dst, s.rcv.nonce[:], body, s.rcv.aad[:])
	}
	if err != nil {
		return 0, dst, s.refuse(fmt.Errorf("%w: %v frame, seq %d", ErrAuth, typ, seq))
	}
	s.rcv.win.accept(seq)
	s.touch(now)
	if typ == TypeClose {
		s.markClosed(ErrPeerClosed)
		s.rcv.wipe()
	}
	return typ, out, nil
}

// overlaps reports whether x's and y's memory share any byte (the check
// of golang.org/x/crypto/internal/alias.AnyOverlap).
func overlaps(x, y []byte) bool {
	return len(x) > 0 && len(y) > 0 &&
		uintptr(unsafe.Pointer(&x[0])) <= uintptr(unsafe.Pointer(&y[len(y)-1])) &&
		uintptr(unsafe.Pointer(&y[0])) <= uintptr(unsafe.Pointer(&x[len(x)-1]))
}

// checkFrame runs the receiver checks that come before decryption.
func (s *Session) checkFrame(frame []byte) (Type, uint32, error) {
	if len(frame) < Overhead {
		return 0, 0, fmt.Errorf("%w: %d bytes, at least %d needed", ErrShortFrame, len(frame), Overhead)
	}
	if len(frame) > s.maxPlain+Overhead {
		return 0, 0, fmt.Errorf("%w: %d bytes, at most %d allowed", ErrFrameTooLarge, len(frame), s.maxPlain+Overhead)
	}
	typ := Type(frame[0])
	if !allowed(typ, s.rcv.dir) {
		return 0, 0, fmt.Errorf("%w: %v from the peer of a %v", ErrBadType, typ, s.role)
	}
	if typ == TypeClose && len(frame) != Overhead+1 {
		return 0, 0, fmt.Errorf("%w: frame is %d bytes", ErrBadClose, len(frame))
	}
	seq := binary.BigEndian.Uint32(frame[1:HeaderLen])
	if err := s.rcv.win.check(seq); err != nil {
		return 0, 0, fmt.Errorf("%w: seq %d, highest accepted %d", err, seq, s.rcv.win.top)
	}
	return typ, seq, nil
}

// refuse counts a refused frame toward MaxAuthFailures. recvMu is held.
func (s *Session) refuse(err error) error {
	s.rcv.failures++
	if s.rcv.failures < s.maxFail {
		return err
	}
	s.markClosed(ErrTooManyFailures)
	s.rcv.wipe()
	return fmt.Errorf("%w (%w after %d refused frames, %w)", err, ErrTooManyFailures, s.rcv.failures, ErrClosed)
}

// NeedsRekey reports whether either direction has used 90% of MaxSeq
// (precisely, MaxSeq - MaxSeq/10 sequence numbers): the local sender, or the
// peer as seen from the highest sequence number accepted. The Initiator then
// runs a new EDHOC handshake; the Responder may send a Close frame with
// CloseRekey to ask for one.
func (s *Session) NeedsRekey() bool {
	s.sendMu.Lock()
	sent := s.snd.next
	s.sendMu.Unlock()
	s.recvMu.Lock()
	top := s.rcv.win.top
	s.recvMu.Unlock()
	return sent >= s.rekeyAt || top+1 >= int64(s.rekeyAt)
}

// Close closes the session and drops its keys. Later Seal and Open calls
// return ErrClosed. It is safe to call more than once and concurrently with
// Seal and Open.
func (s *Session) Close() {
	s.markClosed(nil)
	s.sendMu.Lock()
	s.snd.wipe()
	s.sendMu.Unlock()
	s.recvMu.Lock()
	s.rcv.wipe()
	s.recvMu.Unlock()
}

// markClosed closes the session; the first cause wins.
func (s *Session) markClosed(cause error) {
	s.closed.CompareAndSwap(nil, &closeState{cause: cause})
}

// closedErr returns the error of a closed session, nil while open.
func (s *Session) closedErr() error {
	cs := s.closed.Load()
	switch {
	case cs == nil:
		return nil
	case cs.cause == nil:
		return ErrClosed
	default:
		return fmt.Errorf("%w (%w)", ErrClosed, cs.cause)
	}
}

// elapsed returns the time since NewSession.
func (s *Session) elapsed() time.Duration {
	if s.monotonic {
		return time.Since(s.start)
	}
	return s.now().Sub(s.start)
}

// checkIdle closes the session when it has been idle for IdleTimeout.
func (s *Session) checkIdle(now time.Duration) error {
	idleFor := now - time.Duration(s.last.Load())
	if idleFor < s.idle {
		return nil
	}
	s.markClosed(ErrIdle)
	return fmt.Errorf("%w: idle for %v (%w)", ErrIdle, idleFor, ErrClosed)
}

// touch records a successful Seal or Open at now; last never moves back.
func (s *Session) touch(now time.Duration) {
	for {
		old := s.last.Load()
		if int64(now) <= old || s.last.CompareAndSwap(old, int64(now)) {
			return
		}
	}
}

func (d *sender) wipe() {
	d.aead = nil
	clear(d.base[:])
	clear(d.nonce[:])
}

func (d *receiver) wipe() {
	d.aead = nil
	clear(d.base[:])
	clear(d.nonce[:])
}
