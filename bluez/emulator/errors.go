package emulator

import "errors"

// Sentinel errors of the emulator's Go API. Errors sent to D-Bus clients
// are BlueZ's (org.bluez.Error.*), never these.
var (
	// ErrClosed is returned by calls on an emulator after Close.
	ErrClosed = errors.New("emulator: closed")
	// ErrNameTaken is returned by Start when org.bluez is already owned on
	// the bus.
	ErrNameTaken = errors.New("emulator: org.bluez is already owned on the bus")
	// ErrBadAddress is returned for a BLE address that is not
	// "AA:BB:CC:DD:EE:FF" (upper-case hex).
	ErrBadAddress = errors.New("emulator: bad BLE address")
	// ErrDuplicateLock is returned by AddLock for an address already in use.
	ErrDuplicateLock = errors.New("emulator: a lock already has this address")
	// ErrNoSuchLock is returned by RemoveLock for an unknown address.
	ErrNoSuchLock = errors.New("emulator: no lock at this address")
)
