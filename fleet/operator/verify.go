package operator

import (
	"bytes"
	"fmt"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

// VerifyOptions say what a verifier of results trusts and expects.
type VerifyOptions struct {
	// Roots are the trusted fleet roots (required).
	Roots cred.Roots
	// LockCredential is the lock's credential (CWT) from the backend's own
	// records; nil uses the one the message carries. Either way it must
	// chain to Roots, be a lock credential valid at Now and name the
	// message's lock.
	LockCredential []byte
	// CommandID, when not zero, is the command the verifier sent or is
	// looking up: a result for any other command is refused. Zero takes
	// the message's own command ID (then a genuine result of another
	// command relabelled is still refused, but a genuine result published
	// twice is not).
	CommandID bonds.CommandID
	// Operation, when not empty, is the command's operation name; empty
	// takes the message's.
	Operation string
	// Counter, when not zero, is the command's counter.
	Counter uint64
	// Now is the time the lock's credential must be valid at; nil:
	// time.Now.
	Now func() time.Time
}

// VerifiedResult is a result message whose lock signature [VerifyResult]
// accepted: its fields are the lock's signed word.
type VerifiedResult struct {
	// Statement is what the lock signed.
	Statement command.ResultStatement
	// Lock is the lock's verified credential.
	Lock *cred.Cert
	// Result is the lock's result (lock_result), decoded.
	Result *command.Result
	// Outcome is the status of the command's execution: the signed
	// status, or for duplicate_command the first outcome from its signed
	// data.
	Outcome command.Status
}

// VerifyResult checks that m, a result message from the result topic,
// carries the lock's signature (docs/protocol.md §12.7.5) over exactly what
// m says, for the command o expects. Errors wrap the firmware/command
// sentinels:
//
//   - command.ErrUnsignedResult: m carries no lock signature; the error
//     says why (m.Unsigned: the gateway produced it, or the lock refused
//     before verifying the command). Not a forgery by itself, but nothing
//     in m is the lock's word;
//   - command.ErrSignerRejected: no lock credential, or one that does not
//     chain to Roots, is not a lock's, is not valid at Now, or names
//     another lock than m;
//   - command.ErrMalformed: lock_result or the signature does not decode
//     strictly, or m has a signature but no lock_result;
//   - command.ErrBadSignature: the signature does not verify under the
//     lock's key;
//   - command.ErrWrongLock: the signature is another lock's;
//   - command.ErrResultMismatch: the signature is for another command
//     (ID, op or counter: a replayed result), or m's command ID, status,
//     state, lock state, clock, data or signature differ from the ones the
//     lock signed.
//
// Battery, firmware, detail, attempts and the gateway's times are not
// signed and not checked. VerifyResult never puts a signature in an error.
func VerifyResult(m *ResultMessage, o VerifyOptions) (*VerifiedResult, error) {
	if o.CommandID != (bonds.CommandID{}) && o.CommandID != m.CommandID {
		return nil, fmt.Errorf("%w: the message is the result of command %s, not %s", command.ErrResultMismatch, m.CommandID, o.CommandID)
	}
	if len(m.LockSignature) == 0 {
		return nil, fmt.Errorf("%w: %s", command.ErrUnsignedResult, unsignedReason(m))
	}
	opName := m.Operation
	if o.Operation != "" {
		opName = o.Operation
	}
	op, ok := command.ParseOp(opName)
	if !ok {
		return nil, fmt.Errorf("%w: unknown operation %q", command.ErrMalformed, opName)
	}
	if len(m.LockResult) == 0 {
		return nil, fmt.Errorf("%w: a lock signature without the lock's result", command.ErrMalformed)
	}
	lr, err := command.ParseResult(op, m.LockResult)
	if err != nil {
		return nil, fmt.Errorf("lock result: %w", err)
	}
	if !bytes.Equal(lr.Signature, m.LockSignature) {
		return nil, fmt.Errorf("%w: lock_signature is not the signature in lock_result", command.ErrResultMismatch)
	}
	lock, err := lockCredential(m, o)
	if err != nil {
		return nil, err
	}
	s, err := command.VerifyResult(lr, lock, command.ResultExpect{LockID: m.LockID, CommandID: m.CommandID, Op: op, Counter: o.Counter})
	if err != nil {
		return nil, err
	}
	v := &VerifiedResult{Statement: *s, Lock: lock, Result: lr, Outcome: s.Status}
	if s.Status == command.StatusDuplicateCommand {
		if v.Outcome, err = lr.Duplicate(); err != nil {
			return nil, fmt.Errorf("signed duplicate_command: %w", err)
		}
	}
	if err := sameAsSigned(m, v); err != nil {
		return nil, err
	}
	return v, nil
}

func unsignedReason(m *ResultMessage) string {
	switch m.Unsigned {
	case UnsignedGateway, "":
		if len(m.LockResult) == 0 {
			return fmt.Sprintf("the gateway produced this result (%s, %s) without the lock's answer", m.State, m.Status)
		}
		return "the result carries no lock signature"
	case UnsignedLockRefused:
		return fmt.Sprintf("the lock refused the command (%s) before verifying it, and signs only commands it verified", m.Status)
	case UnsignedNotSigned:
		return "the lock's result names the command but is not signed (firmware without result signatures?)"
	case UnsignedUnreadable:
		return "the gateway could not decode the lock's result"
	}
	return fmt.Sprintf("unsigned (%q)", m.Unsigned)
}

// lockCredential returns the lock's credential for m, verified.
func lockCredential(m *ResultMessage, o VerifyOptions) (*cred.Cert, error) {
	raw := o.LockCredential
	if raw == nil {
		raw = m.LockCredential
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: no credential of lock %s (the message has none; pass the backend's copy)", command.ErrSignerRejected, m.LockID)
	}
	c, err := cred.Parse(raw, o.Roots)
	if err != nil {
		return nil, fmt.Errorf("%w: lock credential: %w", command.ErrSignerRejected, err)
	}
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	if err := c.CheckAt(now); err != nil {
		return nil, fmt.Errorf("%w: lock credential: %w", command.ErrSignerRejected, err)
	}
	if c.Kind != cred.KindLock || !bytes.Equal(c.KID, m.LockID[:]) {
		return nil, fmt.Errorf("%w: the credential is %v %q, not lock %s", command.ErrSignerRejected, c.Kind, c.Subject, m.LockID)
	}
	return c, nil
}

// sameAsSigned checks the message's readable fields against the signed
// result: the gateway must not say more, or other, than the lock signed.
func sameAsSigned(m *ResultMessage, v *VerifiedResult) error {
	mismatch := func(what string, got, want any) error {
		return fmt.Errorf("%w: the message says %s %v, the lock signed %v", command.ErrResultMismatch, what, got, want)
	}
	if m.Operation != v.Statement.Op.String() {
		return mismatch("operation", m.Operation, v.Statement.Op)
	}
	if m.Status != v.Outcome.String() {
		return mismatch("status", m.Status, v.Outcome)
	}
	state := bonds.StateFailed
	if v.Outcome == command.StatusOK {
		state = bonds.StateSucceeded
	}
	if m.State != state {
		return mismatch("state", m.State, state)
	}
	// The lock's fields as NewResultMessage derives them from the signed
	// result.
	want, err := NewResultMessage(bonds.Result{CommandID: m.CommandID, LockID: m.LockID, Operation: m.Operation,
		State: m.State, Status: m.Status, Payload: m.LockResult}, time.Time{})
	if err != nil {
		return fmt.Errorf("%w: %w", command.ErrMalformed, err)
	}
	switch {
	case m.LockState != want.LockState:
		return mismatch("lock_state", m.LockState, want.LockState)
	case !m.LockClock.Equal(want.LockClock):
		return mismatch("lock_clock", m.LockClock, want.LockClock)
	case !bytes.Equal(mustJSON(m.LockStatus), mustJSON(want.LockStatus)):
		return mismatch("lock_status", string(mustJSON(m.LockStatus)), string(mustJSON(want.LockStatus)))
	case !bytes.Equal(mustJSON(m.Users), mustJSON(want.Users)):
		return mismatch("users", len(m.Users), len(want.Users))
	}
	return nil
}

// String describes a verified result for humans (no signature in it).
func (v *VerifiedResult) String() string {
	s := v.Statement.String()
	if v.Outcome != v.Statement.Status {
		s += fmt.Sprintf(" (first outcome %v)", v.Outcome)
	}
	return s
}
