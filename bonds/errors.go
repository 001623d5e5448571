package bonds

import "errors"

// Sentinel errors. Every error this package returns that has one of these
// causes wraps it (match with errors.Is); the wrapping text names the call
// that failed and, for a file, its path.
var (
	// ErrCorrupt is returned when an existing database file cannot be used:
	// bbolt cannot open it (bad meta pages, checksum, truncated), it is
	// empty, a page is garbled (checkPages: Open walks every page in use
	// and the freelist), or our schema's meta bucket or version is missing or garbled.
	// The file is never modified, re-created or truncated; the error text
	// names `gatewayd db check`, `gatewayd db backup` and restoring a backup.
	// It is also returned by every call on an open DB after bbolt panicked
	// reading it (DB.Failed is then closed).
	ErrCorrupt = errors.New("database corrupt or unreadable")

	// ErrPermissions is returned when an existing database file can be read
	// or written by its group or by others (mode & 0077 != 0), or is not a
	// regular file. The error text says `chmod 600 PATH`.
	ErrPermissions = errors.New("database file permissions too open")

	// ErrSchemaTooNew is returned when the file's schema version is newer
	// than this build knows: a newer gatewayd wrote it. The file is not
	// touched.
	ErrSchemaTooNew = errors.New("database schema newer than this build")

	// ErrLocked is returned when another process (usually a running
	// gatewayd) holds the database file's lock for longer than
	// Options.Timeout.
	ErrLocked = errors.New("database in use by another process")

	// ErrDuplicate is returned by Append when the command ID is already in
	// the journal (within the replay window, across restarts); Append then
	// also returns the existing entry.
	ErrDuplicate = errors.New("duplicate command ID")

	// ErrNotFound is returned when a lock, user, audit cursor or journal
	// entry asked for does not exist.
	ErrNotFound = errors.New("not found")

	// ErrBadTransition is returned by Transition when the journal's state
	// machine does not allow the move (terminal states are final), and by
	// Ack for an entry that is not terminal.
	ErrBadTransition = errors.New("state transition not allowed")

	// ErrInvalid is returned when an argument is malformed: a zero ID, an
	// unknown state, bond state or presence, an empty operation, a too
	// long user ID.
	ErrInvalid = errors.New("invalid argument")

	// ErrClosed is returned by every method of a DB after Close (or while
	// Close runs), and by a Reconciler started twice or after Close.
	ErrClosed = errors.New("database closed")

	// ErrAuditConflict is returned by AdvanceAudit when the lock's stored
	// audit cursor is not the one the caller read from (another reader
	// advanced it, or the lock was deleted and recreated): nothing is
	// written; read the cursor again.
	ErrAuditConflict = errors.New("audit cursor moved")

	// ErrAuditBacklog is returned by AdvanceAudit when the lock already
	// has so many records waiting for the broker that the new ones would
	// exceed MaxAuditPending: nothing is written; read again once the
	// backlog was published.
	ErrAuditBacklog = errors.New("too many audit records waiting for the broker")

	// ErrCheck is returned by Check and CheckFile when bbolt's own
	// consistency check or one of the schema's invariants fails; the
	// joined errors under it say which.
	ErrCheck = errors.New("database check failed")
)
