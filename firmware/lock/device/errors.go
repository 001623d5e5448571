package device

import "errors"

// Sentinel errors of the device.
var (
	// ErrNotInBootloader is returned when the bootloader is asked for
	// while the application runs: only an authorised enter-dfu resets
	// the lock into it.
	ErrNotInBootloader = errors.New("device: the application runs, not the bootloader")
	// ErrInBootloader is returned when the application is asked for
	// while the bootloader runs.
	ErrInBootloader = errors.New("device: the bootloader runs, not the application")
	// ErrNoButtonless is returned by Buttonless: the lock has no
	// buttonless DFU service; enter-dfu is the only way in.
	ErrNoButtonless = errors.New("device: no buttonless DFU: send an admin-signed enter-dfu")
)
