package fleet

import (
	"context"
	"errors"
	"fmt"
	"github.com/gatewayd/gatewayd/internal/backoff"
	"log/slog"
	"time"
)

// Defaults of Options.
const (
	DefaultMaxSessions    = 4
	DefaultMaxPerSession  = 32
	DefaultAttemptTimeout = 30 * time.Second
	DefaultMaxAge         = 15 * time.Minute
	// DefaultRescanAfterDrop and DefaultRescan are the defaults of
	// Options.RescanAfterDrop and Options.Rescan.
	DefaultRescanAfterDrop = 10 * time.Second
	DefaultRescan          = 10 * time.Minute
	// DefaultMinBackoff and DefaultMaxBackoff bound DefaultBackoff.
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
	// DefaultAgeAfter is the default of Options.AgeAfter.
	DefaultAgeAfter = 30 * time.Second
	// DefaultHeardRetry is the default of Options.HeardRetry.
	DefaultHeardRetry = time.Second
)

// Options configure a Scheduler. Journal and Link are required; the rest
// have useful zero values.
type Options struct {
	// Journal is the command journal (a *bonds.DB).
	Journal Journal
	// Link reaches locks.
	Link Link
	// Logger gets a child logger with subsystem=fleet; nil discards.
	Logger *slog.Logger
	// Now is the clock for not-after times, results and durations
	// (default time.Now). Backoff waits run on real timers.
	Now func() time.Time
	// MaxSessions bounds the sessions open at once, across locks
	// (default 4: a Raspberry Pi's controller holds about 4 to 10
	// connections).
	MaxSessions int
	// MaxPerSession is how many commands one session carries before it
	// is closed and its lock waits for a session slot again, so that a
	// busy lock does not keep a slot from the others (default 32).
	MaxPerSession int
	// AttemptTimeout bounds a connect with its handshake, and each
	// request (default 30 s).
	AttemptTimeout time.Duration
	// Backoff returns how long a lock waits before the next connect after
	// failures consecutive retryable link errors (failures >= 1). Default:
	// DefaultBackoff.
	Backoff func(failures int) time.Duration
	// HeardRetry is how soon after a retryable link error a lock that is
	// heard advertising again (Scheduler.Wake) is tried again, however
	// long its backoff has grown (default 1 s). It keeps a lock that
	// advertises but keeps failing from being dialled at the rate of its
	// advertisements.
	HeardRetry time.Duration
	// Retryable reports whether a link error may go away by itself (the
	// daemon passes bluez.Retryable). ErrLockAway is always retryable.
	// Default: DefaultRetryable.
	Retryable func(error) bool
	// MaxAge is how long a command without a not-after time (an unsigned
	// status, say) is retried after it was received, before it expires
	// (default 15 min).
	MaxAge time.Duration
	// OnResult, if set, is called after a result lands in the outbox (so
	// the MQTT publisher wakes). It must not block.
	OnResult func()
	// RescanAfterDrop is how long after a journal write failed the
	// scheduler reads the journal's pending commands again to take the
	// command up (default 10 s); Rescan is how often it does so
	// regardless, as a safety net (default 10 min).
	RescanAfterDrop, Rescan time.Duration
	// AgeAfter is how long a command waits in its lock's queue before it
	// counts as urgent whatever its operation (default 30 s), so that
	// status and user management get through a continuous load of locks
	// and unlocks (see the package doc, "Priorities").
	AgeAfter time.Duration
	// Audit configures reading the locks' audit logs; its zero value
	// reads none.
	Audit AuditOptions
}

func (o Options) withDefaults() (Options, error) {
	if o.Journal == nil || o.Link == nil {
		return o, fmt.Errorf("%w: Journal and Link are required", ErrConfig)
	}
	if o.MaxSessions < 0 || o.MaxPerSession < 0 || o.AttemptTimeout < 0 || o.MaxAge < 0 {
		return o, fmt.Errorf("%w: negative limit", ErrConfig)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxSessions == 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.MaxPerSession == 0 {
		o.MaxPerSession = DefaultMaxPerSession
	}
	if o.AttemptTimeout == 0 {
		o.AttemptTimeout = DefaultAttemptTimeout
	}
	if o.Backoff == nil {
		o.Backoff = DefaultBackoff
	}
	if o.HeardRetry <= 0 {
		o.HeardRetry = DefaultHeardRetry
	}
	if o.Retryable == nil {
		o.Retryable = DefaultRetryable
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.AgeAfter <= 0 {
		o.AgeAfter = DefaultAgeAfter
	}
	if o.RescanAfterDrop <= 0 {
		o.RescanAfterDrop = DefaultRescanAfterDrop
	}
	if o.Rescan <= 0 {
		o.Rescan = DefaultRescan
	}
	if err := o.Audit.withDefaults(); err != nil {
		return o, err
	}
	return o, nil
}

// DefaultBackoff doubles from DefaultMinBackoff to DefaultMaxBackoff with
// the number of consecutive failures, and draws the wait uniformly from
// the upper half of that (so locks that failed together do not retry
// together).
func DefaultBackoff(failures int) time.Duration {
	return backoff.Delay(DefaultMinBackoff, DefaultMaxBackoff, max(failures, 1)-1)
}

// DefaultRetryable reports whether err is ErrLockAway, a deadline, or an
// error that says so itself with a Retryable() bool method.
func DefaultRetryable(err error) bool {
	if errors.Is(err, ErrLockAway) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var r interface{ Retryable() bool }
	return errors.As(err, &r) && r.Retryable()
}
