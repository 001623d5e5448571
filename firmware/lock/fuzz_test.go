package lock

import (
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/command"
)

// FuzzHandle: random request bytes, from an authenticated gateway session,
// must never move the actuator unless they carry a valid signed command for
// this lock. The property is checked independently of the lock's own
// logic: a move is allowed only if command.Verifier accepts the signature.
func FuzzHandle(f *testing.F) {
	seedEnv := newEnv(f)
	add := func(r command.Request) {
		b, err := command.MarshalRequest(&r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	other := seedEnv.body(command.OpUnlock, command.Args{})
	other.LockID[0] ^= 1
	expired := seedEnv.body(command.OpUnlock, command.Args{})
	expired.NotAfter = seedEnv.fleet.Now.Add(-time.Minute)
	add(command.Request{Op: command.OpUnlock})
	add(command.Request{Op: command.OpUnlock, Signed: seedEnv.sign(seedEnv.operator, other)})
	add(command.Request{Op: command.OpUnlock, Signed: seedEnv.sign(seedEnv.operator, expired)})
	add(command.Request{Op: command.OpUnlock, Signed: seedEnv.sign(seedEnv.gateway, seedEnv.body(command.OpUnlock, command.Args{}))})
	add(command.Request{Op: command.OpUnlock, Signed: seedEnv.sign(seedEnv.operator, seedEnv.body(command.OpUnlock, command.Args{}))})
	add(command.Request{Op: command.OpStatus})
	add(command.Request{Op: command.OpSetRevocations, Args: command.Args{Revocations: seedEnv.revocations(1, seedEnv.operator)}})
	f.Add([]byte{0xa2, 0x01, 0x02, 0x02, 0x00})

	f.Fuzz(func(t *testing.T, req []byte) {
		e := seedEnv.fresh(t)
		out := e.lock.Handle(e.gateway.Cert, Peer{Address: gwAddr}, req)
		if len(out) == 0 {
			t.Fatal("no result")
		}
		if e.act.Moves() == 0 {
			return
		}
		r, err := command.ParseRequest(req)
		if err != nil || r.Signed == nil {
			t.Fatalf("the bolt moved for an unsigned or malformed request %x", req)
		}
		v := command.Verifier{Roots: e.fleet.Roots, LockID: e.lock.ID(), Now: e.lock.Now}
		if _, err := v.Verify(r.Signed, r.Op); err != nil {
			t.Fatalf("the bolt moved for a command whose signature does not verify (%v): %x", err, req)
		}
	})
}
