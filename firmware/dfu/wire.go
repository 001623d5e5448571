package dfu

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// GATT layout of the Secure DFU service (nRF5 SDK bootloader).
const (
	// ServiceUUID is the DFU service, 16-bit UUID 0xFE59.
	ServiceUUID = "0000fe59-0000-1000-8000-00805f9b34fb"
	// ControlPointUUID is the DFU Control Point: write with response and
	// notify. Requests are written here; responses come as notifications.
	ControlPointUUID = "8ec90001-f315-4f60-9fb8-838830daea50"
	// PacketUUID is the DFU Packet: write without response, at most
	// ATT_MTU-3 bytes per write. Init packet and firmware bytes go here.
	PacketUUID = "8ec90002-f315-4f60-9fb8-838830daea50"
)

// Op is a Control Point opcode.
type Op byte

// Control Point opcodes (nRF5 SDK nrf_dfu_op_t; the BLE transport uses
// these).
const (
	OpCreate   Op = 0x01 // 01 type:u8 size:u32
	OpSetPRN   Op = 0x02 // 02 prn:u16
	OpCRC      Op = 0x03 // 03 → offset:u32 crc:u32
	OpExecute  Op = 0x04 // 04
	OpSelect   Op = 0x06 // 06 type:u8 → max_size:u32 offset:u32 crc:u32
	OpMTUGet   Op = 0x07 // 07 → mtu:u16
	OpResponse Op = 0x60 // 60 op result [ext | payload]
)

func (o Op) String() string {
	switch o {
	case OpCreate:
		return "create"
	case OpSetPRN:
		return "set-prn"
	case OpCRC:
		return "crc"
	case OpExecute:
		return "execute"
	case OpSelect:
		return "select"
	case OpMTUGet:
		return "mtu-get"
	case OpResponse:
		return "response"
	}
	return fmt.Sprintf("op-0x%02x", byte(o))
}

// Object types of Select and Create.
const (
	ObjectCommand byte = 0x01 // the init packet
	ObjectData    byte = 0x02 // firmware
)

// Object sizes of the nRF5 SDK bootloader for the nRF52832.
const (
	// MaxInitPacket is INIT_COMMAND_MAX_SIZE: the largest init packet.
	MaxInitPacket = 512
	// MaxDataObject is DATA_OBJECT_MAX_SIZE: one flash page.
	MaxDataObject = 4096
	// PageSize is the nRF52832's flash page (CODE_PAGE_SIZE).
	PageSize = 4096
)

// Result is a response's result code (nrf_dfu_result_t).
type Result byte

// Result codes.
const (
	ResInvalidOpcode         Result = 0x00
	ResSuccess               Result = 0x01
	ResNotSupported          Result = 0x02
	ResInvalidParameter      Result = 0x03
	ResInsufficientResources Result = 0x04
	ResInvalidObject         Result = 0x05
	ResUnsupportedType       Result = 0x07
	ResNotPermitted          Result = 0x08
	ResOperationFailed       Result = 0x0A
	ResExtError              Result = 0x0B
)

func (r Result) String() string {
	switch r {
	case ResInvalidOpcode:
		return "invalid opcode"
	case ResSuccess:
		return "success"
	case ResNotSupported:
		return "opcode not supported"
	case ResInvalidParameter:
		return "invalid parameter"
	case ResInsufficientResources:
		return "insufficient resources"
	case ResInvalidObject:
		return "invalid object"
	case ResUnsupportedType:
		return "unsupported type"
	case ResNotPermitted:
		return "operation not permitted"
	case ResOperationFailed:
		return "operation failed"
	case ResExtError:
		return "extended error"
	}
	return fmt.Sprintf("result 0x%02x", byte(r))
}

// ExtError is the extended error code after [ResExtError]
// (nrf_dfu_ext_error_code_t).
type ExtError byte

// Extended error codes.
const (
	ExtNoError            ExtError = 0x00
	ExtInvalidErrorCode   ExtError = 0x01
	ExtWrongCommandFormat ExtError = 0x02
	ExtUnknownCommand     ExtError = 0x03
	ExtInitCommandInvalid ExtError = 0x04
	ExtFWVersionFailure   ExtError = 0x05
	ExtHWVersionFailure   ExtError = 0x06
	ExtSDVersionFailure   ExtError = 0x07
	ExtSignatureMissing   ExtError = 0x08
	ExtWrongHashType      ExtError = 0x09
	ExtHashFailed         ExtError = 0x0A
	ExtWrongSignatureType ExtError = 0x0B
	ExtVerificationFailed ExtError = 0x0C
	ExtInsufficientSpace  ExtError = 0x0D
	ExtFWAlreadyPresent   ExtError = 0x0E
)

var extNames = [...]string{
	"no error", "invalid error code", "wrong command format", "unknown command",
	"init command invalid", "firmware version too low", "hardware version mismatch",
	"SoftDevice not in sd_req", "signature missing", "wrong hash type", "hash failed",
	"wrong signature type", "hash mismatch", "insufficient space", "firmware already present",
}

func (e ExtError) String() string {
	if int(e) < len(extNames) {
		return extNames[e]
	}
	return fmt.Sprintf("extended error 0x%02x", byte(e))
}

// sentinel is the error of this package an extended error code means.
func (e ExtError) sentinel() error {
	switch e {
	case ExtInitCommandInvalid:
		return ErrInitCommand
	case ExtFWVersionFailure:
		return ErrDowngrade
	case ExtHWVersionFailure:
		return ErrHWVersion
	case ExtSDVersionFailure:
		return ErrSoftDevice
	case ExtSignatureMissing:
		return ErrUnsigned
	case ExtWrongHashType:
		return ErrHashType
	case ExtWrongSignatureType:
		return ErrSignatureType
	case ExtVerificationFailed:
		return ErrHash
	case ExtInsufficientSpace:
		return ErrTooLarge
	}
	return nil
}

// ExtErrorOf is the extended error code the bootloader answers for an
// error of [CheckInit], [VerifySignature] or the firmware hash check, and
// false for errors that have none (the bootloader answers a bad signature
// with [ResInvalidObject], as the SDK does).
func ExtErrorOf(err error) (ExtError, bool) {
	for _, e := range []ExtError{
		ExtInitCommandInvalid, ExtFWVersionFailure, ExtHWVersionFailure, ExtSDVersionFailure,
		ExtSignatureMissing, ExtWrongHashType, ExtWrongSignatureType, ExtVerificationFailed,
		ExtInsufficientSpace,
	} {
		if errors.Is(err, e.sentinel()) {
			return e, true
		}
	}
	return 0, false
}

// Request encodings.

// CreateRequest is `01 type size`.
func CreateRequest(objType byte, size uint32) []byte {
	return binary.LittleEndian.AppendUint32([]byte{byte(OpCreate), objType}, size)
}

// SetPRNRequest is `02 prn`.
func SetPRNRequest(prn uint16) []byte {
	return binary.LittleEndian.AppendUint16([]byte{byte(OpSetPRN)}, prn)
}

// SelectRequest is `06 type`.
func SelectRequest(objType byte) []byte { return []byte{byte(OpSelect), objType} }

// CRCRequest is `03`.
func CRCRequest() []byte { return []byte{byte(OpCRC)} }

// ExecuteRequest is `04`.
func ExecuteRequest() []byte { return []byte{byte(OpExecute)} }

// MTURequest is `07`.
func MTURequest() []byte { return []byte{byte(OpMTUGet)} }

// Response is one Control Point notification: `60 op result`, then on
// success the payload of its request (Select: max size, offset, CRC; CRC:
// offset, CRC; MTU get: MTU), on [ResExtError] one extended error byte.
type Response struct {
	Op      Op
	Result  Result
	Ext     ExtError
	MaxSize uint32
	Offset  uint32
	CRC     uint32
	MTU     uint16
}

// Marshal encodes the notification.
func (r Response) Marshal() []byte {
	b := []byte{byte(OpResponse), byte(r.Op), byte(r.Result)}
	if r.Result == ResExtError {
		return append(b, byte(r.Ext))
	}
	if r.Result != ResSuccess {
		return b
	}
	switch r.Op {
	case OpSelect:
		b = binary.LittleEndian.AppendUint32(b, r.MaxSize)
		fallthrough
	case OpCRC:
		b = binary.LittleEndian.AppendUint32(b, r.Offset)
		b = binary.LittleEndian.AppendUint32(b, r.CRC)
	case OpMTUGet:
		b = binary.LittleEndian.AppendUint16(b, r.MTU)
	}
	return b
}

// ParseResponse decodes a Control Point notification strictly: the payload
// must have exactly the length its request and result call for.
func ParseResponse(b []byte) (Response, error) {
	if len(b) < 3 || Op(b[0]) != OpResponse {
		return Response{}, fmt.Errorf("%w: % x", ErrResponse, truncate(b))
	}
	r := Response{Op: Op(b[1]), Result: Result(b[2])}
	p := b[3:]
	want := 0
	switch {
	case r.Result == ResExtError:
		want = 1
	case r.Result != ResSuccess:
	case r.Op == OpSelect:
		want = 12
	case r.Op == OpCRC:
		want = 8
	case r.Op == OpMTUGet:
		want = 2
	}
	if len(p) != want {
		return Response{}, fmt.Errorf("%w: %s response with %d payload bytes, want %d", ErrResponse, r.Op, len(p), want)
	}
	switch {
	case r.Result == ResExtError:
		r.Ext = ExtError(p[0])
	case want == 12:
		r.MaxSize = binary.LittleEndian.Uint32(p)
		p = p[4:]
		fallthrough
	case want == 8:
		r.Offset = binary.LittleEndian.Uint32(p)
		r.CRC = binary.LittleEndian.Uint32(p[4:])
	case want == 2:
		r.MTU = binary.LittleEndian.Uint16(p)
	}
	return r, nil
}

func truncate(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

// ResponseError is a response other than success. It matches [ErrRefused]
// and, for extended errors that have one, the sentinel of the check that
// failed ([ErrHash] for a hash mismatch, [ErrDowngrade], ...).
type ResponseError struct {
	Op     Op
	Result Result
	Ext    ExtError
}

func (e *ResponseError) Error() string {
	if e.Result == ResExtError {
		return fmt.Sprintf("dfu: target answered %s with %s: %s", e.Op, e.Result, e.Ext)
	}
	return fmt.Sprintf("dfu: target answered %s with %s", e.Op, e.Result)
}

// Unwrap returns ErrRefused and the sentinel of the extended error, if any.
func (e *ResponseError) Unwrap() []error {
	errs := []error{ErrRefused}
	if e.Result == ResExtError {
		if s := e.Ext.sentinel(); s != nil {
			errs = append(errs, s)
		}
	}
	return errs
}
