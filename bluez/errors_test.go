package bluez

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/godbus/dbus/v5"
)

func TestMapError(t *testing.T) {
	tests := []struct {
		name, msg string
		want      error
		retry     bool
	}{
		{"org.bluez.Error.InProgress", "", ErrInProgress, true},
		{"org.bluez.Error.NotReady", "Resource Not Ready", ErrNotReady, true},
		{"org.bluez.Error.Failed", "something", ErrFailed, false},
		{"org.bluez.Error.AuthenticationFailed", "", ErrAuthentication, false},
		{"org.bluez.Error.AuthenticationCanceled", "", ErrAuthentication, true},
		{"org.bluez.Error.AuthenticationRejected", "", ErrAuthentication, false},
		{"org.bluez.Error.AuthenticationTimeout", "", ErrAuthentication, true},
		{"org.bluez.Error.ConnectionAttemptFailed", "", ErrConnectionFailed, true},
		{"org.bluez.Error.DoesNotExist", "", ErrDoesNotExist, false},
		{"org.bluez.Error.NotConnected", "", ErrNotConnected, true},
		{"org.bluez.Error.AlreadyConnected", "", ErrAlreadyConnected, false},
		{"org.bluez.Error.InvalidArguments", "", ErrInvalidArguments, false},
		{"org.bluez.Error.NotPermitted", "", ErrNotPermitted, false},
		{"org.bluez.Error.NotAuthorized", "", ErrNotAuthorized, false},
		{"org.bluez.Error.NotSupported", "", ErrNotSupported, false},
		{"org.bluez.Error.AlreadyExists", "", ErrAlreadyExists, false},
		{"org.bluez.Error.Failed", "le-connection-abort-by-local", ErrConnectionAborted, true},
		{"org.bluez.Error.Failed", "le-connection-abort-by-remote", ErrConnectionAborted, true},
		{"org.bluez.Error.Failed", "Software caused connection abort", ErrConnectionAborted, true},
		{"org.bluez.Error.Failed", "Operation already in progress", ErrInProgress, true},
		{"org.bluez.Error.Failed", "le-connection-timeout", ErrConnectionFailed, true},
		{"org.bluez.Error.Bogus", "", ErrUnknownBluezError, false},
		{"org.freedesktop.DBus.Error.ServiceUnknown", "The name org.bluez was not provided", ErrBusGone, true},
		{"org.freedesktop.DBus.Error.NoReply", "", ErrBusGone, true},
		{"org.freedesktop.DBus.Error.Disconnected", "", ErrBusGone, true},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.msg, func(t *testing.T) {
			var body []any
			if tt.msg != "" {
				body = []any{tt.msg}
			}
			for _, in := range []error{
				dbus.Error{Name: tt.name, Body: body},
				&dbus.Error{Name: tt.name, Body: body},
				fmt.Errorf("wrapped: %w", dbus.Error{Name: tt.name, Body: body}),
			} {
				got := MapError(in)
				if !errors.Is(got, tt.want) {
					t.Fatalf("MapError(%v) = %v, want Is %v", in, got, tt.want)
				}
				if Retryable(got) != tt.retry {
					t.Fatalf("Retryable(%v) = %v, want %v", got, !tt.retry, tt.retry)
				}
				var e *Error
				if !errors.As(got, &e) || e.Name != tt.name || e.Message != tt.msg {
					t.Fatalf("MapError(%v) = %#v", in, got)
				}
			}
		})
	}
}

func TestMapErrorPassThrough(t *testing.T) {
	if MapError(nil) != nil {
		t.Fatal("nil")
	}
	if err := MapError(context.DeadlineExceeded); err != context.DeadlineExceeded || !Retryable(err) {
		t.Fatalf("deadline: %v", err)
	}
	if err := MapError(dbus.ErrClosed); !errors.Is(err, ErrBusGone) || !Retryable(err) {
		t.Fatalf("closed: %v", err)
	}
	other := errors.New("x")
	if MapError(other) != other || Retryable(other) {
		t.Fatal("other")
	}
}
