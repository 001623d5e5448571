package broker

import "errors"

var (
	// ErrInvalidOptions is returned by New when Options are incomplete or
	// inconsistent (no broker, no client ID, a bad URL or topic).
	ErrInvalidOptions = errors.New("broker: invalid options")

	// ErrNotStarted is returned by Publish and WaitConnected when Start has
	// not been called.
	ErrNotStarted = errors.New("broker: session not started")

	// ErrStarted is returned by Start when the session was already started.
	ErrStarted = errors.New("broker: session already started")

	// ErrClosed is returned by Start, Publish and WaitConnected once Close
	// was called.
	ErrClosed = errors.New("broker: session closed")

	// ErrNoDeadline is returned by Publish when its context has no deadline:
	// while the broker is down a Publish waits, and must not wait forever.
	ErrNoDeadline = errors.New("broker: context has no deadline")

	// ErrInvalidTopic is returned by Publish for an empty topic or one with
	// a wildcard ('+', '#') or a NUL character.
	ErrInvalidTopic = errors.New("broker: invalid topic")

	// ErrNotAcknowledged is returned (wrapped with the context's error) by
	// Publish when its context ended before the broker's PUBACK. The message
	// may still reach the broker: paho keeps it and resends it after a
	// reconnect, so the caller's retry may duplicate it (at-least-once).
	ErrNotAcknowledged = errors.New("broker: publish not acknowledged by the broker")

	// ErrPublish is returned (wrapped with paho's error) by Publish when paho
	// refused or failed the publish before the broker acknowledged it.
	ErrPublish = errors.New("broker: publish failed")

	// ErrSubscribe is logged and counted (never returned) when the broker
	// refuses a subscription (SUBACK 0x80) or a subscription fails.
	ErrSubscribe = errors.New("broker: subscribe failed")
)
