package target

import "errors"

// Sentinel errors: ATT-level refusals of a write, before the DFU protocol
// sees it (the DFU protocol's own refusals are response notifications).
var (
	// ErrNotificationsDisabled is returned when the Control Point is
	// written before its notifications are enabled (the SDK's ATT error
	// "CPS CCCD config error").
	ErrNotificationsDisabled = errors.New("target: control point notifications not enabled")

	// ErrTooLong is returned when a Packet write is longer than ATT_MTU-3
	// (ATT "invalid attribute value length").
	ErrTooLong = errors.New("target: packet longer than the ATT MTU allows")

	// ErrDisconnected is returned when a connection is written after it
	// ended: the bootloader reset into new firmware, or another
	// connection replaced it.
	ErrDisconnected = errors.New("target: connection ended")
)
