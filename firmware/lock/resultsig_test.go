package lock

import (
	"errors"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/gatewayd/gatewayd/firmware/command"
)

// The lock signs every result that carries a command ID — ok, replay and
// duplicate_command alike — and no other; each signature verifies under
// its credential and binds the command.
func TestLockSignsResultsOfSignedCommands(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, "DC:A6:32:00:00:01")
	verify := func(r *command.Result, b command.Body) *command.ResultStatement {
		t.Helper()
		s, err := command.VerifyResult(r, e.lockP.Cert, command.ResultExpect{LockID: b.LockID, CommandID: b.CommandID, Op: b.Op, Counter: b.Counter})
		if err != nil {
			t.Fatalf("%v (%v): %v", b.Op, r.Status, err)
		}
		return s
	}

	unlock := e.body(command.OpUnlock, command.Args{})
	r := do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, unlock)})
	wantStatus(t, r, command.StatusOK)
	if s := verify(r, unlock); s.LockState != command.StateUnlocked || s.Status != command.StatusOK {
		t.Fatalf("signed %v", s)
	}

	// The same command again: duplicate_command, signed, with the first
	// outcome in the signed data.
	r = do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, unlock)})
	wantStatus(t, r, command.StatusDuplicateCommand)
	verify(r, unlock)

	// A lower counter: replay, signed (the command ID was verified).
	old := unlock
	old.CommandID[0] ^= 1
	r = do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, old)})
	wantStatus(t, r, command.StatusReplay)
	verify(r, old)

	// status, signed by the operator: the data is bound too.
	st := e.body(command.OpStatus, command.Args{})
	r = do(t, c, command.Request{Op: command.OpStatus, Signed: e.sign(e.operator, st)})
	wantStatus(t, r, command.StatusOK)
	if s := verify(r, st); s.DataSHA256 == nil {
		t.Fatal("status data not bound")
	}

	// Refused before verification: no command ID, so no signature.
	wrong := e.body(command.OpLock, command.Args{})
	wrong.LockID[0] ^= 1
	r = do(t, c, command.Request{Op: command.OpLock, Signed: e.sign(e.operator, wrong)})
	wantStatus(t, r, command.StatusWrongLock)
	if r.Signature != nil || r.CommandID != nil {
		t.Fatal("a refusal before verification carries a command ID or a signature")
	}
	if _, err := command.VerifyResult(r, e.lockP.Cert, command.ResultExpect{LockID: wrong.LockID, CommandID: wrong.CommandID, Op: wrong.Op}); !errors.Is(err, command.ErrUnsignedResult) {
		t.Fatalf("unsigned refusal: %v", err)
	}

	// The gateway's own status (no signed command): unsigned.
	r = do(t, c, command.Request{Op: command.OpStatus})
	wantStatus(t, r, command.StatusOK)
	if r.Signature != nil {
		t.Fatal("the result of an unsigned request is signed")
	}
}

// bigAuditor serves pages of 120 bytes per entry: a full page of 16 does
// not fit a signed result.
type bigAuditor struct{ asked []uint8 }

func (*bigAuditor) Record(time.Time, Event) error { return nil }
func (a *bigAuditor) Page(_ uint32, max uint8) (cbor.RawMessage, error) {
	a.asked = append(a.asked, max)
	n := 120 * int(max)
	return append([]byte{0x59, byte((n - 3) >> 8), byte(n - 3)}, make([]byte, n-3)...), nil
}

// A signed read-audit whose page would not fit one frame with the
// signature gets fewer entries, signed; unsigned, the page is as asked.
func TestSignedReadAuditFitsOneFrame(t *testing.T) {
	aud := &bigAuditor{}
	e := newEnv(t, func(o *Options) { o.Audit = aud })
	c := e.mustConnect(e.gateway, "DC:A6:32:00:00:02")
	b := e.body(command.OpReadAudit, command.Args{FromSeq: 0, Max: 16})
	r := do(t, c, command.Request{Op: command.OpReadAudit, Signed: e.sign(e.admin, b)})
	wantStatus(t, r, command.StatusOK)
	if len(r.Data) > command.MaxSignedResultData || len(r.Data) != 120*14 {
		t.Fatalf("signed page of %d bytes (asked %v), budget %d", len(r.Data), aud.asked, command.MaxSignedResultData)
	}
	if _, err := command.VerifyResult(r, e.lockP.Cert, command.ResultExpect{LockID: b.LockID, CommandID: b.CommandID, Op: b.Op, Counter: b.Counter}); err != nil {
		t.Fatal(err)
	}
	r = do(t, c, command.Request{Op: command.OpReadAudit, Args: command.Args{FromSeq: 0, Max: 16}})
	wantStatus(t, r, command.StatusOK)
	if len(r.Data) != 120*16 || r.Signature != nil {
		t.Fatalf("unsigned page of %d bytes, signature %v", len(r.Data), r.Signature != nil)
	}
}
