package dfu

import (
	"bytes"
	"errors"
	"testing"
)

var sentinels = []error{
	ErrZip, ErrTooLarge, ErrFileName, ErrMissingFile, ErrUnexpectedFile, ErrManifest, ErrInitPacket,
	ErrInitCommand, ErrUnsigned, ErrSignatureType, ErrSignature, ErrHashType, ErrHash, ErrSize,
	ErrHWVersion, ErrSoftDevice, ErrDowngrade, ErrResponse, ErrRefused,
}

func isSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// TestRequestEncodings: the requests' bytes as pc-nrfutil writes them
// (little-endian fields).
func TestRequestEncodings(t *testing.T) {
	for _, c := range []struct{ got, want []byte }{
		{CreateRequest(ObjectData, 0x1000), []byte{0x01, 0x02, 0x00, 0x10, 0x00, 0x00}},
		{CreateRequest(ObjectCommand, 141), []byte{0x01, 0x01, 141, 0, 0, 0}},
		{SetPRNRequest(0x0102), []byte{0x02, 0x02, 0x01}},
		{SelectRequest(ObjectCommand), []byte{0x06, 0x01}},
		{CRCRequest(), []byte{0x03}},
		{ExecuteRequest(), []byte{0x04}},
		{MTURequest(), []byte{0x07}},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("% x, want % x", c.got, c.want)
		}
	}
}

// TestResponses: each response's bytes, and the strict decoder's refusals.
func TestResponses(t *testing.T) {
	sel := Response{Op: OpSelect, Result: ResSuccess, MaxSize: 4096, Offset: 0x0102, CRC: 0xAABBCCDD}
	want := []byte{0x60, 0x06, 0x01, 0x00, 0x10, 0, 0, 0x02, 0x01, 0, 0, 0xDD, 0xCC, 0xBB, 0xAA}
	if got := sel.Marshal(); !bytes.Equal(got, want) {
		t.Fatalf("select response % x, want % x", got, want)
	}
	if r, err := ParseResponse(want); err != nil || r != sel {
		t.Fatalf("parse: %+v, %v", r, err)
	}
	ext := []byte{0x60, 0x04, 0x0B, 0x0C}
	r, err := ParseResponse(ext)
	if err != nil || r.Ext != ExtVerificationFailed {
		t.Fatalf("ext: %+v, %v", r, err)
	}
	re := &ResponseError{Op: r.Op, Result: r.Result, Ext: r.Ext}
	if !errors.Is(re, ErrRefused) || !errors.Is(re, ErrHash) || errors.Is(re, ErrSignature) {
		t.Fatalf("ResponseError matches wrongly: %v", re)
	}
	for _, bad := range [][]byte{
		nil, {0x60, 0x06}, {0x61, 0x06, 0x01}, {0x60, 0x06, 0x01, 0x00},
		{0x60, 0x03, 0x01, 1, 2, 3, 4, 5, 6, 7}, {0x60, 0x04, 0x0B}, {0x60, 0x04, 0x01, 0x00},
	} {
		if _, err := ParseResponse(bad); !errors.Is(err, ErrResponse) {
			t.Errorf("% x: %v, want ErrResponse", bad, err)
		}
	}
}

// TestExtErrorOf: the bootloader's extended error for each check's error.
func TestExtErrorOf(t *testing.T) {
	for _, c := range []struct {
		err  error
		want ExtError
	}{
		{ErrDowngrade, ExtFWVersionFailure}, {ErrHWVersion, ExtHWVersionFailure},
		{ErrSoftDevice, ExtSDVersionFailure}, {ErrUnsigned, ExtSignatureMissing},
		{ErrHash, ExtVerificationFailed}, {ErrInitCommand, ExtInitCommandInvalid},
	} {
		if got, ok := ExtErrorOf(c.err); !ok || got != c.want {
			t.Errorf("%v: %v, want %v", c.err, got, c.want)
		}
	}
	if _, ok := ExtErrorOf(ErrSignature); ok {
		t.Error("a bad signature has an extended code; the SDK answers invalid object")
	}
}
