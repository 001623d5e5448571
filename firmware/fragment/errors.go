package fragment

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// these; match them with errors.Is.
var (
	// ErrBadMTU is returned by Split and AppendFragment when attMTU is
	// outside MinATTMTU..MaxATTMTU (23..517).
	ErrBadMTU = errors.New("fragment: ATT MTU out of range")
	// ErrShortFragment is returned by Reassembler.Add when a fragment is
	// shorter than HeaderSize+1 (6) bytes: empty, truncated inside the
	// header, or a header without payload. The fragment is dropped and no
	// state changes.
	ErrShortFragment = errors.New("fragment: fragment too short")
	// ErrMessageTooLarge is returned by Reassembler.Add when a fragment's
	// total_len exceeds the receiver's MaxMessage, and by Split and
	// AppendFragment when the message is longer than DefaultMaxMessage. The
	// fragment is dropped and no state changes.
	ErrMessageTooLarge = errors.New("fragment: message too large")
	// ErrBadLength is returned when lengths are inconsistent: by
	// Reassembler.Add for total_len 0 or offset+len(payload) > total_len
	// (the fragment is dropped, no state changes), and for a total_len that
	// differs from the one of the message in progress with the same msg_id
	// (that message is discarded too) or from the one of a message with the
	// same msg_id completed within Timeout (the fragment is dropped); by
	// Split and AppendFragment for an empty message or an offset outside
	// it.
	ErrBadLength = errors.New("fragment: bad length")
	// ErrConflict is returned by Reassembler.Add when a fragment carries,
	// for bytes already received, values different from those received
	// before. The message in progress is discarded.
	ErrConflict = errors.New("fragment: fragment conflicts with earlier data")
	// ErrDiscarded is returned by Reassembler.Add when a fragment belongs to
	// a message that this Reassembler discarded recently (it timed out, or
	// failed with ErrConflict or ErrBadLength): same msg_id, same total_len,
	// within the quarantine described in the package spec. The fragment is
	// dropped.
	ErrDiscarded = errors.New("fragment: fragment of a discarded message")
	// ErrTooManyInFlight is returned by Reassembler.Add when a fragment
	// would start a new message while MaxInFlight messages are already being
	// reassembled. The fragment is dropped; the messages in progress are
	// kept (nothing is evicted).
	ErrTooManyInFlight = errors.New("fragment: too many messages in flight")
	// ErrTimeout is returned by Reassembler.Expire when messages were
	// discarded because they were not complete within Timeout of their
	// first fragment. Add never returns it: it discards such messages
	// silently and leaves them for Expire to report.
	ErrTimeout = errors.New("fragment: reassembly timed out")
)
