package lock

import "errors"

// Sentinel errors of the reference lock. Command refusals are reported to
// the peer as command.Status codes; these are for the lock's own callers
// (the BLE stack, tests).
var (
	// ErrPairingRefused is returned by Pair when no bond window is open,
	// the window belongs to another peer, or the passkey is wrong.
	ErrPairingRefused = errors.New("lock: pairing refused")

	// ErrReset is returned by Serve when the lock resets into its
	// bootloader after answering an authorised enter-dfu: the BLE stack
	// ends the connection, and the lock advertises as its bootloader.
	ErrReset = errors.New("lock: reset into the bootloader")
)
