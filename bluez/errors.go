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
	// ErrInProgress is returned when bluetoothd is already doing it: a
	// connection attempt or discovery session (InProgress, le-connection-busy).
	ErrInProgress = errors.New("bluez: operation in progress")
	// ErrNotReady is returned when the adapter is off or not initialised.
	ErrNotReady = errors.New("bluez: adapter not ready")
	// ErrFailed is returned when bluetoothd answers a bare Failed whose
	// reason is not one of the link errors below.
	ErrFailed = errors.New("bluez: operation failed")
	// ErrAuthentication is returned when pairing fails: a wrong passkey,
	// rejected, cancelled or timed out.
	ErrAuthentication = errors.New("bluez: authentication failed")
	// ErrConnectionFailed is returned when an LE connection could not be
	// made (ConnectionAttemptFailed, le-connection-timeout …).
	ErrConnectionFailed = errors.New("bluez: connection attempt failed")
	// ErrConnectionAborted is returned when the controller aborted the
	// connection (le-connection-abort-by-local or by-remote).
	ErrConnectionAborted = errors.New("bluez: connection aborted")
	// ErrDoesNotExist is returned when the object (device, agent,
	// characteristic) is unknown to bluetoothd.
	ErrDoesNotExist = errors.New("bluez: object does not exist")
	// ErrNotConnected is returned when the device is not (or no longer)
	// connected, including a link that dropped under a read or write.
	ErrNotConnected = errors.New("bluez: not connected")
	// ErrAlreadyConnected is returned when Connect finds the device
	// connected (older BlueZ; 5.66 answers success).
	ErrAlreadyConnected = errors.New("bluez: already connected")
	// ErrInvalidArguments is returned when a call's arguments or options
	// are wrong (ours or bluetoothd's InvalidArguments).
	ErrInvalidArguments = errors.New("bluez: invalid arguments")
	// ErrNotPermitted is returned when bluetoothd refuses the operation on
	// that object (e.g. writing a CCC descriptor).
	ErrNotPermitted = errors.New("bluez: not permitted")
	// ErrNotAuthorized is returned when the operation needs authorisation
	// the link does not have.
	ErrNotAuthorized = errors.New("bluez: not authorized")
	// ErrNotSupported is returned when bluetoothd or the object does not
	// support the method (NotSupported, NotAvailable, UnknownMethod).
	ErrNotSupported = errors.New("bluez: not supported")
	// ErrAlreadyExists is returned when the thing exists already: a bond,
	// or an agent at the same place.
	ErrAlreadyExists = errors.New("bluez: already exists")
	// ErrBusGone is returned when bluetoothd left the bus (crash or
	// restart) or the bus connection closed; retryable.
	ErrBusGone = errors.New("bluez: bluetoothd or the bus is gone")
	// ErrNoAdapter is returned by Open when no adapter matches
	// Options.Adapter.
	ErrNoAdapter = errors.New("bluez: adapter not found")
	// ErrClosed is returned when the Adapter, Device, Dispatcher or
	// subscription was closed.
	ErrClosed = errors.New("bluez: closed")
	// ErrAdvertisement is returned (in LockInfo.Err) when a lock's
	// advertisement is missing, mistyped or malformed.
	ErrAdvertisement = errors.New("bluez: bad lock advertisement")
	// ErrUnknownBluezError is returned when bluetoothd answers an
	// org.bluez.Error.* name this package does not know.
	ErrUnknownBluezError = errors.New("bluez: unknown error")
	// ErrDBus is returned when the bus answers a D-Bus error that is not
	// BlueZ's and not mapped above.
	ErrDBus = errors.New("bluez: D-Bus error")
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
