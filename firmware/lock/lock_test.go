package lock

import (
	"errors"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/edhoc"
)

const gwAddr = "AA:BB:CC:00:00:01"

func TestSignedUnlockAndLockThroughGateway(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, gwAddr)
	r := do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, e.body(command.OpUnlock, command.Args{}))})
	wantStatus(t, r, command.StatusOK)
	if r.LockState != command.StateUnlocked || e.act.State() != command.StateUnlocked || len(r.CommandID) != 16 {
		t.Fatalf("result state %v, bolt %v, command id %x", r.LockState, e.act.State(), r.CommandID)
	}
	r = do(t, c, command.Request{Op: command.OpLock, Signed: e.sign(e.operator, e.body(command.OpLock, command.Args{}))})
	wantStatus(t, r, command.StatusOK)
	if e.act.Moves() != 2 || e.act.State() != command.StateLocked {
		t.Fatalf("moves %d state %v", e.act.Moves(), e.act.State())
	}
	if r.Firmware != "1.0.0" || r.Battery != 100 || !r.Clock.Equal(e.fleet.Now) {
		t.Fatalf("result fields: %+v", r)
	}
}

func TestGatewayOwnAuthority(t *testing.T) {
	// Each refusal below counts toward the lockout; allow them all.
	e := newEnv(t, func(o *Options) { o.Lockout.Free = 100 })
	c := e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, c, command.Request{Op: command.OpStatus}), command.StatusOK)
	// A gateway can never lock, unlock or manage users on its own.
	u := userParty(e, "rider-1")
	for _, req := range []command.Request{
		{Op: command.OpUnlock}, {Op: command.OpLock},
		{Op: command.OpAddUser, Args: addUserArgs(u, e.fleet.Now, e.fleet.Now.Add(time.Hour))},
		{Op: command.OpRemoveUser, Args: command.Args{UserID: "rider-1"}},
		{Op: command.OpClearBonds}, {Op: command.OpSetTime, Args: command.Args{Time: e.fleet.Now.Add(time.Hour)}},
		{Op: command.OpListUsers},
	} {
		wantStatus(t, do(t, c, req), command.StatusForbidden)
	}
	if e.act.Moves() != 0 {
		t.Fatal("the bolt moved")
	}
}

func refusedUnlock(t *testing.T, e *env, signed []byte, want command.Status) {
	t.Helper()
	c := e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: signed}), want)
	if e.act.Moves() != 0 {
		t.Fatal("the bolt moved")
	}
}

func TestAttackUnlockByOperatorWhoseRoleLacksIt(t *testing.T) {
	e := newEnv(t)
	restricted := e.fleet.Issue(t, cred.Claims{Subject: "viewer", Kind: cred.KindOperator, Role: cred.RoleOperator, Perms: cred.PermStatus})
	refusedUnlock(t, e, e.sign(restricted, e.body(command.OpUnlock, command.Args{})), command.StatusForbidden)
	// An operator-role credential cannot sign an admin operation either.
	c := e.mustConnect(e.gateway, gwAddr)
	u := userParty(e, "rider-1")
	r := do(t, c, command.Request{Op: command.OpAddUser, Signed: e.sign(e.operator, e.body(command.OpAddUser, addUserArgs(u, e.fleet.Now, e.fleet.Now.Add(time.Hour))))})
	wantStatus(t, r, command.StatusForbidden)
}

func TestAttackSignatureByUncertifiedKey(t *testing.T) {
	e := newEnv(t)
	rogue := channeltest.NewFleet(t, "rogue")
	mallory := rogue.Operator(t, "mallory", cred.RoleAdmin)
	refusedUnlock(t, e, e.sign(mallory, e.body(command.OpUnlock, command.Args{})), command.StatusSignerRejected)
}

func TestAttackCommandForAnotherLock(t *testing.T) {
	e := newEnv(t)
	b := e.body(command.OpUnlock, command.Args{})
	b.LockID[7] ^= 1
	refusedUnlock(t, e, e.sign(e.operator, b), command.StatusWrongLock)
}

func TestAttackExpiredCommand(t *testing.T) {
	e := newEnv(t)
	b := e.body(command.OpUnlock, command.Args{})
	b.NotAfter = e.fleet.Now.Add(-time.Second)
	refusedUnlock(t, e, e.sign(e.operator, b), command.StatusExpired)
}

func TestAttackReplayedCommand(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, gwAddr)
	signed := e.sign(e.operator, e.body(command.OpUnlock, command.Args{}))
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: signed}), command.StatusOK)
	// The same bytes again: the command ID was executed; the lock reports
	// the original outcome and does not move.
	r := do(t, c, command.Request{Op: command.OpUnlock, Signed: signed})
	wantStatus(t, r, command.StatusDuplicateCommand)
	if orig, err := r.Duplicate(); err != nil || orig != command.StatusOK {
		t.Fatalf("original status %v, %v", orig, err)
	}
	// A new command ID under the same counter: a replay.
	b := e.body(command.OpUnlock, command.Args{})
	b.Counter = e.counter - 1
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, b)}), command.StatusReplay)
	if e.act.Moves() != 1 {
		t.Fatalf("moves %d, want 1", e.act.Moves())
	}
}

func TestAttackLowerCounter(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, gwAddr)
	e.counter = 10
	wantStatus(t, do(t, c, command.Request{Op: command.OpLock, Signed: e.sign(e.operator, e.body(command.OpLock, command.Args{}))}), command.StatusOK)
	b := e.body(command.OpUnlock, command.Args{})
	b.Counter = 5
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, b)}), command.StatusReplay)
	if e.act.State() != command.StateLocked {
		t.Fatal("a lower counter unlocked the bike")
	}
}

func TestAttackReusedCommandID(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, gwAddr)
	first := e.body(command.OpLock, command.Args{})
	wantStatus(t, do(t, c, command.Request{Op: command.OpLock, Signed: e.sign(e.operator, first)}), command.StatusOK)
	again := e.body(command.OpUnlock, command.Args{})
	again.CommandID = first.CommandID // higher counter, same ID
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, again)}), command.StatusDuplicateCommand)
	if e.act.State() != command.StateLocked || e.act.Moves() != 1 {
		t.Fatal("a reused command ID ran")
	}
}

func TestAttackArgumentsChangedAfterSigning(t *testing.T) {
	e := newEnv(t)
	u := userParty(e, "rider-1")
	signed := e.sign(e.admin, e.body(command.OpAddUser, addUserArgs(u, e.fleet.Now, e.fleet.Now.Add(time.Hour))))
	// Change the last byte of the user's public key inside the payload.
	i := lastIndex(signed, u.Cert.PublicKey)
	if i < 0 {
		t.Fatal("public key not found in the signed command")
	}
	tampered := append([]byte(nil), signed...)
	tampered[i+31] ^= 0x01
	c := e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, c, command.Request{Op: command.OpAddUser, Signed: tampered}), command.StatusBadSignature)
	wantStatus(t, do(t, c, command.Request{Op: command.OpAddUser, Signed: signed}), command.StatusOK)
}

func lastIndex(b, sub []byte) int {
	for i := len(b) - len(sub); i >= 0; i-- {
		if string(b[i:i+len(sub)]) == string(sub) {
			return i
		}
	}
	return -1
}

func TestAttackSetTimeFromGateway(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, gwAddr)
	later := e.fleet.Now.Add(48 * time.Hour)
	wantStatus(t, do(t, c, command.Request{Op: command.OpSetTime, Args: command.Args{Time: later}}), command.StatusForbidden)
	// Signed by the gateway's own key: a gateway is no signer.
	r := do(t, c, command.Request{Op: command.OpSetTime, Signed: e.sign(e.gateway, e.body(command.OpSetTime, command.Args{Time: later}))})
	if r.Status != command.StatusSignerRejected && r.Status != command.StatusForbidden {
		t.Fatalf("gateway-signed set-time: %v", r.Status)
	}
	if !e.lock.Now().Equal(e.fleet.Now) {
		t.Fatal("the clock moved")
	}
	// An admin may.
	wantStatus(t, do(t, c, command.Request{Op: command.OpSetTime, Signed: e.sign(e.admin, e.body(command.OpSetTime, command.Args{Time: later}))}), command.StatusOK)
	if !e.lock.Now().Equal(later) {
		t.Fatalf("clock %v, want %v", e.lock.Now(), later)
	}
}

func TestSetTimeByFleetRootAndMonotonicClock(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, gwAddr)
	later := e.fleet.Now.Add(time.Hour)
	b := e.body(command.OpSetTime, command.Args{Time: later})
	signed, err := command.SignAsRoot(e.fleet.Root, e.fleet.RootKID, b)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, do(t, c, command.Request{Op: command.OpSetTime, Signed: signed}), command.StatusOK)
	// The RTC restarts at the epoch on reboot; the clock does not go back.
	e.opts.RTC = func() time.Time { return time.Unix(0, 0) }
	e.boot()
	if got := e.lock.Now(); got.Before(later) {
		t.Fatalf("after reboot the clock is %v, before %v", got, later)
	}
}

func TestAttackAllowBondByOperatorRoleOverUserSession(t *testing.T) {
	e := newEnv(t)
	u := userParty(e, "rider-1")
	admin := e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, admin, command.Request{Op: command.OpAddUser,
		Signed: e.sign(e.admin, e.body(command.OpAddUser, addUserArgs(u, e.fleet.Now.Add(-time.Hour), e.fleet.Now.Add(time.Hour))))}), command.StatusOK)
	uc := e.mustConnect(u, "11:22:33:44:55:66")
	wantStatus(t, do(t, uc, command.Request{Op: command.OpAllowBond}), command.StatusForbidden)
	wantStatus(t, do(t, uc, command.Request{Op: command.OpAllowBond,
		Signed: e.sign(e.operator, e.body(command.OpAllowBond, command.Args{}))}), command.StatusForbidden)
	// The user's own session may lock and unlock without a signature.
	wantStatus(t, do(t, uc, command.Request{Op: command.OpUnlock}), command.StatusOK)
	if e.act.State() != command.StateUnlocked {
		t.Fatal("user unlock did not move the bolt")
	}
}

func TestBondWindowOverTheChannel(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, gwAddr)
	r := do(t, c, command.Request{Op: command.OpAllowBond, Args: command.Args{WindowSeconds: 60}})
	wantStatus(t, r, command.StatusOK)
	w, err := r.BondWindow()
	if err != nil || w.Peer != gwAddr || w.WindowSeconds != 60 || w.Passkey > 999999 {
		t.Fatalf("window %+v %v", w, err)
	}
	// Pairing outside the window (another address) is refused.
	if err := e.lock.Pair("DE:AD:BE:EF:00:00", w.Passkey); !errors.Is(err, ErrPairingRefused) {
		t.Fatalf("stranger: %v", err)
	}
	if err := e.lock.Pair(gwAddr, w.Passkey); err != nil {
		t.Fatal(err)
	}
	if !e.lock.Bonded(gwAddr) {
		t.Fatal("no bond")
	}
	e.boot() // bonds persist
	if !e.lock.Bonded(gwAddr) {
		t.Fatal("bond lost at reboot")
	}
	c = e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, c, command.Request{Op: command.OpClearBonds, Signed: e.sign(e.admin, e.body(command.OpClearBonds, command.Args{}))}), command.StatusOK)
	if e.lock.Bonded(gwAddr) {
		t.Fatal("clear-bonds left the bond")
	}
}

func TestAttackPairingOutsideWindow(t *testing.T) {
	e := newEnv(t)
	if err := e.lock.Pair(gwAddr, 123456); !errors.Is(err, ErrPairingRefused) {
		t.Fatalf("no window: %v", err)
	}
	c := e.mustConnect(e.gateway, gwAddr)
	r := do(t, c, command.Request{Op: command.OpAllowBond, Args: command.Args{WindowSeconds: 5}})
	w, _ := r.BondWindow()
	now := e.fleet.Now
	e.lock.mu.Lock()
	e.lock.st.ClockOffset += 6 // the window has passed
	e.lock.mu.Unlock()
	if err := e.lock.Pair(gwAddr, w.Passkey); !errors.Is(err, ErrPairingRefused) {
		t.Fatalf("after the window: %v (opened at %v)", err, now)
	}
}

func TestAttackThreeWrongPasskeys(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, gwAddr)
	w, _ := do(t, c, command.Request{Op: command.OpAllowBond}).BondWindow()
	for range 3 {
		if err := e.lock.Pair(gwAddr, (w.Passkey+1)%1000000); !errors.Is(err, ErrPairingRefused) {
			t.Fatal(err)
		}
	}
	if err := e.lock.Pair(gwAddr, w.Passkey); !errors.Is(err, ErrPairingRefused) {
		t.Fatal("window still open after three wrong passkeys")
	}
}

func TestAttackAddUserIntoFullTable(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Slots = 2 })
	c := e.mustConnect(e.gateway, gwAddr)
	for i, name := range []string{"u1", "u2", "u3"} {
		u := userParty(e, name)
		r := do(t, c, command.Request{Op: command.OpAddUser, Signed: e.sign(e.admin, e.body(command.OpAddUser, addUserArgs(u, e.fleet.Now, e.fleet.Now.Add(time.Hour))))})
		want := command.StatusOK
		if i == 2 {
			want = command.StatusTableFull
		}
		wantStatus(t, r, want)
	}
	r := do(t, c, command.Request{Op: command.OpListUsers, Signed: e.sign(e.admin, e.body(command.OpListUsers, command.Args{}))})
	wantStatus(t, r, command.StatusOK)
	if users, err := r.Users(); err != nil || len(users) != 2 || users[0].UserID != "u1" {
		t.Fatalf("users %+v %v", users, err)
	}
}

func TestAttackRemovedUsersHandshake(t *testing.T) {
	e := newEnv(t)
	u := userParty(e, "rider-9")
	c := e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, c, command.Request{Op: command.OpAddUser, Signed: e.sign(e.admin, e.body(command.OpAddUser, addUserArgs(u, e.fleet.Now.Add(-time.Hour), e.fleet.Now.Add(time.Hour))))}), command.StatusOK)
	uc := e.mustConnect(u, "11:22:33:44:55:66")
	wantStatus(t, do(t, uc, command.Request{Op: command.OpStatus}), command.StatusOK)
	wantStatus(t, do(t, c, command.Request{Op: command.OpRemoveUser, Signed: e.sign(e.admin, e.body(command.OpRemoveUser, command.Args{UserID: u.Cert.Subject}))}), command.StatusOK)
	// The open session loses its rights at once…
	wantStatus(t, do(t, uc, command.Request{Op: command.OpUnlock}), command.StatusForbidden)
	// …and a new handshake is refused.
	if _, err := e.connect(u, "11:22:33:44:55:66"); !errors.Is(err, edhoc.ErrPeerError) {
		t.Fatalf("removed user's handshake: %v", err)
	}
	if e.act.Moves() != 0 {
		t.Fatal("the bolt moved")
	}
}

func TestAttackUserOutsideValidityWindow(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, gwAddr)
	early := userParty(e, "tomorrow")
	late := userParty(e, "yesterday")
	for _, x := range []struct {
		p        channeltest.Party
		nbf, exp time.Time
	}{{early, e.fleet.Now.Add(24 * time.Hour), e.fleet.Now.Add(48 * time.Hour)},
		{late, e.fleet.Now.Add(-48 * time.Hour), e.fleet.Now.Add(-24 * time.Hour)}} {
		wantStatus(t, do(t, c, command.Request{Op: command.OpAddUser, Signed: e.sign(e.admin, e.body(command.OpAddUser, addUserArgs(x.p, x.nbf, x.exp)))}), command.StatusOK)
		if _, err := e.connect(x.p, "11:22:33:44:55:66"); !errors.Is(err, edhoc.ErrPeerError) {
			t.Fatalf("%s: %v", x.p.Cert.Subject, err)
		}
	}
}

func TestAttackUnknownUserHandshake(t *testing.T) {
	e := newEnv(t)
	stranger := userParty(e, "stranger")
	if _, err := e.connect(stranger, "11:22:33:44:55:66"); !errors.Is(err, edhoc.ErrPeerError) {
		t.Fatalf("user without a slot: %v", err)
	}
}

func TestLockoutAfterFailedAuthorisations(t *testing.T) {
	e := newEnv(t)
	c := e.mustConnect(e.gateway, gwAddr)
	b := e.body(command.OpUnlock, command.Args{})
	b.LockID[0] ^= 1
	bad := e.sign(e.operator, b)
	var last *command.Result
	for range 2 {
		last = do(t, c, command.Request{Op: command.OpUnlock, Signed: bad})
	}
	// The lockout shows in status: two failures so far, both free.
	st, err := do(t, c, command.Request{Op: command.OpStatus}).LockStatus()
	if err != nil || st.Failures != 2 || !st.LockoutUntil.IsZero() {
		t.Fatalf("status after two failures: %+v %v", st, err)
	}
	for range 2 {
		last = do(t, c, command.Request{Op: command.OpUnlock, Signed: bad})
	}
	wantStatus(t, last, command.StatusLockedOut)
	if w, ok := last.RetryAfter(); !ok || w <= 0 {
		t.Fatalf("retry after %v %v", w, ok)
	}
	// Another peer is not locked out.
	other := e.mustConnect(e.gateway, "AA:BB:CC:00:00:02")
	r := do(t, other, command.Request{Op: command.OpStatus})
	wantStatus(t, r, command.StatusOK)
}
