package edhoc

import (
	"errors"
	"fmt"
	"strings"
)

// EADItem is one External Authorization Data item (RFC 9528 §3.8).
type EADItem struct {
	// Label is ead_label. A negative label marks a critical item: a
	// receiver that does not understand it must abort.
	Label int64
	// Value is the optional ead_value.
	Value []byte
	// HasValue tells an empty value apart from an absent one.
	HasValue bool
}

// appendEAD encodes EAD items as a CBOR sequence.
func appendEAD(dst []byte, items []EADItem) []byte {
	for _, it := range items {
		dst = appendInt(dst, it.Label)
		if it.HasValue {
			dst = appendBstr(dst, it.Value)
		}
	}
	return dst
}

// readEAD reads the remaining items of r as EAD and returns them along with
// their raw encoding (which enters MAC contexts and signatures).
func readEAD(r *reader) ([]EADItem, []byte, error) {
	start := r.b
	var items []EADItem
	for !r.empty() {
		label, err := r.int("ead_label")
		if err != nil {
			return nil, nil, err
		}
		it := EADItem{Label: label}
		if m, ok := r.peek(); ok && m == majorBstr {
			v, err := r.bstr("ead_value")
			if err != nil {
				return nil, nil, err
			}
			it.Value, it.HasValue = v, true
		}
		items = append(items, it)
	}
	return items, start, nil
}

// checkEAD refuses critical items the application did not accept; padding
// (label 0) is always ignored (RFC 9528 §3.8).
func checkEAD(items []EADItem, accept func([]EADItem) error) error {
	if accept != nil {
		if err := accept(items); err != nil {
			return fmt.Errorf("%w: %w", ErrCriticalEAD, err)
		}
		return nil
	}
	for _, it := range items {
		if it.Label < 0 {
			return fmt.Errorf("%w: ead_label %d", ErrCriticalEAD, it.Label)
		}
	}
	return nil
}

// compactIDCred returns the on-wire form of ID_CRED_x for PLAINTEXT_2/3: a
// map holding only 'kid' is replaced by the kid itself, as an int if it is a
// one-byte CBOR integer, else as a bstr (RFC 9528 §3.5.3.2).
func compactIDCred(dst, idCred []byte) []byte {
	if kid, ok := kidOnly(idCred); ok {
		if len(kid) == 1 && isOneByteInt(kid[0]) {
			return append(dst, kid[0])
		}
		return appendBstr(dst, kid)
	}
	return append(dst, idCred...)
}

// kidOnly reports whether idCred is exactly {4: bstr} and returns the kid.
func kidOnly(idCred []byte) ([]byte, bool) {
	if len(idCred) < 3 || idCred[0] != 0xa1 || idCred[1] != 0x04 || idCred[2]>>5 != majorBstr {
		return nil, false
	}
	v, n, ok := head(idCred[2:])
	if !ok || uint64(len(idCred)-2-n) != v {
		return nil, false
	}
	return idCred[2+n:], true
}

// KIDIDCred returns the deterministic encoding of ID_CRED_x = {4: kid}.
func KIDIDCred(kid []byte) []byte {
	return appendBstr([]byte{0xa1, 0x04}, kid)
}

// readIDCred reads ID_CRED_x from PLAINTEXT_2/3 ("ID_CRED_x / bstr /
// -24..23") and returns it in full map form.
func readIDCred(r *reader, field string) ([]byte, error) {
	m, ok := r.peek()
	if !ok {
		return nil, fmt.Errorf("%w: %s: missing %s", ErrMalformed, r.what, field)
	}
	switch m {
	case majorMap:
		raw, err := r.item(field)
		if err != nil {
			return nil, err
		}
		if _, only := kidOnly(raw); only {
			// RFC 9529 §4.1.6: a lone kid must be sent compactly.
			return nil, fmt.Errorf("%w: %s: %s holding only 'kid' must be sent as the kid itself", ErrMalformed, r.what, field)
		}
		if raw[0] == 0xa0 {
			return nil, fmt.Errorf("%w: %s: %s is an empty map", ErrMalformed, r.what, field)
		}
		return raw, nil
	case majorBstr, majorUint, majorNint:
		kid, err := r.compactBytes(field)
		if err != nil {
			return nil, err
		}
		return KIDIDCred(kid), nil
	}
	return nil, fmt.Errorf("%w: %s: %s has the wrong type", ErrMalformed, r.what, field)
}

// EDHOC error codes (RFC 9528 §6, §10.4).
const (
	ErrCodeUnspecified   = 1 // ERR_INFO: tstr
	ErrCodeWrongSuite    = 2 // ERR_INFO: SUITES_R
	ErrCodeUnknownCredID = 3 // ERR_INFO: true
)

// ProtocolError is returned when a handshake fails locally. Message gives
// the EDHOC error message (RFC 9528 §6) to send to the peer, so that the
// peer learns why it was refused. ERR_INFO texts never contain key material.
type ProtocolError struct {
	Code   int
	Info   string  // ERR_CODE 1 diagnostic
	Suites []Suite // ERR_CODE 2 SUITES_R
	Err    error
}

func (e *ProtocolError) Error() string { return e.Err.Error() }
func (e *ProtocolError) Unwrap() error { return e.Err }

// Message encodes the error message: (ERR_CODE: int, ERR_INFO: any).
func (e *ProtocolError) Message() []byte {
	b := appendInt(nil, int64(e.Code))
	switch e.Code {
	case ErrCodeWrongSuite:
		b = appendSuites(b, e.Suites)
	case ErrCodeUnknownCredID:
		b = append(b, 0xf5) // true
	default:
		b = appendTstr(b, e.Info)
	}
	return b
}

// ErrorMessage returns the EDHOC error message to send for err: the
// ProtocolError's own message, or an unspecified error otherwise.
func ErrorMessage(err error) []byte {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return pe.Message()
	}
	return (&ProtocolError{Code: ErrCodeUnspecified, Info: "error"}).Message()
}

// fail wraps err as a ProtocolError with the error code its cause implies.
func fail(err error) *ProtocolError {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return pe
	}
	pe = &ProtocolError{Code: ErrCodeUnspecified, Err: err}
	switch {
	case errors.Is(err, ErrUnknownCredential):
		pe.Code = ErrCodeUnknownCredID
	case errors.Is(err, ErrMalformed):
		pe.Info = "malformed message"
	case errors.Is(err, ErrInvalidKey):
		pe.Info = "invalid ephemeral key"
	case errors.Is(err, ErrUnsupportedMethod):
		pe.Info = "unsupported method"
	case errors.Is(err, ErrCredentialRejected):
		pe.Info = "credential rejected"
	case errors.Is(err, ErrAuthentication):
		pe.Info = "authentication failed"
	case errors.Is(err, ErrCriticalEAD):
		pe.Info = "unsupported critical EAD"
	default:
		pe.Info = "handshake failed"
	}
	return pe
}

func appendSuites(dst []byte, s []Suite) []byte {
	if len(s) == 1 {
		return appendInt(dst, int64(s[0]))
	}
	dst = appendHead(dst, majorArray, uint64(len(s)))
	for _, v := range s {
		dst = appendInt(dst, int64(v))
	}
	return dst
}

// PeerError is returned when the peer answered with an EDHOC error
// message. It matches ErrPeerError, and also ErrUnsupportedSuite (code 2)
// or ErrUnknownCredential (code 3).
type PeerError struct {
	Code   int64
	Info   string  // code 1
	Suites []Suite // code 2: the peer's SUITES_R
}

func (e *PeerError) Error() string {
	switch e.Code {
	case ErrCodeWrongSuite:
		return fmt.Sprintf("edhoc: peer refused the cipher suite; it supports %v", e.Suites)
	case ErrCodeUnknownCredID:
		return "edhoc: peer does not know our credential (send it by value)"
	}
	return fmt.Sprintf("edhoc: peer error %d: %q", e.Code, e.Info)
}

func (e *PeerError) Unwrap() []error {
	errs := []error{ErrPeerError}
	switch e.Code {
	case ErrCodeWrongSuite:
		errs = append(errs, ErrUnsupportedSuite)
	case ErrCodeUnknownCredID:
		errs = append(errs, ErrUnknownCredential)
	}
	return errs
}

// ParseError decodes an EDHOC error message (RFC 9528 §6).
func ParseError(msg []byte) (*PeerError, error) {
	r := &reader{b: msg, what: "error message"}
	code, err := r.int("ERR_CODE")
	if err != nil {
		return nil, err
	}
	pe := &PeerError{Code: code}
	switch code {
	case ErrCodeUnspecified:
		raw, err := r.item("ERR_INFO")
		if err != nil {
			return nil, err
		}
		var s string
		if raw[0]>>5 != majorTstr || decMode.Unmarshal(raw, &s) != nil {
			return nil, fmt.Errorf("%w: error message: ERR_INFO is not a text string", ErrMalformed)
		}
		pe.Info = sanitize(s)
	case ErrCodeWrongSuite:
		s, err := readSuites(r)
		if err != nil {
			return nil, err
		}
		pe.Suites = s
	case ErrCodeUnknownCredID:
		raw, err := r.item("ERR_INFO")
		if err != nil {
			return nil, err
		}
		if len(raw) != 1 || raw[0] != 0xf5 {
			return nil, fmt.Errorf("%w: error message: ERR_INFO must be true", ErrMalformed)
		}
	default:
		if _, err := r.item("ERR_INFO"); err != nil {
			return nil, err
		}
	}
	if !r.empty() {
		return nil, fmt.Errorf("%w: error message: trailing bytes", ErrMalformed)
	}
	return pe, nil
}

// sanitize bounds and cleans a peer's diagnostic so it is safe to log.
func sanitize(s string) string {
	if len(s) > 128 {
		s = s[:128]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// readSuites reads SUITES_I / SUITES_R: an int, or an array of two or more
// ints (RFC 9528 §5.2.2; RFC 9529 §4.1.3).
func readSuites(r *reader) ([]Suite, error) {
	m, ok := r.peek()
	if !ok {
		return nil, fmt.Errorf("%w: %s: missing SUITES", ErrMalformed, r.what)
	}
	if m == majorUint || m == majorNint {
		v, err := r.int("SUITES")
		if err != nil {
			return nil, err
		}
		return []Suite{Suite(v)}, nil
	}
	if m != majorArray {
		return nil, fmt.Errorf("%w: %s: SUITES is neither int nor array", ErrMalformed, r.what)
	}
	raw, err := r.item("SUITES")
	if err != nil {
		return nil, err
	}
	var vs []int64
	if err := decMode.Unmarshal(raw, &vs); err != nil {
		return nil, fmt.Errorf("%w: %s: SUITES: %v", ErrMalformed, r.what, err)
	}
	if len(vs) < 2 {
		return nil, fmt.Errorf("%w: %s: a single suite must be sent as an int, not an array", ErrMalformed, r.what)
	}
	out := make([]Suite, len(vs))
	for i, v := range vs {
		out[i] = Suite(v)
	}
	return out, nil
}
