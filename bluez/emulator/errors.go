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
	// ErrNoSuchLock is returned by RemoveLock, LeaveRange and EnterRange
	// for an address no hosted lock has.
	ErrNoSuchLock = errors.New("emulator: no lock at this address")
	// ErrBadOptions is returned by Start for an option out of range (a
	// rate outside [0,1], a negative latency, an MTU outside 23..517),
	// and by AddLock for a lock MTU outside 23..517.
	ErrBadOptions = errors.New("emulator: option out of range")
	// ErrBadFaults is returned by InjectFaults for a negative count.
	ErrBadFaults = errors.New("emulator: negative fault count")
	// ErrNoAdapter is returned by RemoveAdapter and Wedge while the
	// adapter is unplugged.
	ErrNoAdapter = errors.New("emulator: the adapter is unplugged")
	// ErrAdapterPresent is returned by AddAdapter while the adapter is
	// plugged in.
	ErrAdapterPresent = errors.New("emulator: the adapter is already present")
)
