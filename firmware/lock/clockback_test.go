package lock

import (
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// runSigned signs b for p with not_after na and runs it, wanting ok.
func (e *env) runSigned(t *testing.T, c *lockclient.Client, p channeltest.Party, op command.Op, args command.Args, na time.Time) []byte {
	t.Helper()
	b := e.body(op, args)
	b.NotAfter = na
	signed := e.sign(p, b)
	wantStatus(t, do(t, c, command.Request{Op: op, Signed: signed}), command.StatusOK)
	return signed
}

// TestAttackReplayAfterClockMovedBack: the lock forgets a signer's counter
// once every command it saw from that signer has expired (§13.4). If
// set-time then moves the clock back, such a command is valid again by the
// clock, and its counter is gone. The forget horizon refuses it.
//
// The signer table forgets an arbitrary expired signer when it needs room,
// so the set-up is repeated until the victim was forgotten while another
// expired signer stayed (the room the replay needs after the clock moved
// back); each attempt succeeds with probability about 30/31.
func TestAttackReplayAfterClockMovedBack(t *testing.T) {
	for attempt := 1; ; attempt++ {
		if attempt > 10 {
			t.Fatal("could not set up the scenario in 10 attempts")
		}
		if replayAfterClockBack(t) {
			return
		}
	}
}

// replayAfterClockBack runs one attempt; false: set-up not reached, retry.
func replayAfterClockBack(t *testing.T) bool {
	e := newEnv(t, func(o *Options) { o.Lockout.Free = 1000 })
	t0 := e.fleet.Now
	victim := e.fleet.Operator(t, "victim", cred.RoleOperator)
	c := e.mustConnect(e.gateway, gwAddr)

	// At t0: the victim's unlock (valid for an hour) runs, the admin
	// relocks; 30 other signers send short-lived commands. 32 signers.
	e.runSigned(t, c, e.admin, command.OpLock, command.Args{}, t0.Add(10*time.Hour))
	unlock := e.runSigned(t, c, victim, command.OpUnlock, command.Args{}, t0.Add(time.Hour))
	e.runSigned(t, c, e.admin, command.OpLock, command.Args{}, t0.Add(10*time.Hour))
	for i := range 30 {
		p := e.fleet.Operator(t, fmt.Sprintf("filler-%d", i), cred.RoleOperator)
		e.runSigned(t, c, p, command.OpStatus, command.Args{}, t0.Add(time.Second))
	}
	if len(e.lock.st.Counters) != maxSigners {
		t.Fatalf("%d signers, want a full table of %d", len(e.lock.st.Counters), maxSigners)
	}

	// Two hours later every command but the admin's has expired. New
	// signers make the lock forget expired ones until the victim is gone.
	e.fleet.Now = t0.Add(2 * time.Hour)
	c = e.mustConnect(e.gateway, gwAddr) // the client's session idles out on the fleet's clock
	victimKey := hex.EncodeToString(victim.Cert.KID)
	for i := 0; ; i++ {
		if _, ok := e.lock.st.Counters[victimKey]; !ok {
			break
		}
		p := e.fleet.Operator(t, fmt.Sprintf("late-%d", i), cred.RoleOperator)
		e.runSigned(t, c, p, command.OpStatus, command.Args{}, e.fleet.Now.Add(time.Hour))
	}
	room := false
	for _, s := range e.lock.st.Counters {
		room = room || s.NotAfter <= t0.Add(10*time.Minute).Unix()
	}
	if !room {
		return false // every short-lived signer went first: no room later
	}
	if _, ok := e.lock.st.recent(commandIDOf(t, e, unlock, t0)); ok {
		t.Fatal("the victim's unlock is still in the recent list")
	}

	// An admin moves the clock back (it was ahead, or the admin is
	// fooled): the victim's unlock reads as unexpired again.
	e.runSigned(t, c, e.admin, command.OpSetTime, command.Args{Time: t0.Add(10 * time.Minute)}, e.fleet.Now.Add(time.Hour))
	if got := e.lock.Now(); !got.Equal(t0.Add(10 * time.Minute)) {
		t.Fatalf("clock %v after set-time", got)
	}
	moves := e.act.Moves()
	r := do(t, c, command.Request{Op: command.OpUnlock, Signed: unlock})
	wantStatus(t, r, command.StatusReplay)
	if e.act.Moves() != moves || e.act.State() != command.StateLocked {
		t.Fatal("the replayed unlock moved the bolt")
	}

	// The rule survives a reboot, and a new signer whose command reaches
	// beyond the horizon is still served.
	e.store = e.store.Reboot()
	e.boot()
	c = e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: unlock}), command.StatusReplay)
	late := e.fleet.Operator(t, "new-after-horizon", cred.RoleOperator)
	e.runSigned(t, c, late, command.OpStatus, command.Args{}, t0.Add(2*time.Hour))
	return true
}

func commandIDOf(t *testing.T, e *env, signed []byte, at time.Time) []byte {
	t.Helper()
	v := command.Verifier{Roots: e.fleet.Roots, LockID: e.lock.ID(), Now: func() time.Time { return at }}
	ver, err := v.Verify(signed, command.OpUnlock)
	if err != nil {
		t.Fatal(err)
	}
	return ver.CommandID[:]
}

func TestForgetHorizonOnlyGrows(t *testing.T) {
	now := time.Unix(10_000, 0)
	full := func(na int64) map[string]signerState {
		m := map[string]signerState{}
		for i := range maxSigners {
			m[fmt.Sprint(i)] = signerState{Counter: 1, NotAfter: na}
		}
		return m
	}
	st := state{Counters: full(9_000)}
	if !st.makeRoom(now) || len(st.Counters) != maxSigners-1 || st.ForgetHorizon != 9_000 {
		t.Fatalf("after forgetting a signer: %d signers, horizon %d", len(st.Counters), st.ForgetHorizon)
	}
	// Forgetting a signer with an older not_after leaves it.
	st.Counters = full(100)
	if !st.makeRoom(now) || st.ForgetHorizon != 9_000 {
		t.Fatalf("horizon %d, want 9000", st.ForgetHorizon)
	}
	// Nothing expired: no room, no change.
	st.Counters = full(now.Unix() + 1)
	if st.makeRoom(now) || st.ForgetHorizon != 9_000 {
		t.Fatal("a signer was forgotten before its commands expired")
	}
	if !st.forgotten(time.Unix(9_000, 0)) || st.forgotten(time.Unix(9_001, 0)) {
		t.Fatal("forgotten() does not compare with the horizon")
	}
}
