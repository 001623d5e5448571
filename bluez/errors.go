package bluez

import (
	"context"
	"errors"
	"strings"

	"github.com/godbus/dbus/v5"
)

// Sentinel errors. Errors returned by this package wrap one of these (or a
// context error); match them with errors.Is. Whether an error is worth
// retrying is reported by Retryable.
var (
	ErrInProgress        = errors.New("bluez: operation in progress")
	ErrNotReady          = errors.New("bluez: adapter not ready")
	ErrFailed            = errors.New("bluez: operation failed")
	ErrAuthentication    = errors.New("bluez: authentication failed")
	ErrConnectionFailed  = errors.New("bluez: connection attempt failed")
	ErrConnectionAborted = errors.New("bluez: connection aborted")
	ErrDoesNotExist      = errors.New("bluez: object does not exist")
	ErrNotConnected      = errors.New("bluez: not connected")
	ErrAlreadyConnected  = errors.New("bluez: already connected")
	ErrInvalidArguments  = errors.New("bluez: invalid arguments")
	ErrNotPermitted      = errors.New("bluez: not permitted")
	ErrNotAuthorized     = errors.New("bluez: not authorized")
	ErrNotSupported      = errors.New("bluez: not supported")
	ErrAlreadyExists     = errors.New("bluez: already exists")
	ErrBusGone           = errors.New("bluez: bluetoothd or the bus is gone")
	ErrNoAdapter         = errors.New("bluez: adapter not found")
	ErrClosed            = errors.New("bluez: closed")
	ErrAdvertisement     = errors.New("bluez: bad lock advertisement")
	ErrUnknownBluezError = errors.New("bluez: unknown error")
	ErrDBus              = errors.New("bluez: D-Bus error")
)

// errBluetoothdGone fails the operations in flight on a bluetoothd that
// left the bus: retryable, on the next bluetoothd.
var errBluetoothdGone = &Error{Name: "org.freedesktop.DBus.Error.NameHasNoOwner",
	Message: "bluetoothd left the bus", Retryable: true, Kind: ErrBusGone}

// errDisconnected fails reads on a link that dropped (Connected went
// false): retryable, on a new connection.
var errDisconnected = &Error{Name: "org.bluez.Error.NotConnected", Message: "the device disconnected",
	Retryable: true, Kind: ErrNotConnected}

// Error is a D-Bus error reply mapped to a sentinel. errors.Is(err, Kind)
// holds for the sentinel it maps to.
type Error struct {
	Name      string // D-Bus error name, e.g. "org.bluez.Error.Failed"
	Message   string // first string argument of the error, if any
	Retryable bool   // a later attempt may succeed
	Kind      error  // the sentinel
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Kind.Error() + " (" + e.Name + ")"
	}
	return e.Kind.Error() + " (" + e.Name + ": " + e.Message + ")"
}

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Kind }

type errClass struct {
	kind      error
	retryable bool
}

var byName = map[string]errClass{
	"org.bluez.Error.InProgress":              {ErrInProgress, true},
	"org.bluez.Error.NotReady":                {ErrNotReady, true},
	"org.bluez.Error.Failed":                  {ErrFailed, false},
	"org.bluez.Error.AuthenticationFailed":    {ErrAuthentication, false},
	"org.bluez.Error.AuthenticationCanceled":  {ErrAuthentication, true},
	"org.bluez.Error.AuthenticationRejected":  {ErrAuthentication, false},
	"org.bluez.Error.AuthenticationTimeout":   {ErrAuthentication, true},
	"org.bluez.Error.ConnectionAttemptFailed": {ErrConnectionFailed, true},
	"org.bluez.Error.DoesNotExist":            {ErrDoesNotExist, false},
	"org.bluez.Error.NotConnected":            {ErrNotConnected, true},
	"org.bluez.Error.AlreadyConnected":        {ErrAlreadyConnected, false},
	"org.bluez.Error.InvalidArguments":        {ErrInvalidArguments, false},
	"org.bluez.Error.NotPermitted":            {ErrNotPermitted, false},
	"org.bluez.Error.NotAuthorized":           {ErrNotAuthorized, false},
	"org.bluez.Error.NotSupported":            {ErrNotSupported, false},
	"org.bluez.Error.NotAvailable":            {ErrNotSupported, false},
	"org.bluez.Error.AlreadyExists":           {ErrAlreadyExists, false},

	// The bus itself: bluetoothd gone, restarting or not answering.
	"org.freedesktop.DBus.Error.ServiceUnknown": {ErrBusGone, true},
	"org.freedesktop.DBus.Error.NameHasNoOwner": {ErrBusGone, true},
	"org.freedesktop.DBus.Error.NoReply":        {ErrBusGone, true},
	"org.freedesktop.DBus.Error.Disconnected":   {ErrBusGone, true},
	"org.freedesktop.DBus.Error.UnknownObject":  {ErrDoesNotExist, false},
	"org.freedesktop.DBus.Error.UnknownMethod":  {ErrNotSupported, false},
	"org.freedesktop.DBus.Error.InvalidArgs":    {ErrInvalidArguments, false},
}

// failedMessages refines org.bluez.Error.Failed by its message (BlueZ
// 5.66 puts the errors.txt reason, e.g. "le-connection-abort-by-local", or
// a strerror text in it). Matched case-insensitively by prefix.
var failedMessages = []struct {
	prefix string
	class  errClass
}{
	{"le-connection-abort-by-local", errClass{ErrConnectionAborted, true}},
	{"le-connection-abort-by-remote", errClass{ErrConnectionAborted, true}},
	{"br-connection-aborted", errClass{ErrConnectionAborted, true}},
	{"software caused connection abort", errClass{ErrConnectionAborted, true}},
	{"connection reset by peer", errClass{ErrConnectionAborted, true}},
	{"operation already in progress", errClass{ErrInProgress, true}},
	{"le-connection-busy", errClass{ErrInProgress, true}},
	{"le-connection-already-connected", errClass{ErrAlreadyConnected, false}},
	{"le-connection-timeout", errClass{ErrConnectionFailed, true}},
	{"le-connection-", errClass{ErrConnectionFailed, true}},
	{"connection timed out", errClass{ErrConnectionFailed, true}},
	{"host is down", errClass{ErrConnectionFailed, true}},
	{"not connected", errClass{ErrNotConnected, true}},
	{"transport endpoint is not connected", errClass{ErrNotConnected, true}},
}

// MapError maps an error from a godbus call to an *Error wrapping a
// sentinel. nil stays nil; context errors are returned as they are (they
// are the caller's deadline, not BlueZ's answer); a closed connection maps
// to ErrBusGone; unknown D-Bus error names map to ErrUnknownBluezError
// (org.bluez.Error.*) or a generic D-Bus failure, not retryable.
func MapError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	var de dbus.Error
	var dep *dbus.Error
	switch {
	case errors.As(err, &de):
	case errors.As(err, &dep):
		de = *dep
	case errors.Is(err, dbus.ErrClosed):
		return &Error{Name: "org.freedesktop.DBus.Error.Disconnected", Message: err.Error(), Retryable: true, Kind: ErrBusGone}
	default:
		return err
	}
	msg := ""
	if len(de.Body) > 0 {
		if s, ok := de.Body[0].(string); ok {
			msg = s
		}
	}
	c, ok := byName[de.Name]
	if !ok {
		c = errClass{ErrDBus, false}
		if strings.HasPrefix(de.Name, "org.bluez.Error.") {
			c.kind = ErrUnknownBluezError
		}
	}
	if de.Name == "org.bluez.Error.Failed" {
		lm := strings.ToLower(msg)
		for _, f := range failedMessages {
			if strings.HasPrefix(lm, f.prefix) {
				c = f.class
				break
			}
		}
	}
	return &Error{Name: de.Name, Message: msg, Retryable: c.retryable, Kind: c.kind}
}

// Retryable reports whether err (from this package) is worth retrying: a
// retryable *Error, or a deadline that expired on a call.
func Retryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable
	}
	return errors.Is(err, context.DeadlineExceeded)
}
