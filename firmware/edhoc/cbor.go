package edhoc

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Strict decoding (RFC 9528 §3.1: EDHOC uses deterministic CBOR, RFC 8949
// §4.2.1). fxamacker/cbor refuses indefinite lengths, duplicate map keys and
// invalid UTF-8 with these options; it has no switch for "shortest form", so
// every item is also decoded generically, re-encoded in core deterministic
// form and compared byte for byte. That catches non-shortest integers and
// lengths (RFC 9529 §4.3.1), unsorted map keys and non-shortest floats.
var (
	decMode cbor.DecMode
	encMode cbor.EncMode
)

func init() {
	var err error
	decMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  16,
		MaxArrayElements: 256,
		MaxMapPairs:      64,
		UTF8:             cbor.UTF8RejectInvalid,
		// Keep tags as cbor.Tag so they re-encode exactly as received.
		TimeTag:   cbor.DecTagIgnored,
		BignumTag: cbor.BignumTagForbidden,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
}

// CBOR major types (RFC 8949 §3.1).
const (
	majorUint  = 0
	majorNint  = 1
	majorBstr  = 2
	majorTstr  = 3
	majorArray = 4
	majorMap   = 5
	majorTag   = 6
	majorOther = 7
)

// reader walks a CBOR sequence (RFC 8742) one deterministic item at a time.
type reader struct {
	b    []byte
	what string // message name for error texts
}

func (r *reader) empty() bool { return len(r.b) == 0 }

// peek returns the major type of the next item.
func (r *reader) peek() (byte, bool) {
	if len(r.b) == 0 {
		return 0, false
	}
	return r.b[0] >> 5, true
}

// item returns the raw bytes of the next item after checking that it is
// well-formed and deterministically encoded.
func (r *reader) item(field string) ([]byte, error) {
	if len(r.b) == 0 {
		return nil, fmt.Errorf("%w: %s: missing %s", ErrMalformed, r.what, field)
	}
	var raw cbor.RawMessage
	rest, err := decMode.UnmarshalFirst(r.b, &raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %s: %v", ErrMalformed, r.what, field, err)
	}
	itemLen := len(r.b) - len(rest)
	raw = r.b[:itemLen:itemLen]
	if err := deterministic(raw); err != nil {
		return nil, fmt.Errorf("%w: %s: %s: %v", ErrMalformed, r.what, field, err)
	}
	r.b = rest
	return raw, nil
}

// deterministic reports whether raw is one item in core deterministic
// encoding. Single-byte heads (small ints, empty strings) are trivially so.
func deterministic(raw []byte) error {
	major := raw[0] >> 5
	switch major {
	case majorUint, majorNint:
		v, n, ok := head(raw)
		if !ok || n != len(raw) || headLen(v) != n {
			return fmt.Errorf("integer not in shortest form")
		}
		return nil
	case majorBstr, majorTstr:
		v, n, ok := head(raw)
		if !ok || headLen(v) != n {
			return fmt.Errorf("length not in shortest form")
		}
		if major == majorBstr {
			return nil
		}
	}
	var v any
	if err := decMode.Unmarshal(raw, &v); err != nil {
		return err
	}
	again, err := encMode.Marshal(v)
	if err != nil {
		return err
	}
	if !bytes.Equal(again, raw) {
		return fmt.Errorf("not deterministic CBOR")
	}
	return nil
}

// head decodes the argument of a definite-length item head.
func head(b []byte) (v uint64, n int, ok bool) {
	ai := b[0] & 0x1f
	switch {
	case ai < 24:
		return uint64(ai), 1, true
	case ai == 24 && len(b) >= 2:
		return uint64(b[1]), 2, true
	case ai == 25 && len(b) >= 3:
		return uint64(binary.BigEndian.Uint16(b[1:])), 3, true
	case ai == 26 && len(b) >= 5:
		return uint64(binary.BigEndian.Uint32(b[1:])), 5, true
	case ai == 27 && len(b) >= 9:
		return binary.BigEndian.Uint64(b[1:]), 9, true
	}
	return 0, 0, false
}

// headLen is the length of the shortest head for argument v.
func headLen(v uint64) int {
	switch {
	case v < 24:
		return 1
	case v <= 0xff:
		return 2
	case v <= 0xffff:
		return 3
	case v <= 0xffffffff:
		return 5
	}
	return 9
}

// int reads an integer item.
func (r *reader) int(field string) (int64, error) {
	if m, ok := r.peek(); ok && m != majorUint && m != majorNint {
		return 0, fmt.Errorf("%w: %s: %s is not an integer", ErrMalformed, r.what, field)
	}
	raw, err := r.item(field)
	if err != nil {
		return 0, err
	}
	var v int64
	if err := decMode.Unmarshal(raw, &v); err != nil {
		return 0, fmt.Errorf("%w: %s: %s: %v", ErrMalformed, r.what, field, err)
	}
	return v, nil
}

// bstr reads a byte string item and returns its content.
func (r *reader) bstr(field string) ([]byte, error) {
	if m, ok := r.peek(); ok && m != majorBstr {
		return nil, fmt.Errorf("%w: %s: %s is not a byte string", ErrMalformed, r.what, field)
	}
	raw, err := r.item(field)
	if err != nil {
		return nil, err
	}
	_, n, _ := head(raw)
	return raw[n:], nil
}

// compactBytes reads a byte string sent as "bstr / -24..23": a one-byte
// string whose value is a valid one-byte CBOR integer MUST be sent as that
// integer, so such a bstr is refused (RFC 9528 §3.3.2, §3.5.3.2; RFC 9529
// §4.1.2 and §4.1.7). The result is the raw byte string.
func (r *reader) compactBytes(field string) ([]byte, error) {
	m, ok := r.peek()
	if !ok {
		return nil, fmt.Errorf("%w: %s: missing %s", ErrMalformed, r.what, field)
	}
	switch m {
	case majorUint, majorNint:
		raw, err := r.item(field)
		if err != nil {
			return nil, err
		}
		if len(raw) != 1 {
			return nil, fmt.Errorf("%w: %s: %s integer outside -24..23", ErrMalformed, r.what, field)
		}
		return []byte{raw[0]}, nil
	case majorBstr:
		b, err := r.bstr(field)
		if err != nil {
			return nil, err
		}
		if len(b) == 1 && isOneByteInt(b[0]) {
			return nil, fmt.Errorf("%w: %s: %s 0x%02x must be encoded as a CBOR integer", ErrMalformed, r.what, field, b[0])
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: %s: %s is neither bstr nor int", ErrMalformed, r.what, field)
}

// connID reads a connection identifier (RFC 9528 §3.3.2), at most
// MaxConnIDLen bytes.
func (r *reader) connID(field string) ([]byte, error) {
	b, err := r.compactBytes(field)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxConnIDLen {
		return nil, fmt.Errorf("%w: %s: %s longer than %d bytes", ErrMalformed, r.what, field, MaxConnIDLen)
	}
	return b, nil
}

// isOneByteInt reports whether b, read as CBOR, is a complete integer item
// in -24..23 (0x00-0x17 or 0x20-0x37).
func isOneByteInt(b byte) bool { return b <= 0x17 || (b >= 0x20 && b <= 0x37) }

// Encoding. Heads are written by hand (RFC 8949 §3): it is trivial, always
// shortest-form, and keeps the hot path free of reflection.

func appendHead(dst []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(dst, m|byte(v))
	case v <= 0xff:
		return append(dst, m|24, byte(v))
	case v <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, m|25), uint16(v))
	case v <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(dst, m|26), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(dst, m|27), v)
}

func appendInt(dst []byte, v int64) []byte {
	if v >= 0 {
		return appendHead(dst, majorUint, uint64(v))
	}
	return appendHead(dst, majorNint, uint64(-1-v))
}

func appendBstr(dst, b []byte) []byte {
	return append(appendHead(dst, majorBstr, uint64(len(b))), b...)
}

func appendTstr(dst []byte, s string) []byte {
	return append(appendHead(dst, majorTstr, uint64(len(s))), s...)
}

// appendConnID encodes a connection identifier compactly (RFC 9528 §3.3.2).
func appendConnID(dst, id []byte) []byte {
	if len(id) == 1 && isOneByteInt(id[0]) {
		return append(dst, id[0])
	}
	return appendBstr(dst, id)
}
