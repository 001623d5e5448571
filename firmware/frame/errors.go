package frame

import "errors"

// Sentinel errors. Every error returned by this package wraps at least one of
// these; match them with errors.Is. An error may match more than one: the
// frame that exhausts MaxAuthFailures, for example, matches both the reason it
// was refused (such as ErrAuth) and ErrTooManyFailures and ErrClosed.
var (
	// ErrShortFrame is returned by Open when the frame is shorter than
	// Overhead (13 bytes: 1 type + 4 seq + 8 tag), including an empty frame.
	ErrShortFrame = errors.New("frame: frame too short")

	// ErrFrameTooLarge is returned by Seal when the plaintext is longer than
	// Options.MaxPlaintext, and by Open when the frame is longer than
	// Options.MaxPlaintext + Overhead.
	ErrFrameTooLarge = errors.New("frame: frame too large")

	// ErrBadType is returned when a frame type is unknown, or is not allowed
	// in the direction it travels (a Request from the Responder, a Response
	// or Event from the Initiator). Open returns it before any decryption.
	ErrBadType = errors.New("frame: bad frame type for this direction")

	// ErrBadClose is returned by Seal when the plaintext of a Close frame is
	// not exactly one byte (the reason), and by Open when a Close frame is
	// not exactly Overhead + 1 bytes long.
	ErrBadClose = errors.New("frame: Close frame must carry exactly one reason byte")

	// ErrReplay is returned by Open when the frame's sequence number is
	// inside the replay window and was already accepted once.
	ErrReplay = errors.New("frame: replayed frame")

	// ErrStale is returned by Open when the frame's sequence number is at or
	// below the highest accepted sequence number minus 64, that is, older
	// than the replay window can remember.
	ErrStale = errors.New("frame: sequence number below the replay window")

	// ErrAuth is returned by Open when the AEAD tag does not verify: the
	// frame was altered, reflected, or protected with other keys.
	ErrAuth = errors.New("frame: authentication failed")

	// ErrSeqExhausted is returned by Seal when the sending direction has
	// already used Options.MaxSeq sequence numbers. The session does not
	// send again; the Initiator must run a new EDHOC handshake (it should do
	// so when NeedsRekey reports true, well before this happens).
	ErrSeqExhausted = errors.New("frame: sequence numbers exhausted, re-handshake required")

	// ErrIdle is returned (together with ErrClosed) by the first Seal or
	// Open called Options.IdleTimeout or more after the last successful Seal
	// or Open (or after NewSession). The session is then closed.
	ErrIdle = errors.New("frame: session idle timeout")

	// ErrClosed is returned by Seal and Open on a closed session: after
	// Close, after a Close frame was sealed or opened, or after a limit
	// closed it (ErrIdle, ErrTooManyFailures), whose sentinel the error then
	// also matches.
	ErrClosed = errors.New("frame: session closed")

	// ErrPeerClosed is returned (together with ErrClosed) by Seal and Open
	// after a Close frame from the peer was opened.
	ErrPeerClosed = errors.New("frame: peer closed the session")

	// ErrTooManyFailures is returned (together with ErrClosed) once
	// Options.MaxAuthFailures frames have been refused by Open: the
	// integrity limit. The frame that reaches the limit returns it too,
	// alongside the reason it was refused.
	ErrTooManyFailures = errors.New("frame: too many refused frames, session closed")

	// ErrBadConnID is returned by NewSession when C_I or C_R is longer than
	// MaxConnIDLen (7) bytes, or when C_I equals C_R.
	ErrBadConnID = errors.New("frame: bad connection identifier")

	// ErrBadConfig is returned by NewSession when the role is unknown, the
	// exporter is nil, or an Options field is out of range.
	ErrBadConfig = errors.New("frame: bad session configuration")

	// ErrExporter is returned by NewSession when EDHOC_Exporter fails or
	// returns output of the wrong length.
	ErrExporter = errors.New("frame: EDHOC exporter failed")
)
