package controller

import "errors"

// Sentinel errors. A refusal by the target is a *[dfu.ResponseError]
// (matches dfu.ErrRefused and the check that failed, such as dfu.ErrHash).
var (
	// ErrDisconnected is returned when the link drops during a transfer
	// (a write fails or the notifications end). Send again on a new
	// connection: the transfer resumes.
	ErrDisconnected = errors.New("controller: link lost")

	// ErrTimeout is returned when the target does not answer a request
	// within Options.ResponseTimeout.
	ErrTimeout = errors.New("controller: no response from the target")

	// ErrProtocol is returned when the target answers another request
	// than the one sent, or reports an offset it cannot have.
	ErrProtocol = errors.New("controller: unexpected response")

	// ErrCRC is returned when the target's offset and CRC still differ
	// from what was sent after the object was re-sent Options.Retries
	// times (a link that corrupts data).
	ErrCRC = errors.New("controller: CRC mismatch")

	// ErrNoImage is returned when Send is given no image, or one without
	// an init packet or firmware (take images from dfu.Parse).
	ErrNoImage = errors.New("controller: no image to send")

	// ErrInitTooLarge is returned when the init packet is larger than
	// the target's command object.
	ErrInitTooLarge = errors.New("controller: init packet larger than the target takes")
)
