package operator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
)

// lockResult returns the encoded result of the signed command b as the
// lock p signs it: status st, lock state ls, data for status.
func (e *env) lockResult(t *testing.T, p channeltest.Party, b command.Body, st command.Status, ls command.LockState) []byte {
	t.Helper()
	r := command.Result{RequestID: 3, Status: st, LockState: ls, Battery: 80, Firmware: "1.0.0",
		Clock: e.fleet.Now, CommandID: bytes.Clone(b.CommandID[:])}
	if st == command.StatusOK && b.Op == command.OpStatus {
		r.Data, _ = command.EncodeLockStatus(command.LockStatus{Users: 1, Slots: 16})
	}
	if st == command.StatusDuplicateCommand {
		r.Data, _ = command.EncodeDuplicate(command.StatusOK)
	}
	if err := command.SignResult(p.Key, p.Cert.KID, b.Op, b.Counter, &r); err != nil {
		t.Fatal(err)
	}
	raw, err := command.MarshalResult(b.Op, &r)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// signedMessage returns the message the outbox publishes for the lock's
// signed result of b, through JSON as a backend receives it.
func (e *env) signedMessage(t *testing.T, b command.Body, st command.Status, ls command.LockState) ResultMessage {
	t.Helper()
	status, state := st, bonds.StateSucceeded
	if st == command.StatusDuplicateCommand {
		status = command.StatusOK
	}
	if status != command.StatusOK {
		state = bonds.StateFailed
	}
	m, err := NewResultMessage(bonds.Result{CommandID: cidOf(b), LockID: bonds.LockID(e.lockID), Operation: b.Op.String(),
		State: state, Status: status.String(), Payload: e.lockResult(t, e.lock, b, st, ls), FinishedAt: e.fleet.Now}, e.fleet.Now)
	if err != nil {
		t.Fatal(err)
	}
	m.LockCredential = e.lock.Cert.Raw
	var out ResultMessage
	if err := json.Unmarshal(mustJSON(m), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *env) verifyOpts(b command.Body) VerifyOptions {
	return VerifyOptions{Roots: e.fleet.Roots, CommandID: cidOf(b), Operation: b.Op.String(), Counter: b.Counter,
		Now: func() time.Time { return e.fleet.Now }}
}

// refusedWith fails unless VerifyResult refuses m with want and a reason
// that says what, and holds no signature.
func refusedWith(t *testing.T, m ResultMessage, o VerifyOptions, want error, what string) {
	t.Helper()
	v, err := VerifyResult(&m, o)
	if !errors.Is(err, want) {
		t.Fatalf("VerifyResult = %v, %v; want %v", v, err, want)
	}
	if !strings.Contains(err.Error(), what) {
		t.Fatalf("reason %q does not say %q", err, what)
	}
	if len(m.LockSignature) > 0 && (strings.Contains(err.Error(), string(mustJSON(m.LockSignature))) ||
		bytes.Contains([]byte(err.Error()), m.LockSignature[len(m.LockSignature)-8:])) {
		t.Fatalf("reason %q holds the signature", err)
	}
	t.Logf("refused: %v", err)
}

func TestVerifyResultMessage(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		op   command.Op
		st   command.Status
		ls   command.LockState
		want command.Status
	}{
		{command.OpUnlock, command.StatusOK, command.StateUnlocked, command.StatusOK},
		{command.OpLock, command.StatusJammed, command.StateJammed, command.StatusJammed},
		{command.OpStatus, command.StatusOK, command.StateLocked, command.StatusOK},
		{command.OpLock, command.StatusDuplicateCommand, command.StateLocked, command.StatusOK},
	} {
		b := e.body(c.op, 5)
		m := e.signedMessage(t, b, c.st, c.ls)
		if m.Unsigned != "" || len(m.LockSignature) == 0 {
			t.Fatalf("%v: message %+v not marked signed", c.op, m)
		}
		v, err := VerifyResult(&m, e.verifyOpts(b))
		if err != nil {
			t.Fatalf("%v %v: %v", c.op, c.st, err)
		}
		if v.Outcome != c.want || v.Statement.LockState != c.ls || v.Lock.Subject != e.lock.Cert.Subject {
			t.Fatalf("%v: verified %v", c.op, v)
		}
		// With only the message's own command ID, and the backend's copy
		// of the credential.
		if _, err := VerifyResult(&m, VerifyOptions{Roots: e.fleet.Roots, LockCredential: e.lock.Cert.Raw,
			Now: func() time.Time { return e.fleet.Now }}); err != nil {
			t.Fatalf("%v with defaults: %v", c.op, err)
		}
	}
}

func TestAttackForgedResultMessage(t *testing.T) {
	e := newEnv(t)
	b := e.body(command.OpLock, 5)
	good := e.signedMessage(t, b, command.StatusJammed, command.StateJammed)

	t.Run("status", func(t *testing.T) {
		m := good
		m.Status, m.State = "ok", bonds.StateSucceeded
		refusedWith(t, m, e.verifyOpts(b), command.ErrResultMismatch, "status ok, the lock signed jammed")
	})
	t.Run("operation", func(t *testing.T) {
		m := good
		m.Operation = "unlock"
		o := e.verifyOpts(b)
		o.Operation = ""
		refusedWith(t, m, o, command.ErrResultMismatch, "signed for lock, the command is unlock")
		o.Operation = "lock"
		refusedWith(t, m, o, command.ErrResultMismatch, "operation unlock")
	})
	t.Run("lock state", func(t *testing.T) {
		m := good
		m.LockState = "locked"
		refusedWith(t, m, e.verifyOpts(b), command.ErrResultMismatch, "lock_state locked")
	})
	t.Run("lock result re-encoded with another state", func(t *testing.T) {
		m := good
		lr, _ := command.ParseResult(command.OpLock, m.LockResult)
		lr.LockState, lr.Status = command.StateLocked, command.StatusOK
		m.LockResult, _ = command.MarshalResult(command.OpLock, lr)
		m.Status, m.State, m.LockState = "ok", bonds.StateSucceeded, "locked"
		refusedWith(t, m, e.verifyOpts(b), command.ErrResultMismatch, "result says ok, the lock signed jammed")
	})
	t.Run("command ID", func(t *testing.T) {
		m := good
		m.CommandID[15] ^= 1
		refusedWith(t, m, e.verifyOpts(b), command.ErrResultMismatch, "the message is the result of command")
		// Relabelled and checked against its own (new) label.
		o := e.verifyOpts(b)
		o.CommandID = m.CommandID
		refusedWith(t, m, o, command.ErrResultMismatch, "signed for command")
	})
	t.Run("another lock's key", func(t *testing.T) {
		other := e.fleet.Lock(t, 0x0a0b0c0d0e0f1011)
		m := good
		m.LockResult = e.lockResult(t, other, b, command.StatusOK, command.StateLocked)
		lr, _ := command.ParseResult(command.OpLock, m.LockResult)
		m.LockSignature, m.Status, m.State, m.LockState = lr.Signature, "ok", bonds.StateSucceeded, "locked"
		// The other lock's signature against this lock's credential.
		refusedWith(t, m, e.verifyOpts(b), command.ErrSignerRejected, "signed by lock kid 0a0b0c0d0e0f1011")
		// With the other lock's credential, which is not this lock's.
		m.LockCredential = other.Cert.Raw
		refusedWith(t, m, e.verifyOpts(b), command.ErrSignerRejected, "not lock 0102030405060708")
		// A non-lock credential.
		m.LockCredential = e.gateway.Cert.Raw
		refusedWith(t, m, e.verifyOpts(b), command.ErrSignerRejected, "gateway")
	})
	t.Run("replayed result of an older command", func(t *testing.T) {
		older := e.body(command.OpLock, 4)
		m := e.signedMessage(t, older, command.StatusOK, command.StateLocked)
		m.CommandID = cidOf(b) // presented as the result of b
		refusedWith(t, m, e.verifyOpts(b), command.ErrResultMismatch, "a result of another command")
		// Unrelabelled, against the command the operator waits for.
		m = e.signedMessage(t, older, command.StatusOK, command.StateLocked)
		refusedWith(t, m, e.verifyOpts(b), command.ErrResultMismatch, "the message is the result of command")
		// The same command ID with another counter.
		o := e.verifyOpts(older)
		o.Counter = 99
		refusedWith(t, m, o, command.ErrResultMismatch, "counter 4")
	})
	t.Run("stripped signature", func(t *testing.T) {
		m := good
		m.LockSignature = nil
		refusedWith(t, m, e.verifyOpts(b), command.ErrUnsignedResult, "no lock signature")
		// Stripped from lock_result too: lock_signature no longer matches.
		m = good
		lr, _ := command.ParseResult(command.OpLock, m.LockResult)
		lr.Signature = nil
		m.LockResult, _ = command.MarshalResult(command.OpLock, lr)
		refusedWith(t, m, e.verifyOpts(b), command.ErrResultMismatch, "not the signature in lock_result")
	})
	t.Run("signature bit", func(t *testing.T) {
		m := good
		lr, _ := command.ParseResult(command.OpLock, m.LockResult)
		lr.Signature[len(lr.Signature)-1] ^= 0x80
		m.LockResult, _ = command.MarshalResult(command.OpLock, lr)
		m.LockSignature = lr.Signature
		refusedWith(t, m, e.verifyOpts(b), command.ErrBadSignature, "does not verify")
	})
	t.Run("no credential", func(t *testing.T) {
		m := good
		m.LockCredential = nil
		refusedWith(t, m, e.verifyOpts(b), command.ErrSignerRejected, "no credential of lock")
	})
	t.Run("untrusted root", func(t *testing.T) {
		rogue := channeltest.NewFleet(t, "rogue")
		o := e.verifyOpts(b)
		o.Roots = rogue.Roots
		refusedWith(t, good, o, command.ErrSignerRejected, "lock credential")
	})
}

// Results the gateway produced itself, and refusals the lock made before
// verifying, are unsigned and say so.
func TestUnsignedResultsAreMarked(t *testing.T) {
	e := newEnv(t)
	b := e.body(command.OpUnlock, 5)
	m, err := NewResultMessage(bonds.Result{CommandID: cidOf(b), LockID: bonds.LockID(e.lockID), Operation: "unlock",
		State: bonds.StateExpired, Status: "expired", Detail: "not run before its deadline"}, time.Time{})
	if err != nil || m.Unsigned != UnsignedGateway || m.LockSignature != nil {
		t.Fatalf("gateway result: %+v, %v", m, err)
	}
	refusedWith(t, m, e.verifyOpts(b), command.ErrUnsignedResult, "the gateway produced this result (expired, expired)")

	r := command.Result{RequestID: 1, Status: command.StatusLockedOut, LockState: command.StateLocked, Battery: 80,
		Firmware: "1.0.0", Detail: "42"}
	raw, _ := command.MarshalResult(command.OpUnlock, &r)
	m, err = NewResultMessage(bonds.Result{CommandID: cidOf(b), LockID: bonds.LockID(e.lockID), Operation: "unlock",
		State: bonds.StateFailed, Status: "locked_out", Payload: raw}, time.Time{})
	if err != nil || m.Unsigned != UnsignedLockRefused {
		t.Fatalf("lock refusal: %+v, %v", m, err)
	}
	refusedWith(t, m, e.verifyOpts(b), command.ErrUnsignedResult, "before verifying it")
}

// A signed result keeps its signature through the journal: published
// after a restart, it still carries it, with the lock's credential from
// the lock's record.
func TestOutboxPublishesSignatureAfterRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	path := t.TempDir() + "/gatewayd.db"
	db := openDB(t, path, e.clock.Now)
	if err := db.PutLock(ctx, bonds.Lock{ID: bonds.LockID(e.lockID), Credential: e.lock.Cert.Raw}); err != nil {
		t.Fatal(err)
	}
	b := e.body(command.OpUnlock, 5)
	c := bonds.Command{ID: cidOf(b), LockID: bonds.LockID(e.lockID), Operation: "unlock", Operator: "op-olga",
		Payload: e.sign(t, e.operator, b)}
	if _, err := db.Append(ctx, c); err != nil {
		t.Fatal(err)
	}
	for _, s := range []bonds.State{bonds.StateQueued, bonds.StateRunning} {
		if _, err := db.Transition(ctx, c.ID, s, nil); err != nil {
			t.Fatal(err)
		}
	}
	payload := e.lockResult(t, e.lock, b, command.StatusOK, command.StateUnlocked)
	if _, err := db.Transition(ctx, c.ID, bonds.StateSucceeded, func(en *bonds.Entry) {
		en.Result = &bonds.Result{Status: "ok", Payload: payload}
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, path, e.clock.Now)
	e.outbox(t, db)
	waitFor(t, "the result", func() bool { return len(e.resultsOn(t)) == 1 })
	m := e.resultsOn(t)[0]
	if !bytes.Equal(m.LockCredential, e.lock.Cert.Raw) {
		t.Fatal("published without the lock's credential")
	}
	v, err := VerifyResult(&m, e.verifyOpts(b))
	if err != nil {
		t.Fatalf("published result after restart: %v", err)
	}
	if v.Statement.LockState != command.StateUnlocked {
		t.Fatalf("verified %v", v)
	}
}
