package fragment

import (
	"encoding/binary"
	"fmt"
)

// Wire-format constants.
const (
	// HeaderSize is the length of a fragment header: msg_id (1 byte),
	// offset (2 bytes) and total_len (2 bytes).
	HeaderSize = 5
	// ATTOverhead is what ATT takes of each MTU-sized PDU: the opcode
	// (1 byte) and the attribute handle (2 bytes). A fragment is at most
	// ATT_MTU-ATTOverhead bytes.
	ATTOverhead = 3
	// MinATTMTU is the smallest ATT MTU (the LE default, ATT_MTU 23): 20
	// fragment bytes, 15 of them payload.
	MinATTMTU = 23
	// MaxATTMTU is the largest ATT MTU the Bluetooth Core specification
	// allows (an attribute value is at most 512 bytes).
	MaxATTMTU = 517
	// DefaultMaxMessage is the largest message the protocol carries, in
	// bytes, and the default of Options.MaxMessage.
	DefaultMaxMessage = 2048
)

// MaxPayload returns how many payload bytes one fragment carries at the
// given ATT MTU: attMTU-ATTOverhead-HeaderSize. It returns an error wrapping
// ErrBadMTU when attMTU is outside MinATTMTU..MaxATTMTU.
func MaxPayload(attMTU int) (int, error) {
	if attMTU < MinATTMTU || attMTU > MaxATTMTU {
		return 0, fmt.Errorf("%w: %d not in %d..%d", ErrBadMTU, attMTU, MinATTMTU, MaxATTMTU)
	}
	return attMTU - ATTOverhead - HeaderSize, nil
}

// checkMessage validates the length of a message to be sent.
func checkMessage(n int) error {
	if n == 0 {
		return fmt.Errorf("%w: empty message", ErrBadLength)
	}
	if n > DefaultMaxMessage {
		return fmt.Errorf("%w: %d bytes > %d", ErrMessageTooLarge, n, DefaultMaxMessage)
	}
	return nil
}

// appendFragment appends the fragment of msg that starts at offset and
// carries at most per payload bytes; it returns the offset of the next one.
// Its arguments are valid.
func appendFragment(dst []byte, msgID uint8, msg []byte, offset, per int) ([]byte, int) {
	end := min(offset+per, len(msg))
	dst = append(dst, msgID, 0, 0, 0, 0)
	h := dst[len(dst)-4:]
	binary.BigEndian.PutUint16(h[0:2], uint16(offset))
	binary.BigEndian.PutUint16(h[2:4], uint16(len(msg)))
	return append(dst, msg[offset:end]...), end
}

// AppendFragment appends to dst the fragment of msg that starts at byte
// offset, as large as attMTU allows, and returns the extended slice and the
// offset of the next fragment; the message is fully sent when next ==
// len(msg). A sender calls it with offsets 0, next, next, … to send a
// message one ATT value at a time without allocating:
//
//	for off := 0; off < len(msg); {
//		buf, off, err = fragment.AppendFragment(buf[:0], id, msg, off, mtu)
//		…send buf…
//	}
//
// It returns an error wrapping ErrBadMTU, ErrBadLength (empty message,
// offset outside 0..len(msg)-1) or ErrMessageTooLarge (len(msg) >
// DefaultMaxMessage); dst is then returned unchanged.
func AppendFragment(dst []byte, msgID uint8, msg []byte, offset, attMTU int) (out []byte, next int, err error) {
	per, err := MaxPayload(attMTU)
	if err != nil {
		return dst, offset, err
	}
	if err := checkMessage(len(msg)); err != nil {
		return dst, offset, err
	}
	if offset < 0 || offset >= len(msg) {
		return dst, offset, fmt.Errorf("%w: offset %d outside a %d-byte message", ErrBadLength, offset, len(msg))
	}
	out, next = appendFragment(dst, msgID, msg, offset, per)
	return out, next, nil
}

// Split cuts msg into the fragments of message msgID for an ATT MTU of
// attMTU: ceil(len(msg)/(attMTU-8)) fragments, in ascending offset order,
// each of them full except the last. The fragments share one backing array
// (each is capped, so appending to one does not overwrite the next) and do
// not alias msg.
//
// It returns an error wrapping ErrBadMTU when attMTU is outside 23..517,
// ErrBadLength for an empty message and ErrMessageTooLarge when msg is longer
// than DefaultMaxMessage. A sender that knows its peer accepts less than
// DefaultMaxMessage checks the length itself.
func Split(msgID uint8, msg []byte, attMTU int) ([][]byte, error) {
	per, err := MaxPayload(attMTU)
	if err != nil {
		return nil, err
	}
	if err := checkMessage(len(msg)); err != nil {
		return nil, err
	}
	n := (len(msg) + per - 1) / per
	buf := make([]byte, 0, n*HeaderSize+len(msg))
	frags := make([][]byte, 0, n)
	for off := 0; off < len(msg); {
		start := len(buf)
		buf, off = appendFragment(buf, msgID, msg, off, per)
		frags = append(frags, buf[start:len(buf):len(buf)])
	}
	return frags, nil
}
