package fleet

import (
	"context"
	"crypto/ed25519"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
)

// Journal is the part of the command journal the scheduler uses;
// *bonds.DB satisfies it.
type Journal interface {
	// Pending returns the entries that are not terminal, oldest first.
	Pending(ctx context.Context) ([]bonds.Entry, error)
	// Entry returns a command's entry.
	Entry(ctx context.Context, id bonds.CommandID) (bonds.Entry, error)
	// Transition moves an entry to a state (see bonds.DB.Transition); a
	// terminal one puts its result in the outbox.
	Transition(ctx context.Context, id bonds.CommandID, to bonds.State, mutate func(*bonds.Entry)) (bonds.Entry, error)
	// TransitionBatch makes several transitions in one write (one
	// transaction, one fsync), each reported on its own (see
	// bonds.DB.TransitionBatch): the scheduler writes a command's outcome
	// with the transitions that lead to it (queued, running with the
	// attempts made) in one write, and expires or rejects the commands
	// admitted together in one.
	TransitionBatch(ctx context.Context, reqs []bonds.TransitionReq) ([]bonds.Entry, []error, error)
}

// Link reaches locks. The daemon implements it over the BlueZ client (an
// LE connection, then channel.Dial over its GATT transport, then a
// lockclient); fleettest has fakes.
type Link interface {
	// Dial connects to a lock. ctx bounds the connect (and the handshake,
	// unless the Session implements Handshaker) but not the Session's
	// life. The scheduler never has two Dials in progress at once. A lock
	// that is not in range gives ErrLockAway.
	Dial(ctx context.Context, lock bonds.LockID) (Session, error)
}

// Session is an open, authenticated session with one lock. The scheduler
// uses a Session from one goroutine and never calls Do after Close.
type Session interface {
	// Do sends one request for op, carrying the operator-signed command
	// signed (nil for an operation the gateway's own credential allows,
	// such as status), and returns the lock's result. A result whose
	// status is not ok comes with a nil error; an error is a failure of
	// the link or the session, after which the outcome of the request is
	// unknown.
	Do(ctx context.Context, op command.Op, signed []byte) (*command.Result, error)
	// Close ends the session and the connection.
	Close() error
}

// Handshaker is implemented by a Session whose secure-channel handshake
// is not part of Dial. The scheduler runs Handshake after it has released
// the connect slot, so one lock's handshake overlaps with the next lock's
// connection attempt.
type Handshaker interface {
	Handshake(ctx context.Context) error
}

// AuditReader is implemented by a Session that can read the lock's audit
// log on the gateway's own credential (read-audit is an operation of the
// gateway role, docs/protocol.md §12.5). The scheduler reads the log at
// the end of a session, after the queued commands (see AuditOptions).
type AuditReader interface {
	// ReadAudit sends read-audit for up to max (1..16) entries from
	// fromSeq on and returns the lock's result, whose data is an audit
	// page (firmware/lock/audit). Errors are as Session.Do's.
	ReadAudit(ctx context.Context, fromSeq uint64, max int) (*command.Result, error)
}

// PeerKeyer is implemented by a Session that knows the lock's public key
// as the lock proved it in the handshake (the key of its fleet
// credential). With it the scheduler also checks the lock's signature on
// a signed audit page (docs/protocol.md §14.5.6, step 6).
type PeerKeyer interface {
	// PeerKey returns the lock's key, or nil before the handshake.
	PeerKey() ed25519.PublicKey
}
