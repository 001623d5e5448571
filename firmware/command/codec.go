package command

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// Strict CBOR. Every map of this package has unsigned integer keys and is
// described by one table ([schema]) that drives both its encoder and its
// decoder, so the two cannot disagree. The decoder refuses, through
// fxamacker/cbor's options, indefinite lengths, duplicate map keys, tags,
// invalid UTF-8, trailing bytes and excessive nesting; the table refuses
// unknown keys, missing required keys and values of the wrong major type or
// out of range. fxamacker/cbor has no switch for "shortest form only", so
// every message is finally re-encoded in core deterministic form (RFC 8949
// §4.2.1) and compared byte for byte with what was received: only the one
// deterministic encoding of a message is accepted. The decoder's limits
// (8 levels of nesting, 64 array elements, 16 map pairs) bound what the
// opaque items this package carries (read-audit data) may hold.
var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  64,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// CBOR major types (RFC 8949 §3.1).
const (
	majorUint  = 0
	majorBstr  = 2
	majorTstr  = 3
	majorArray = 4
	majorMap   = 5
)

// maxTime is the largest time value: times are uint32 seconds, as in the
// credentials, so that C can hold them in a uint32_t (until 2106-02-07).
const maxTime = math.MaxUint32

// field is one entry of a map's table: its key, whether it is required, and
// how to move its value between the Go struct T and CBOR.
type field[T any] struct {
	key  uint64
	name string
	// required fields are always encoded and must be present when
	// decoding. Optional fields are encoded only when enc reports them
	// present, and left at their zero value when absent.
	required bool
	// enc returns the value to encode (uint64, string, []byte,
	// cbor.RawMessage or a nested encoded map) and whether an optional
	// field is present. It validates the value.
	enc func(v *T) (val any, present bool, err error)
	// dec decodes and validates one value into v.
	dec func(v *T, raw cbor.RawMessage) error
}

// schema is the table of one map type.
type schema[T any] struct {
	name   string
	fields []field[T]
	// check, if not nil, validates rules across fields; it runs after
	// every field was encoded or decoded.
	check func(v *T) error
}

// encode returns the map of v, ready for encMode.Marshal (which sorts the
// keys in deterministic order).
func (s *schema[T]) encode(v *T) (map[uint64]any, error) {
	m := make(map[uint64]any, len(s.fields))
	for i := range s.fields {
		f := &s.fields[i]
		val, present, err := f.enc(v)
		if err != nil {
			return nil, fmt.Errorf("%s %d (%s): %w", s.name, f.key, f.name, err)
		}
		if present || f.required {
			m[f.key] = val
		}
	}
	if s.check != nil {
		if err := s.check(v); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return m, nil
}

// marshal encodes v in deterministic CBOR.
func (s *schema[T]) marshal(v *T) ([]byte, error) {
	m, err := s.encode(v)
	if err != nil {
		return nil, err
	}
	return encMode.Marshal(m)
}

// decode decodes the map raw into v, strictly, except for the final
// re-encode-and-compare, which the caller does on the whole message.
func (s *schema[T]) decode(raw []byte, v *T) error {
	if len(raw) == 0 || raw[0]>>5 != majorMap {
		return fmt.Errorf("%s: want a map", s.name)
	}
	var m map[uint64]cbor.RawMessage
	if err := decMode.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	seen := 0
	for i := range s.fields {
		f := &s.fields[i]
		val, ok := m[f.key]
		if !ok {
			if f.required {
				return fmt.Errorf("%s: key %d (%s) missing", s.name, f.key, f.name)
			}
			continue
		}
		seen++
		if err := f.dec(v, val); err != nil {
			return fmt.Errorf("%s %d (%s): %w", s.name, f.key, f.name, err)
		}
	}
	if seen != len(m) {
		return fmt.Errorf("%s: unknown key in %v", s.name, keysOf(m))
	}
	if s.check != nil {
		if err := s.check(v); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

func keysOf(m map[uint64]cbor.RawMessage) []uint64 {
	ks := make([]uint64, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// sameEncoding re-encodes with enc and compares with raw: the last step of
// every strict decode.
func sameEncoding(raw []byte, enc func() ([]byte, error)) error {
	again, err := enc()
	if err != nil {
		return err
	}
	if !bytes.Equal(again, raw) {
		return errors.New("not in core deterministic encoding")
	}
	return nil
}

// canonicalItem checks that raw is one well-formed CBOR data item, under the
// strict decoder's limits, in core deterministic encoding. It is used for
// items this package carries without knowing their schema.
func canonicalItem(raw []byte) error {
	var v any
	if err := decMode.Unmarshal(raw, &v); err != nil {
		return err
	}
	return sameEncoding(raw, func() ([]byte, error) { return encMode.Marshal(v) })
}

// Value codecs. Each checks the major type before decoding, so that no
// conversion of fxamacker/cbor (for example a byte string into a Go string,
// or an array of small integers into []byte) slips through.

func wantMajor(raw []byte, major byte, what string) error {
	if len(raw) == 0 || raw[0]>>5 != major {
		return fmt.Errorf("want %s", what)
	}
	return nil
}

func decUint(raw []byte, lo, hi uint64) (uint64, error) {
	if err := wantMajor(raw, majorUint, "an unsigned integer"); err != nil {
		return 0, err
	}
	var n uint64
	if err := decMode.Unmarshal(raw, &n); err != nil {
		return 0, err
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%d out of range %d..%d", n, lo, hi)
	}
	return n, nil
}

func decText(raw []byte, lo, hi int) (string, error) {
	if err := wantMajor(raw, majorTstr, "a text string"); err != nil {
		return "", err
	}
	var s string
	if err := decMode.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, checkText(s, lo, hi)
}

func checkText(s string, lo, hi int) error {
	if len(s) < lo || len(s) > hi || !utf8.ValidString(s) {
		return fmt.Errorf("text of %d bytes, want %d..%d bytes of UTF-8", len(s), lo, hi)
	}
	return nil
}

func decBytes(raw []byte, n int) ([]byte, error) {
	if err := wantMajor(raw, majorBstr, "a byte string"); err != nil {
		return nil, err
	}
	var b []byte
	if err := decMode.Unmarshal(raw, &b); err != nil {
		return nil, err
	}
	if len(b) != n {
		return nil, fmt.Errorf("byte string of %d bytes, want %d", len(b), n)
	}
	return b, nil
}

// Times are unsigned integers of seconds since the Unix epoch, 0..2^32-1.
// The zero time.Time encodes as 0 and 0 decodes as the zero time.Time, so
// "unset" round-trips; sub-second parts are truncated.

func encTime(t time.Time) (uint64, error) {
	if t.IsZero() {
		return 0, nil
	}
	s := t.Unix()
	if s < 0 || s > maxTime {
		return 0, fmt.Errorf("time %v outside 1970..2106", t)
	}
	return uint64(s), nil
}

func decTime(raw []byte) (time.Time, error) {
	n, err := decUint(raw, 0, maxTime)
	if err != nil {
		return time.Time{}, err
	}
	return timeOf(n), nil
}

func timeOf(n uint64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(int64(n), 0).UTC()
}
