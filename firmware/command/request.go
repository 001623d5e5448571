package command

import (
	"fmt"
	"math"

	"github.com/fxamacker/cbor/v2"
)

// MaxRequestSize is the largest encoded request accepted, in bytes. It
// leaves room for a signed command of MaxSignedSize and fits one protected
// frame.
const MaxRequestSize = 1536

// Request is a command request: the plaintext of a Request frame (type
// 0x10), sent by the session's Initiator (gateway or phone) to the lock.
//
//	Request = { 1: op, 2: request_id, ? 3: args, ? 4: signed }
//
// At most one of Args and Signed is set. When Signed is set the arguments
// are the ones inside the signed body, and the request carries none of its
// own; when neither is set the arguments are empty.
type Request struct {
	// Op is the operation.
	Op Op
	// RequestID is chosen by the sender and echoed in the Result, to pair
	// results with requests.
	RequestID uint32
	// Args are the operation's arguments (unsigned requests only).
	Args Args
	// Signed is a signed command ([Sign], [SignAsRoot]), or nil. Its body
	// must name the same Op.
	Signed []byte
}

var requestSchema = &schema[Request]{
	name: "request",
	fields: []field[Request]{
		// request_id is decoded first, so that an error reply can echo it.
		{key: 2, name: "request_id", required: true,
			enc: func(r *Request) (any, bool, error) { return uint64(r.RequestID), true, nil },
			dec: func(r *Request, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, math.MaxUint32)
				r.RequestID = uint32(n)
				return err
			}},
		{key: 1, name: "op", required: true,
			enc: func(r *Request) (any, bool, error) {
				if !r.Op.Valid() {
					return nil, false, fmt.Errorf("%w: %d", ErrUnknownOp, uint8(r.Op))
				}
				return uint64(r.Op), true, nil
			},
			dec: func(r *Request, raw cbor.RawMessage) error {
				// Any uint decodes here; an undefined op is reported as
				// unknown_op by ParseRequest.
				n, err := decUint(raw, 0, math.MaxUint64)
				if n <= math.MaxUint8 {
					r.Op = Op(n)
				}
				return err
			}},
		{key: 3, name: "args",
			enc: func(r *Request) (any, bool, error) {
				if r.Signed != nil {
					if !r.Args.Equal(&Args{}) {
						return nil, false, fmt.Errorf("%w: args and a signed command in one request", ErrMalformed)
					}
					return nil, false, nil
				}
				b, err := encodeArgs(r.Op, &r.Args)
				if err != nil {
					return nil, false, err
				}
				if len(b) == 1 { // the empty map a0 is left out
					return nil, false, nil
				}
				return cbor.RawMessage(b), true, nil
			},
			dec: func(r *Request, raw cbor.RawMessage) error {
				// Decoded by ParseRequest once the op is known valid.
				return wantMajor(raw, majorMap, "a map")
			}},
		{key: 4, name: "signed",
			enc: func(r *Request) (any, bool, error) {
				if r.Signed == nil {
					return nil, false, nil
				}
				if len(r.Signed) == 0 || len(r.Signed) > MaxSignedSize {
					return nil, false, fmt.Errorf("%w: signed command of %d bytes, want 1..%d", ErrMalformed, len(r.Signed), MaxSignedSize)
				}
				return r.Signed, true, nil
			},
			dec: func(r *Request, raw cbor.RawMessage) error {
				if err := wantMajor(raw, majorBstr, "a byte string"); err != nil {
					return err
				}
				var b []byte
				if err := decMode.Unmarshal(raw, &b); err != nil {
					return err
				}
				if len(b) == 0 || len(b) > MaxSignedSize {
					return fmt.Errorf("signed command of %d bytes, want 1..%d", len(b), MaxSignedSize)
				}
				r.Signed = b
				return nil
			}},
	},
}

// MarshalRequest encodes r in deterministic CBOR. It fails with
// ErrUnknownOp for an undefined op and with ErrMalformed for arguments that
// break the op's table, for both Args and Signed set, or for a result larger
// than MaxRequestSize. It does not check the signed command: see
// [Verifier.Verify].
func MarshalRequest(r *Request) ([]byte, error) {
	b, err := requestSchema.marshal(r)
	if err != nil {
		return nil, wrapMalformed(err)
	}
	if len(b) > MaxRequestSize {
		return nil, fmt.Errorf("%w: request of %d bytes, limit %d", ErrMalformed, len(b), MaxRequestSize)
	}
	return b, nil
}

// ParseRequest decodes a request strictly (see the package doc): at most
// MaxRequestSize bytes; a map of exactly the keys above with values of the
// right types; the op's args table for args; and byte for byte the
// deterministic encoding of the result. Errors wrap ErrMalformed, or
// ErrUnknownOp for a well-formed request with an undefined op.
//
// On error the returned Request still has RequestID (and Op) set when the
// envelope could be read, so that the lock can echo the ID in its Result;
// they are 0 otherwise. The signed command, if any, is returned as is:
// check it with [Verifier.Verify].
func ParseRequest(b []byte) (Request, error) {
	var r Request
	if len(b) > MaxRequestSize {
		return r, fmt.Errorf("%w: request of %d bytes, limit %d", ErrMalformed, len(b), MaxRequestSize)
	}
	if err := requestSchema.decode(b, &r); err != nil {
		return partial(r), fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if !r.Op.Valid() {
		return partial(r), fmt.Errorf("%w: %d", ErrUnknownOp, uint8(r.Op))
	}
	// The args map, now that the op is known.
	var m map[uint64]cbor.RawMessage
	_ = decMode.Unmarshal(b, &m) // cannot fail: decode above accepted b
	if args, ok := m[3]; ok {
		if r.Signed != nil {
			return partial(r), fmt.Errorf("%w: args and a signed command in one request", ErrMalformed)
		}
		a, err := decodeArgs(r.Op, args)
		if err != nil {
			return partial(r), err
		}
		r.Args = a
	} else if r.Signed == nil {
		// Absent args are the empty map: the op must accept it.
		a, err := decodeArgs(r.Op, []byte{0xa0})
		if err != nil {
			return partial(r), err
		}
		r.Args = a
	}
	if err := sameEncoding(b, func() ([]byte, error) { return requestSchema.marshal(&r) }); err != nil {
		return partial(r), fmt.Errorf("%w: request: %w", ErrMalformed, err)
	}
	return r, nil
}

// partial keeps what an error reply can echo.
func partial(r Request) Request { return Request{Op: r.Op, RequestID: r.RequestID} }

// wrapMalformed wraps err with ErrMalformed unless it already wraps a
// sentinel of this package.
func wrapMalformed(err error) error {
	if StatusOf(err) != StatusInternal {
		return err
	}
	return fmt.Errorf("%w: %w", ErrMalformed, err)
}
