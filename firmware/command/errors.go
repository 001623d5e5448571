package command

import (
	"errors"
	"fmt"
)

// Status is the status code of a [Result] (key 2). Each code but
// [StatusOK] has one sentinel error of this package: [Status.Err] and
// [StatusOf] map between them. The values are fixed by the spec
// (docs/protocol.md §12.8, "Status codes").
type Status uint16

// Status codes.
const (
	StatusOK               Status = 0
	StatusMalformed        Status = 1
	StatusUnknownOp        Status = 2
	StatusForbidden        Status = 3
	StatusBadSignature     Status = 4
	StatusSignerRejected   Status = 5
	StatusWrongLock        Status = 6
	StatusExpired          Status = 7
	StatusReplay           Status = 8
	StatusDuplicateCommand Status = 9
	StatusTableFull        Status = 10
	StatusNoSuchUser       Status = 11
	StatusJammed           Status = 12
	StatusLockedOut        Status = 13
	StatusBondRefused      Status = 14
	StatusInterrupted      Status = 15
	StatusBadTime          Status = 16
	StatusInternal         Status = 17
	StatusNotReady         Status = 18

	// maxStatus is the largest defined status code.
	maxStatus = StatusNotReady
)

// Sentinel errors, one per status code other than ok. Every error this
// package returns wraps exactly one of them (match with errors.Is), but for
// the result verification errors below; errors from firmware/cred that
// explain a refusal are wrapped as well.
var (
	// ErrMalformed (status 1) is returned when a message is not the exact
	// CBOR structure the spec allows: too large, not well-formed, a tag, an
	// indefinite length, a duplicate or unknown map key, a missing required
	// key, a value of the wrong type or out of range, trailing bytes, an
	// encoding that is not core deterministic, both args and a signed
	// command in one request, or a signed command whose COSE_Sign1
	// envelope or body breaks these rules. Marshal functions return it for
	// values they cannot encode.
	ErrMalformed = errors.New("command: malformed")
	// ErrUnknownOp (status 2) is returned when a request names an
	// operation code this version does not define.
	ErrUnknownOp = errors.New("command: unknown operation")
	// ErrForbidden (status 3) is returned when the party whose authority a
	// command relies on may not perform it: the session peer's effective
	// permissions lack the operation's bit; the operation must be signed
	// and is not; the signer's role does not allow the operation (an
	// operator-role credential signing add-user, set-time signed by an
	// operator); the fleet root signed anything but set-time; or the signed
	// body names another operation than the request.
	ErrForbidden = errors.New("command: forbidden")
	// ErrBadSignature (status 4) is returned when the signature of a
	// signed command does not verify under the key of its signer (for
	// example because the body was changed after signing).
	ErrBadSignature = errors.New("command: bad signature")
	// ErrSignerRejected (status 5) is returned when the signer of a signed
	// command is not acceptable: its credential was not signed by a trusted
	// fleet root, is malformed, is expired or not yet valid, or is not an
	// operator credential (a gateway, user or lock credential); or the
	// fleet root kid it names is not trusted.
	ErrSignerRejected = errors.New("command: signer rejected")
	// ErrWrongLock (status 6) is returned when a signed command names
	// another lock ID than the verifier's.
	ErrWrongLock = errors.New("command: command is for another lock")
	// ErrExpired (status 7) is returned when a signed command's not_after
	// is not after the verifier's clock.
	ErrExpired = errors.New("command: command expired")
	// ErrReplay (status 8) is returned by the lock (and the gateway's
	// tracker) when a signed command's counter is not above the highest
	// counter already seen from its signer.
	ErrReplay = errors.New("command: replayed counter")
	// ErrDuplicateCommand (status 9) is returned when a signed command's
	// command ID was already executed; the lock answers with the outcome it
	// stored for it.
	ErrDuplicateCommand = errors.New("command: command already executed")
	// ErrTableFull (status 10) is returned when add-user finds no free
	// user slot.
	ErrTableFull = errors.New("command: user table full")
	// ErrNoSuchUser (status 11) is returned when remove-user names a user
	// the lock does not hold.
	ErrNoSuchUser = errors.New("command: no such user")
	// ErrJammed (status 12) is returned when the actuator failed to reach
	// the commanded position.
	ErrJammed = errors.New("command: actuator jammed")
	// ErrLockedOut (status 13) is returned while the lock refuses commands
	// after repeated failures (backoff); the result's detail gives the
	// seconds to wait.
	ErrLockedOut = errors.New("command: locked out")
	// ErrBondRefused (status 14) is returned when the lock refuses to open
	// a bond window (one is already open for another peer, the peer is not
	// on a BLE link the lock can bond, or pairing attempts are rate-limited).
	ErrBondRefused = errors.New("command: bond refused")
	// ErrInterrupted (status 15) is returned when power was lost after the
	// lock accepted a signed command (and stored its counter) but before
	// the actuator moved: the command was not executed and, its counter
	// being spent, cannot be replayed; the operator must sign a new one.
	ErrInterrupted = errors.New("command: interrupted before actuation")
	// ErrBadTime (status 16) is returned when the lock refuses a set-time:
	// the new time is not acceptable to its clock policy.
	ErrBadTime = errors.New("command: time refused")
	// ErrInternal (status 17) is returned for a failure inside the lock
	// that is none of the above (storage, hardware); and by [StatusOf] for
	// an error that wraps no sentinel of this package.
	ErrInternal = errors.New("command: internal error")
	// ErrNotReady (status 18) is returned when the lock cannot run an
	// authorised command in its present condition: enter-dfu while the
	// bolt is not locked (the bike is in use) or the battery is below
	// the lock's floor for a firmware update. The detail says which; the
	// operator signs a new command once the condition is gone.
	ErrNotReady = errors.New("command: lock not ready")
)

// statusErrs is indexed by Status.
var statusErrs = [...]error{
	StatusOK:               nil,
	StatusMalformed:        ErrMalformed,
	StatusUnknownOp:        ErrUnknownOp,
	StatusForbidden:        ErrForbidden,
	StatusBadSignature:     ErrBadSignature,
	StatusSignerRejected:   ErrSignerRejected,
	StatusWrongLock:        ErrWrongLock,
	StatusExpired:          ErrExpired,
	StatusReplay:           ErrReplay,
	StatusDuplicateCommand: ErrDuplicateCommand,
	StatusTableFull:        ErrTableFull,
	StatusNoSuchUser:       ErrNoSuchUser,
	StatusJammed:           ErrJammed,
	StatusLockedOut:        ErrLockedOut,
	StatusBondRefused:      ErrBondRefused,
	StatusInterrupted:      ErrInterrupted,
	StatusBadTime:          ErrBadTime,
	StatusInternal:         ErrInternal,
	StatusNotReady:         ErrNotReady,
}

var statusNames = [...]string{
	"ok", "malformed", "unknown_op", "forbidden", "bad_signature",
	"signer_rejected", "wrong_lock", "expired", "replay", "duplicate_command",
	"table_full", "no_such_user", "jammed", "locked_out", "bond_refused",
	"interrupted", "bad_time", "internal", "not_ready",
}

// Valid reports whether s is a defined status code.
func (s Status) Valid() bool { return s <= maxStatus }

// String returns the status's spec name ("ok", "bad_signature", ...), or
// "status(N)" for an undefined code.
func (s Status) String() string {
	if s.Valid() {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", uint16(s))
}

// Err returns the sentinel error of s: nil for StatusOK, ErrInternal
// wrapped with the number for an undefined code.
func (s Status) Err() error {
	if s.Valid() {
		return statusErrs[s]
	}
	return fmt.Errorf("%w: undefined status %d", ErrInternal, uint16(s))
}

// StatusOf returns the status code that reports err: StatusOK for nil, the
// code of the first sentinel of this package that err wraps, and
// StatusInternal for any other error.
func StatusOf(err error) Status {
	if err == nil {
		return StatusOK
	}
	for s := StatusMalformed; s <= maxStatus; s++ {
		if errors.Is(err, statusErrs[s]) {
			return s
		}
	}
	return StatusInternal
}

// Errors of result verification ([VerifyResult]). They are no status
// codes: a lock never sends them; the operator's side reports them.
var (
	// ErrUnsignedResult is returned when a result carries no lock
	// signature: the lock refused the command before it verified it (it
	// signs only results with a command ID), or the result was not the
	// lock's at all. Nothing in it is the lock's word.
	ErrUnsignedResult = errors.New("command: result not signed by the lock")
	// ErrResultMismatch is returned when a result signature verifies but
	// does not match: it was made for another command (a replayed result),
	// another op or counter, or the result's status, lock state, clock,
	// command ID or data were changed after the lock signed it.
	ErrResultMismatch = errors.New("command: result does not match the lock's signature")
)
