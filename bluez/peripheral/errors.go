package peripheral

import "errors"

var (
	// ErrInvalidOptions is returned by Start when a required option is
	// missing or out of range.
	ErrInvalidOptions = errors.New("peripheral: invalid options")
	// ErrNoAdapter is returned by Start when bluetoothd has no adapter of
	// that name.
	ErrNoAdapter = errors.New("peripheral: adapter not found")
)
