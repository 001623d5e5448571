package dfulink

import "errors"

var (
	// ErrNoPacket is returned by Connect when the device's DFU service
	// has no Packet characteristic.
	ErrNoPacket = errors.New("dfulink: no DFU Packet characteristic")
	// ErrClosed is returned by writes after Close, or after the link
	// dropped (the notifications channel is closed then).
	ErrClosed = errors.New("dfulink: link closed")
	// ErrTooLong is returned by WritePacket for more than ATT_MTU-3
	// bytes.
	ErrTooLong = errors.New("dfulink: packet longer than ATT_MTU-3")
)
