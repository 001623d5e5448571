package operator

import "errors"

// Sentinel errors. Every error this package returns that has one of these
// causes wraps it (match with errors.Is).
var (
	// ErrInvalidTopic is returned by NewTopics when the topic prefix or
	// the gateway ID is not acceptable: a gateway ID outside
	// [A-Za-z0-9._-]{1,64}, or a prefix that is empty, longer than 128
	// bytes, has an empty level, a wildcard (+ #), a NUL, or starts with
	// '$'.
	ErrInvalidTopic = errors.New("operator: invalid topic")

	// ErrOptions is returned by NewIntake, NewOutbox and NewPresence when a required
	// option (Journal, Publisher, Topics) is missing or a value is out of
	// range.
	ErrOptions = errors.New("operator: invalid options")

	// ErrStarted is returned by Start when the Intake, Outbox or Presence was
	// already started, or closed.
	ErrStarted = errors.New("operator: already started or closed")

	// ErrRevocations is returned by Revocations.Offer and Reload when a
	// revocation list is refused: it does not verify under the fleet
	// roots, it is older than (or conflicts with) the list held, or it
	// could not be read or stored; and by SetRoots when the list held does
	// not verify under the new roots.
	ErrRevocations = errors.New("operator: revocation list refused")
)
