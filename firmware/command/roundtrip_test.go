package command

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/frame"
)

// TestRequestRoundTripUnsigned: every op's request, with its sample
// arguments, encodes, parses back to the same value, and re-encodes to the
// same bytes.
func TestRequestRoundTripUnsigned(t *testing.T) {
	for _, op := range allOps {
		t.Run(op.String(), func(t *testing.T) {
			req := Request{Op: op, RequestID: 0xfffffff0 + uint32(op), Args: sampleArgs(op)}
			b, err := MarshalRequest(&req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseRequest(b)
			if err != nil {
				t.Fatalf("ParseRequest(%x): %v", b, err)
			}
			if got.Op != req.Op || got.RequestID != req.RequestID || !got.Args.Equal(&req.Args) || got.Signed != nil {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, req)
			}
			again, _ := MarshalRequest(&got)
			if !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs: %x vs %x", again, b)
			}
		})
	}
}

// TestRequestRoundTripSigned: every op's request carrying a signed command
// round-trips, and the signed command inside verifies to the same body.
func TestRequestRoundTripSigned(t *testing.T) {
	e := newEnv(t)
	for i, op := range allOps {
		t.Run(op.String(), func(t *testing.T) {
			b := e.body(op, uint64(i+1))
			signed := e.sign(t, e.admin, b)
			if op == OpAllowBond {
				// Nobody may sign allow-bond (Verify says forbidden), but
				// the request still round-trips.
				signed = e.sign(t, e.operator, b)
			}
			req := Request{Op: op, RequestID: uint32(i), Signed: signed}
			raw, err := MarshalRequest(&req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseRequest(raw)
			if err != nil {
				t.Fatal(err)
			}
			if got.Op != op || got.RequestID != uint32(i) || !bytes.Equal(got.Signed, signed) || !got.Args.Equal(&Args{}) {
				t.Fatalf("round trip: got %+v", got)
			}
			vf, err := e.v.Verify(got.Signed, got.Op)
			if op == OpAllowBond {
				wantErr(t, err, ErrForbidden)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !vf.Body.Equal(&b) {
				t.Fatalf("body:\n got %+v\nwant %+v", vf.Body, b)
			}
		})
	}
}

// TestRequestKnownBytes pins small encodings worked by hand.
func TestRequestKnownBytes(t *testing.T) {
	for _, c := range []struct {
		name string
		req  Request
		hex  string
	}{
		// {1: 3, 2: 7}
		{"status", Request{Op: OpStatus, RequestID: 7}, "a2 01 03 02 07"},
		// {1: 7, 2: 256, 3: {1: 45}}
		{"allow-bond 45 s", Request{Op: OpAllowBond, RequestID: 256, Args: Args{WindowSeconds: 45}},
			"a3 01 07 02 19 0100 03 a1 01 18 2d"},
		// {1: 7, 2: 0}: the default window leaves args out.
		{"allow-bond default", Request{Op: OpAllowBond}, "a2 01 07 02 00"},
		// {1: 9, 2: 4294967295, 3: {1: 0, 2: 16}}
		{"read-audit", Request{Op: OpReadAudit, RequestID: 1<<32 - 1, Args: Args{Max: 16}},
			"a3 01 09 02 1a ffffffff 03 a2 01 00 02 10"},
		// {1: 5, 2: 1, 3: {1: "bob"}}
		{"remove-user", Request{Op: OpRemoveUser, RequestID: 1, Args: Args{UserID: "bob"}},
			"a3 01 05 02 01 03 a1 01 63 626f62"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := MarshalRequest(&c.req)
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, c.hex); !bytes.Equal(b, want) {
				t.Fatalf("got %x, want %x", b, want)
			}
			if _, err := ParseRequest(b); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestResultRoundTripOK: every op's successful result, with its data,
// round-trips, and the data accessors give back what was encoded.
func TestResultRoundTripOK(t *testing.T) {
	for _, op := range allOps {
		t.Run(op.String(), func(t *testing.T) {
			r := sampleResult(t, op)
			b, err := MarshalResult(op, &r)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseResult(op, b)
			if err != nil {
				t.Fatalf("ParseResult(%x): %v", b, err)
			}
			if !reflect.DeepEqual(*got, r) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", *got, r)
			}
			if got.Err() != nil {
				t.Fatalf("Err() = %v", got.Err())
			}
		})
	}
}

// TestResultDataAccessors: typed data comes back equal.
func TestResultDataAccessors(t *testing.T) {
	st := LockStatus{LockoutUntil: t0, Failures: 9, Users: 1, Slots: 8}
	w := BondWindow{Passkey: 7, WindowSeconds: 60, Peer: "00:1A:7D:DA:71:13"}
	users := []UserEntry{{Slot: 3, UserID: "u", Role: cred.RoleRider, NotAfter: t0, KeyID: KeyID(userKey)}}

	r := Result{}
	var err error
	if r.Data, err = EncodeLockStatus(st); err != nil {
		t.Fatal(err)
	}
	if got, err := r.LockStatus(); err != nil || got != st {
		t.Fatalf("LockStatus: %+v, %v", got, err)
	}
	if r.Data, err = EncodeBondWindow(w); err != nil {
		t.Fatal(err)
	}
	if got, err := r.BondWindow(); err != nil || got != w {
		t.Fatalf("BondWindow: %+v, %v", got, err)
	}
	if r.Data, err = EncodeUsers(users); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Users(); err != nil || !reflect.DeepEqual(got, users) {
		t.Fatalf("Users: %+v, %v", got, err)
	}
	if r.Data, err = EncodeUsers(nil); err != nil || !bytes.Equal(r.Data, []byte{0x80}) {
		t.Fatalf("EncodeUsers(nil) = %x, %v", r.Data, err)
	}
	if got, err := r.Users(); err != nil || len(got) != 0 {
		t.Fatalf("Users of []: %+v, %v", got, err)
	}
	// Wrong accessor for the data: malformed, never a panic.
	if r.Data, err = EncodeBondWindow(w); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Users(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Users of bond data: %v", err)
	}
	if _, err := r.LockStatus(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("LockStatus of bond data: %v", err)
	}
}

// TestResultRoundTripErrors: refusals round-trip, carry no data, and map
// back to their sentinels; duplicate_command carries the stored status;
// locked_out carries the wait in its detail.
func TestResultRoundTripErrors(t *testing.T) {
	for s := StatusMalformed; s <= maxStatus; s++ {
		t.Run(s.String(), func(t *testing.T) {
			r := Result{RequestID: 5, Status: s, LockState: StateJammed, Battery: 100,
				Firmware: "1.2.3-rc.1", Detail: "why"}
			if s == StatusDuplicateCommand {
				r.CommandID = bytes.Repeat([]byte{0xcc}, 16)
				var err error
				if r.Data, err = EncodeDuplicate(StatusOK); err != nil {
					t.Fatal(err)
				}
			}
			if s == StatusLockedOut {
				r.Detail = LockedOutDetail(1500 * time.Millisecond)
			}
			b, err := MarshalResult(OpUnlock, &r)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseResult(OpUnlock, b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, r) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", *got, r)
			}
			if !errors.Is(got.Err(), s.Err()) || StatusOf(got.Err()) != s {
				t.Fatalf("Err() = %v", got.Err())
			}
			switch s {
			case StatusDuplicateCommand:
				if orig, err := got.Duplicate(); err != nil || orig != StatusOK {
					t.Fatalf("Duplicate() = %v, %v", orig, err)
				}
			case StatusLockedOut:
				if d, ok := got.RetryAfter(); !ok || d != 2*time.Second {
					t.Fatalf("RetryAfter() = %v, %v (detail %q)", d, ok, got.Detail)
				}
			}
		})
	}
}

// TestResultDataRule: data exactly when the status and op call for it.
func TestResultDataRule(t *testing.T) {
	ok := sampleResult(t, OpStatus)
	noData := ok
	noData.Data = nil
	if _, err := MarshalResult(OpStatus, &noData); !errors.Is(err, ErrMalformed) {
		t.Fatalf("status result without data: %v", err)
	}
	if _, err := MarshalResult(OpLock, &ok); !errors.Is(err, ErrMalformed) {
		t.Fatalf("lock result with data: %v", err)
	}
	refused := ok
	refused.Status = StatusForbidden
	if _, err := MarshalResult(OpStatus, &refused); !errors.Is(err, ErrMalformed) {
		t.Fatalf("refusal with data: %v", err)
	}
	// The same bytes parse as a status result but not as a list-users one.
	b, err := MarshalResult(OpStatus, &ok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseResult(OpListUsers, b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("status data read as list-users: %v", err)
	}
	// A refusal of an undefined op still encodes.
	refused.Data = nil
	if _, err := MarshalResult(Op(200), &refused); err != nil {
		t.Fatalf("refusal of an undefined op: %v", err)
	}
}

// TestStatusErrBijection: Status.Err and StatusOf are inverse, names are
// distinct, and foreign errors are internal.
func TestStatusErrBijection(t *testing.T) {
	if StatusOK.Err() != nil || StatusOf(nil) != StatusOK {
		t.Fatal("ok must map to nil")
	}
	seen := map[error]bool{}
	for s := StatusMalformed; s <= maxStatus; s++ {
		err := s.Err()
		if err == nil || seen[err] {
			t.Fatalf("%v: error %v nil or shared", s, err)
		}
		seen[err] = true
		if StatusOf(err) != s {
			t.Fatalf("StatusOf(%v) = %v, want %v", err, StatusOf(err), s)
		}
	}
	if StatusOf(errors.New("disk on fire")) != StatusInternal {
		t.Fatal("a foreign error must be internal")
	}
	if !errors.Is(Status(99).Err(), ErrInternal) || Status(99).String() != "status(99)" {
		t.Fatal("undefined status")
	}
	if StatusBadSignature.String() != "bad_signature" || StatusDuplicateCommand.String() != "duplicate_command" {
		t.Fatal("names")
	}
}

// TestOpPerms: each op maps to its own permission bit, in cred's order.
func TestOpPerms(t *testing.T) {
	want := []cred.Perm{cred.PermLock, cred.PermUnlock, cred.PermStatus, cred.PermAddUser,
		cred.PermRemoveUser, cred.PermListUsers, cred.PermAllowBond, cred.PermClearBonds,
		cred.PermReadAudit, cred.PermSetTime}
	for i, op := range allOps {
		if op.Perm() != want[i] || op.String() != want[i].String() {
			t.Errorf("%v: perm %v, want %v", op, op.Perm(), want[i])
		}
	}
	if Op(0).Perm() != 0 || Op(13).Perm() != 0 || Op(13).String() != "op(13)" || OpEnterDFU.Perm() != 0 || !OpEnterDFU.AdminOnly() {
		t.Error("undefined ops")
	}
}

// TestMaxResultSizeFitsAFrame: a result always fits one Response frame.
func TestMaxResultSizeFitsAFrame(t *testing.T) {
	if MaxResultSize != frame.DefaultMaxPlaintext {
		t.Fatalf("MaxResultSize %d, frame plaintext %d", MaxResultSize, frame.DefaultMaxPlaintext)
	}
	if MaxRequestSize > frame.DefaultMaxPlaintext {
		t.Fatal("MaxRequestSize exceeds a frame")
	}
}

// TestLargestListUsersFits: a full user table, with the longest IDs and
// detail, fits MaxResultSize.
func TestLargestListUsersFits(t *testing.T) {
	users := make([]UserEntry, MaxUsers)
	for i := range users {
		id := bytes.Repeat([]byte{'x'}, MaxUserIDLen)
		id[0] = byte('a' + i)
		users[i] = UserEntry{Slot: uint8(i), UserID: string(id), Role: cred.RoleRider,
			NotBefore: time.Unix(1<<32-2, 0), NotAfter: time.Unix(1<<32-1, 0), KeyID: [8]byte{0xff}}
	}
	data, err := EncodeUsers(users)
	if err != nil {
		t.Fatal(err)
	}
	r := Result{RequestID: 1<<32 - 1, Status: StatusOK, Battery: 100,
		Firmware: string(bytes.Repeat([]byte{'9'}, MaxFirmwareLen)), Clock: time.Unix(1<<32-1, 0),
		CommandID: make([]byte, 16), Detail: string(bytes.Repeat([]byte{'d'}, MaxDetailLen)), Data: data}
	b, err := MarshalResult(OpListUsers, &r)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("largest list-users result: %d bytes (limit %d)", len(b), MaxResultSize)
}

// TestLargestSignedCommandFits: the largest add-user signed by the largest
// credential fits MaxSignedSize, and its request MaxRequestSize.
func TestLargestSignedCommandFits(t *testing.T) {
	e := newEnv(t)
	long := string(bytes.Repeat([]byte{'o'}, cred.MaxSubjectLen))
	p := e.fleet.Issue(t, cred.Claims{Subject: long, Issuer: string(bytes.Repeat([]byte{'i'}, cred.MaxIssuerLen)),
		Kind: cred.KindOperator, Role: cred.RoleAdmin, Perms: cred.PermAll, IssuedAt: e.fleet.Now,
		NotBefore: time.Unix(1<<32-3, 0), Expiry: time.Unix(1<<32-1, 0)})
	b := e.body(OpAddUser, MaxCounter)
	b.Args.UserID = string(bytes.Repeat([]byte{'u'}, MaxUserIDLen))
	b.Args.NotBefore, b.Args.NotAfter = time.Unix(1<<32-2, 0), time.Unix(1<<32-1, 0)
	b.NotAfter = time.Unix(1<<32-1, 0)
	s := e.sign(t, p, b)
	req, err := MarshalRequest(&Request{Op: OpAddUser, RequestID: 1<<32 - 1, Signed: s})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("largest signed command: %d bytes (limit %d); request %d bytes (limit %d)",
		len(s), MaxSignedSize, len(req), MaxRequestSize)
}

// TestArgsForOtherOpsRefused: a field that belongs to another op does not
// encode.
func TestArgsForOtherOpsRefused(t *testing.T) {
	for _, c := range []struct {
		op   Op
		args Args
	}{
		{OpUnlock, Args{UserID: "x"}},
		{OpRemoveUser, Args{UserID: "x", Max: 1}},
		{OpSetTime, Args{Time: t0, WindowSeconds: 1}},
		{OpStatus, Args{FromSeq: 1}},
	} {
		if _, err := MarshalRequest(&Request{Op: c.op, Args: c.args}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%v with %+v: %v", c.op, c.args, err)
		}
	}
	if _, err := MarshalRequest(&Request{Op: Op(13)}); !errors.Is(err, ErrUnknownOp) {
		t.Errorf("undefined op: %v", err)
	}
	if _, err := MarshalRequest(&Request{Op: OpAddUser, Args: sampleArgs(OpAddUser), Signed: []byte{0x84}}); !errors.Is(err, ErrMalformed) {
		t.Errorf("args and signed: %v", err)
	}
}

// TestBondWindowDefault: absent window means 30 s; an explicit 30 is a
// different, also accepted, encoding.
func TestBondWindowDefault(t *testing.T) {
	var a Args
	if a.BondWindow() != 30*time.Second {
		t.Fatal(a.BondWindow())
	}
	r, err := ParseRequest(unhex(t, "a3 01 07 02 00 03 a1 01 18 1e"))
	if err != nil || r.Args.WindowSeconds != 30 {
		t.Fatalf("explicit 30: %+v %v", r, err)
	}
}
