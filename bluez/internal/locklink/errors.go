package locklink

import "errors"

var (
	// ErrLinkDown is returned by ReadPacket, WritePacket and Deliver once
	// the connection ended (Close).
	ErrLinkDown = errors.New("locklink: link down")
	// ErrTooLong is returned by WritePacket and Deliver for a packet longer
	// than ATT_MTU-3.
	ErrTooLong = errors.New("locklink: packet longer than ATT_MTU-3")
	// ErrBadMTU is returned by New and SetMTU for an MTU outside 23..517.
	ErrBadMTU = errors.New("locklink: ATT MTU out of range")
)
