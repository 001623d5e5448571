package fleet

import "errors"

var (
	// ErrLockAway is returned by a Link's Dial when the lock is not in
	// range (not advertising). It is always retryable: the scheduler waits
	// for its backoff or for Scheduler.Wake.
	ErrLockAway = errors.New("fleet: lock not in range")
	// ErrConfig is returned by New when Options lack a Journal or a Link,
	// or hold a negative limit.
	ErrConfig = errors.New("fleet: bad options")
	// ErrStarted is returned by Start when the scheduler was already
	// started.
	ErrStarted = errors.New("fleet: scheduler already started")
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("fleet: scheduler closed")
	// ErrUnknownOperation is returned (and recorded as the detail of a
	// rejected entry) when a journal entry names an operation that
	// firmware/command does not define.
	ErrUnknownOperation = errors.New("fleet: unknown operation")
	// ErrNoResult is returned by runs whose Session.Do returned neither a
	// result nor an error (a broken Link).
	ErrNoResult = errors.New("fleet: link returned no result")
)
