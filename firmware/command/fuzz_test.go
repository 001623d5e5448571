package command

import (
	"bytes"
	"testing"
)

// FuzzParseRequest: ParseRequest never panics, refuses only with
// malformed or unknown_op, and whatever it accepts is the deterministic
// encoding of what it returned (one accepted encoding per request).
func FuzzParseRequest(f *testing.F) {
	e := newEnv(f)
	for i, op := range allOps {
		r := Request{Op: op, RequestID: uint32(i * 1000), Args: sampleArgs(op)}
		b, err := MarshalRequest(&r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		r = Request{Op: op, RequestID: uint32(i), Signed: e.sign(f, e.admin, e.body(op, uint64(i+1)))}
		if b, err = MarshalRequest(&r); err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, h := range []string{"a2 01 03 02 07", "bf 01 03 02 07 ff", "a3 01 03 02 07 02 07", "a2 01 18 03 02 07", "a0", ""} {
		f.Add(unhex(f, h))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRequest(data)
		if err != nil {
			if s := StatusOf(err); s != StatusMalformed && s != StatusUnknownOp {
				t.Fatalf("status %v for %x: %v", s, data, err)
			}
			return
		}
		again, err := MarshalRequest(&r)
		if err != nil {
			t.Fatalf("accepted %x but cannot re-encode %+v: %v", data, r, err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("accepted %x, which re-encodes as %x", data, again)
		}
	})
}

// FuzzParseResult: the same for results, for every op's data rule.
func FuzzParseResult(f *testing.F) {
	for _, op := range allOps {
		r := sampleResult(f, op)
		b, err := MarshalResult(op, &r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(op))
	}
	f.Fuzz(func(t *testing.T, data []byte, op uint8) {
		r, err := ParseResult(Op(op), data)
		if err != nil {
			if s := StatusOf(err); s != StatusMalformed {
				t.Fatalf("status %v: %v", s, err)
			}
			return
		}
		again, err := MarshalResult(Op(op), r)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted %x, which re-encodes as %x (%v)", data, again, err)
		}
	})
}

// FuzzVerify: Verify never panics, refuses only with the statuses of its
// nine steps, and accepts nothing but the real signed commands of the
// seeds, byte for byte, each for its own op and with its own body: no
// mutation of a signed command is ever accepted.
func FuzzVerify(f *testing.F) {
	e := newEnv(f)
	type seed struct {
		raw  []byte
		op   Op
		body Body
	}
	var good []seed
	add := func(raw []byte, op Op, b Body, ok bool) {
		f.Add(raw, uint8(op))
		if ok {
			good = append(good, seed{raw, op, b})
		}
	}
	for i, op := range allOps {
		b := e.body(op, uint64(i+1))
		add(e.sign(f, e.admin, b), op, b, op != OpAllowBond)
		add(e.sign(f, e.operator, b), op, b, op == OpLock || op == OpUnlock || op == OpStatus)
		add(e.sign(f, e.gateway, b), op, b, false)
	}
	b := e.body(OpSetTime, 99)
	root, err := SignAsRoot(e.fleet.Root, e.fleet.RootKID, b)
	if err != nil {
		f.Fatal(err)
	}
	add(root, OpSetTime, b, true)
	for _, s := range good {
		if _, err := e.v.Verify(s.raw, s.op); err != nil {
			f.Fatalf("seed %v does not verify: %v", s.op, err)
		}
	}
	allowed := map[Status]bool{StatusMalformed: true, StatusUnknownOp: true, StatusForbidden: true,
		StatusBadSignature: true, StatusSignerRejected: true, StatusWrongLock: true, StatusExpired: true}

	f.Fuzz(func(t *testing.T, data []byte, op uint8) {
		vf, err := e.v.Verify(data, Op(op))
		if err != nil {
			if s := StatusOf(err); !allowed[s] {
				t.Fatalf("status %v: %v", s, err)
			}
			return
		}
		for _, s := range good {
			if bytes.Equal(s.raw, data) {
				if s.op != Op(op) || !vf.Body.Equal(&s.body) {
					t.Fatalf("seed of %v accepted as %v with body %+v", s.op, Op(op), vf.Body)
				}
				return
			}
		}
		t.Fatalf("accepted bytes that are no seed's signed command: %x as %v, body %+v", data, Op(op), vf.Body)
	})
}
