package command

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/cred"
)

// signedResult returns e's lock's signed result of the command b, with
// status ok, as it travels (parsed back from its encoding).
func (e *env) signedResult(t testing.TB, b Body) *Result {
	t.Helper()
	r := sampleResult(t, b.Op)
	r.CommandID = bytes.Clone(b.CommandID[:])
	if err := SignResult(e.lock.Key, e.lock.Cert.KID, b.Op, b.Counter, &r); err != nil {
		t.Fatalf("SignResult: %v", err)
	}
	raw, err := MarshalResult(b.Op, &r)
	if err != nil {
		t.Fatalf("MarshalResult: %v", err)
	}
	got, err := ParseResult(b.Op, raw)
	if err != nil {
		t.Fatalf("ParseResult: %v", err)
	}
	return got
}

func expectOf(b Body) ResultExpect {
	return ResultExpect{LockID: b.LockID, CommandID: b.CommandID, Op: b.Op, Counter: b.Counter}
}

// wantRefused fails unless VerifyResult refuses r with want, and its
// reason mentions what (and no signature bytes).
func wantRefused(t *testing.T, r *Result, lock *cred.Cert, x ResultExpect, want error, what string) {
	t.Helper()
	s, err := VerifyResult(r, lock, x)
	if !errors.Is(err, want) {
		t.Fatalf("VerifyResult = %v, %v; want %v", s, err, want)
	}
	if !strings.Contains(err.Error(), what) {
		t.Fatalf("reason %q does not say %q", err, what)
	}
	if len(r.Signature) > 16 && strings.Contains(err.Error(), fmt.Sprintf("%x", r.Signature[len(r.Signature)-16:])) {
		t.Fatalf("reason %q holds the signature", err)
	}
	t.Logf("refused: %v", err)
}

func TestResultSignatureVerifies(t *testing.T) {
	e := newEnv(t)
	for _, op := range []Op{OpLock, OpUnlock, OpStatus, OpListUsers, OpReadAudit, OpAddUser} {
		b := e.body(op, 41)
		r := e.signedResult(t, b)
		s, err := VerifyResult(r, e.lock.Cert, expectOf(b))
		if err != nil {
			t.Fatalf("%v: %v", op, err)
		}
		if s.Status != r.Status || s.LockState != r.LockState || s.Counter != 41 || !s.Clock.Equal(t0) ||
			s.CommandID != b.CommandID || s.LockID != e.lockID || (r.Data != nil) != (s.DataSHA256 != nil) {
			t.Fatalf("%v: statement %v does not describe result %+v", op, s, r)
		}
		// Counter 0 in the expectation: not checked.
		x := expectOf(b)
		x.Counter = 0
		if _, err := VerifyResult(r, e.lock.Cert, x); err != nil {
			t.Fatalf("%v without counter: %v", op, err)
		}
	}
}

// Ed25519 and the encoding are deterministic: the vectors rely on it.
func TestResultSignatureDeterministic(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpUnlock, 7)
	r1, r2 := e.signedResult(t, b), e.signedResult(t, b)
	if !bytes.Equal(r1.Signature, r2.Signature) {
		t.Fatal("two signatures of one result differ")
	}
	if len(r1.Signature) > MaxResultSignatureSize {
		t.Fatalf("signature of %d bytes, limit %d", len(r1.Signature), MaxResultSignatureSize)
	}
}

// The largest result (list-users with 16 users of the longest IDs) still
// fits MaxResultSize with the largest signature (the largest counter and
// clock).
func TestResultSignatureFitsLargestResult(t *testing.T) {
	e := newEnv(t)
	var users []UserEntry
	for i := range MaxUsers {
		users = append(users, UserEntry{Slot: uint8(i), UserID: strings.Repeat("u", 63) + string(rune('a'+i)),
			Role: cred.RoleRider, NotBefore: time.Unix(maxTime-1, 0), NotAfter: time.Unix(maxTime, 0), KeyID: [8]byte{byte(i)}})
	}
	data, err := EncodeUsers(users)
	if err != nil {
		t.Fatal(err)
	}
	r := Result{RequestID: 1 << 31, Status: StatusOK, LockState: StateJammed, Battery: 100,
		Firmware: strings.Repeat("f", MaxFirmwareLen), Clock: time.Unix(maxTime, 0), CommandID: bytes.Repeat([]byte{9}, 16), Data: data}
	if err := SignResult(e.lock.Key, e.lock.Cert.KID, OpListUsers, MaxCounter, &r); err != nil {
		t.Fatal(err)
	}
	raw, err := MarshalResult(OpListUsers, &r)
	if err != nil {
		t.Fatalf("largest signed result: %v", err)
	}
	t.Logf("largest signed list-users result: %d bytes (limit %d), signature %d bytes", len(raw), MaxResultSize, len(r.Signature))
}

func TestAttackForgedResultStatus(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpLock, 9)
	r := e.signedResult(t, b)
	r.Status = StatusJammed // a gateway hides a jam... or fakes one
	wantRefused(t, r, e.lock.Cert, expectOf(b), ErrResultMismatch, "says jammed, the lock signed ok")
}

func TestAttackForgedResultLockState(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpUnlock, 9)
	r := e.signedResult(t, b)
	r.LockState = StateLocked // "it is locked", while the lock said unlocked
	wantRefused(t, r, e.lock.Cert, expectOf(b), ErrResultMismatch, "says locked, the lock signed unlocked")
}

func TestAttackForgedResultCommandID(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpLock, 9)
	r := e.signedResult(t, b)
	r.CommandID[0] ^= 1
	wantRefused(t, r, e.lock.Cert, expectOf(b), ErrResultMismatch, "result names command")
}

func TestAttackForgedResultClockAndData(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpStatus, 9)
	r := e.signedResult(t, b)
	r.Clock = r.Clock.Add(time.Hour)
	wantRefused(t, r, e.lock.Cert, expectOf(b), ErrResultMismatch, "clock")

	r = e.signedResult(t, b)
	r.Data, _ = EncodeLockStatus(LockStatus{Slots: 16})
	wantRefused(t, r, e.lock.Cert, expectOf(b), ErrResultMismatch, "data")
}

// A signature made with another lock's key: under this lock's credential it
// does not verify; with the other lock's credential it names the wrong lock.
func TestAttackForgedResultOtherLocksKey(t *testing.T) {
	e := newEnv(t)
	other := e.fleet.Lock(t, 0x0102030405060708)
	b := e.body(OpLock, 9)
	r := sampleResult(t, OpLock)
	r.CommandID = bytes.Clone(b.CommandID[:])
	// The other lock's key under this lock's kid.
	if err := SignResult(other.Key, e.lock.Cert.KID, b.Op, b.Counter, &r); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, &r, e.lock.Cert, expectOf(b), ErrBadSignature, "does not verify")
	// The other lock signing as itself, its credential alongside.
	if err := SignResult(other.Key, other.Cert.KID, b.Op, b.Counter, &r); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, &r, other.Cert, expectOf(b), ErrWrongLock, "signed by lock 0102030405060708")
	// Its signature presented with this lock's credential.
	wantRefused(t, &r, e.lock.Cert, expectOf(b), ErrSignerRejected, "signed by lock kid 0102030405060708")
}

// A genuine signed result of an older command (an earlier "locked") is
// replayed as the result of a new one.
func TestAttackForgedResultReplayedOlderCommand(t *testing.T) {
	e := newEnv(t)
	old := e.body(OpLock, 9)
	r := e.signedResult(t, old)
	fresh := old
	fresh.CommandID[15] ^= 0xff
	fresh.Counter = 10
	// The replayer relabels the result with the new command ID: the
	// signature no longer matches.
	relabel := *r
	relabel.CommandID = bytes.Clone(fresh.CommandID[:])
	wantRefused(t, &relabel, e.lock.Cert, expectOf(fresh), ErrResultMismatch, "signed for command")
	// Unchanged, it is the result of the old command, not the new one.
	wantRefused(t, r, e.lock.Cert, expectOf(fresh), ErrResultMismatch, "a result of another command")
	// Same command ID, other counter (a verifier that knows it).
	x := expectOf(old)
	x.Counter = 10
	wantRefused(t, r, e.lock.Cert, x, ErrResultMismatch, "counter 9")
	// Another op.
	x = expectOf(old)
	x.Op = OpUnlock
	wantRefused(t, r, e.lock.Cert, x, ErrResultMismatch, "signed for lock, the command is unlock")
}

func TestAttackForgedResultStrippedSignature(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpUnlock, 9)
	r := e.signedResult(t, b)
	r.Signature = nil
	wantRefused(t, r, e.lock.Cert, expectOf(b), ErrUnsignedResult, "carries a command ID but no signature")
	// With the command ID stripped too, it reads as a refusal the lock
	// did not sign.
	r.CommandID = nil
	wantRefused(t, r, e.lock.Cert, expectOf(b), ErrUnsignedResult, "before it verified it")
}

func TestAttackForgedResultFlippedSignatureBit(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpLock, 9)
	r := e.signedResult(t, b)
	r.Signature[len(r.Signature)-1] ^= 1
	wantRefused(t, r, e.lock.Cert, expectOf(b), ErrBadSignature, "does not verify")
	// A bit of the signed statement (the status, near the end).
	r = e.signedResult(t, b)
	i := bytes.Index(r.Signature, []byte{0x04, 0x00, 0x05}) // status ok, then key 5
	if i < 0 {
		t.Fatal("status not found in the statement")
	}
	r.Signature[i+1] = byte(StatusJammed)
	wantRefused(t, r, e.lock.Cert, expectOf(b), ErrBadSignature, "does not verify")
}

// Domain separation: a signed command is not a result signature, a result
// signature is not a signed command, and a credential other than a lock's
// never signs results.
func TestAttackResultSignatureConfusion(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpLock, 9)
	r := e.signedResult(t, b)

	// The operator's signed command in the result's signature slot (it
	// embeds a credential: too large to be one).
	forged := *r
	forged.Signature = e.sign(t, e.operator, b)
	wantRefused(t, &forged, e.lock.Cert, expectOf(b), ErrMalformed, "result signature of")
	// A small COSE_Sign1 of the fleet root (a set-time): its protected
	// header is not a result signature's.
	st, err := SignAsRoot(e.fleet.Root, e.fleet.RootKID, e.body(OpSetTime, 1))
	if err != nil {
		t.Fatal(err)
	}
	forged.Signature = st
	wantRefused(t, &forged, e.lock.Cert, expectOf(b), ErrMalformed, "protected header")

	// The result signature offered as a signed command.
	if _, err := e.v.Verify(r.Signature, OpLock); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a result signature verified as a command: %v", err)
	}
	// ... or as a credential.
	if _, err := cred.Parse(r.Signature, e.fleet.Roots); err == nil {
		t.Fatal("a result signature parsed as a credential")
	}

	// An operator signs a result statement with the result header, and
	// offers its own credential as the lock's.
	op := sampleResult(t, OpLock)
	op.CommandID = bytes.Clone(b.CommandID[:])
	if err := SignResult(e.operator.Key, e.lockID[:], b.Op, b.Counter, &op); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, &op, e.operator.Cert, expectOf(b), ErrSignerRejected, "lock credential only")
}

// Result key 10 is refused without key 7, and bounded.
func TestResultSignatureEncodingRules(t *testing.T) {
	e := newEnv(t)
	b := e.body(OpLock, 9)
	r := e.signedResult(t, b)
	noID := *r
	noID.CommandID = nil
	if _, err := MarshalResult(OpLock, &noID); !errors.Is(err, ErrMalformed) {
		t.Fatalf("signature without command ID encoded: %v", err)
	}
	big := *r
	big.Signature = make([]byte, MaxResultSignatureSize+1)
	if _, err := MarshalResult(OpLock, &big); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized signature encoded: %v", err)
	}
	if _, err := VerifyResultSignature(big.Signature, e.lock.Cert); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized signature verified: %v", err)
	}
}

// The protected header is the one docs/protocol.md §12.7.5 gives, byte for
// byte: C firmware writes it as a constant.
func TestResultProtectedHeader(t *testing.T) {
	want := unhex(t, "a2 01 27 10 78 20") // {1: -8, 16: tstr(32)
	want = append(want, "application/gatewayd-result+cose"...)
	if got := ResultProtected(); !bytes.Equal(got, want) || len(got) != 38 {
		t.Fatalf("protected header %x, want %x", got, want)
	}
}

// FuzzVerifyResultSignature: VerifyResultSignature never panics; it
// accepts only the genuine signature (Ed25519 verification of a fixed
// statement), and refuses everything else with one of its sentinels.
func FuzzVerifyResultSignature(f *testing.F) {
	e := newEnv(f)
	b := e.body(OpStatus, 9)
	good := e.signedResult(f, b).Signature
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(append(bytes.Clone(good), 0))
	st, err := SignAsRoot(e.fleet.Root, e.fleet.RootKID, e.body(OpSetTime, 1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(st)
	f.Add([]byte{0x84, 0x40, 0xa0, 0x40, 0x40})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := VerifyResultSignature(data, e.lock.Cert)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrSignerRejected) && !errors.Is(err, ErrWrongLock) {
				t.Fatalf("unexpected error for %x: %v", data, err)
			}
			return
		}
		if !bytes.Equal(data, good) || s.CommandID != b.CommandID {
			t.Fatalf("accepted %x, which is not the genuine signature", data)
		}
	})
}

// MaxSignedResultData is exact: data of that size, with every other field
// and the signature at their largest, fits MaxResultSize; one byte more
// does not.
func TestSignedResultDataBudget(t *testing.T) {
	e := newEnv(t)
	build := func(n int) ([]byte, error) {
		// One opaque CBOR item of n bytes: a byte string with a 3-byte head.
		data := append([]byte{0x59, byte((n - 3) >> 8), byte(n - 3)}, bytes.Repeat([]byte{7}, n-3)...)
		r := Result{RequestID: 1<<32 - 1, Status: StatusOK, LockState: StateJammed, Battery: 100,
			Firmware: strings.Repeat("f", MaxFirmwareLen), Clock: time.Unix(maxTime, 0), CommandID: bytes.Repeat([]byte{9}, 16), Data: data}
		if err := SignResult(e.lock.Key, e.lock.Cert.KID, OpReadAudit, MaxCounter, &r); err != nil {
			return nil, err
		}
		if len(r.Signature) != 206 {
			t.Fatalf("largest signature is %d bytes, the budget assumes 206", len(r.Signature))
		}
		return MarshalResult(OpReadAudit, &r)
	}
	b, err := build(MaxSignedResultData)
	if err != nil || len(b) != MaxResultSize {
		t.Fatalf("data of MaxSignedResultData (%d): %d bytes, %v; want exactly %d", MaxSignedResultData, len(b), err, MaxResultSize)
	}
	if _, err := build(MaxSignedResultData + 1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("one byte more encoded: %v", err)
	}
}
