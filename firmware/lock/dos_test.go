package lock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/edhoc"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// connectPeer is env.connect with the whole Peer the BLE stack reports.
func (e *env) connectPeer(p channeltest.Party, peer Peer) (*lockclient.Client, error) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, b := channeltest.Pipe(185, channeltest.Faults{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = e.lock.Serve(ctx, channel.NewFragmentTransport(b, fragment.Options{}), peer)
	})
	e.t.Cleanup(func() { cancel(); a.Close(); wg.Wait() })
	conn, err := channel.Dial(ctx, channel.NewFragmentTransport(a, fragment.Options{}), e.fleet.GatewayConfig(p))
	if err != nil {
		return nil, err
	}
	return lockclient.New(conn), nil
}

// attackerHandshake runs one handshake with a credential of another fleet
// from a fresh address: the lock refuses it. It returns the refusal.
func attackerHandshake(t *testing.T, e *env, rogue channeltest.Party, i int) error {
	t.Helper()
	addr := fmt.Sprintf("66:66:66:00:%02X:%02X", i>>8&0xff, i&0xff)
	_, err := e.connect(rogue, addr)
	if !errors.Is(err, edhoc.ErrPeerError) {
		t.Fatalf("attacker handshake %d: %v, want an EDHOC error from the lock", i, err)
	}
	if !throttled(err) {
		// The lock sends its EDHOC error before it records the failure:
		// wait for the record, so the next handshake sees it.
		deadline := time.Now().Add(30 * time.Second)
		for e.lock.lo.failures(addr) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("attacker handshake %d: the lock never recorded its failure", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return err
}

func throttled(err error) bool { return strings.Contains(err.Error(), "locked out for") }

// floodGlobal makes an address-rotating attacker trip the global throttle
// with refused handshakes.
func floodGlobal(t *testing.T, e *env) channeltest.Party {
	t.Helper()
	rogue := channeltest.NewFleet(t, "rogue").Gateway(t, "gw-evil")
	for i := range 21 {
		if err := attackerHandshake(t, e, rogue, i); throttled(err) {
			t.Fatalf("handshake %d throttled before the cap", i)
		}
	}
	return rogue
}

// TestAttackGlobalLockoutDoesNotLockOutAuthenticatedPeers: an attacker who
// rotates addresses trips the global cap. Before, every peer was then
// refused for a minute, and 21 refused handshakes a minute kept every
// rider out. Now the cap only throttles new unauthenticated handshakes:
// open sessions keep working, the bonded gateway always gets in, and a
// rider gets in at the next handshake slot.
func TestAttackGlobalLockoutDoesNotLockOutAuthenticatedPeers(t *testing.T) {
	e := newEnv(t)
	rider := userParty(e, "rider-1")
	gwPeer := Peer{Address: gwAddr, Encrypted: true}

	// The dock's gateway bonds; the rider is installed and opens a session.
	c := e.mustConnect(e.gateway, gwAddr)
	r := do(t, c, command.Request{Op: command.OpAllowBond, Args: command.Args{WindowSeconds: 60}})
	wantStatus(t, r, command.StatusOK)
	w, _ := r.BondWindow()
	if err := e.lock.Pair(gwAddr, w.Passkey); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, do(t, c, command.Request{Op: command.OpAddUser, Signed: e.sign(e.admin,
		e.body(command.OpAddUser, addUserArgs(rider, e.fleet.Now.Add(-time.Hour), e.fleet.Now.Add(24*time.Hour))))}), command.StatusOK)
	riderSession := e.mustConnect(rider, "52:1D:E2:00:00:01")

	floodGlobal(t, e)

	// The rider's open session: not locked out.
	wantStatus(t, do(t, riderSession, command.Request{Op: command.OpUnlock}), command.StatusOK)
	// The bonded gateway, over its encrypted link, gets in at once, even
	// right after another handshake took the slot; an operator's command
	// runs through it.
	_ = attackerHandshake(t, e, channeltest.NewFleet(t, "rogue").Gateway(t, "gw-evil"), 100)
	g, err := e.connectPeer(e.gateway, gwPeer)
	if err != nil {
		t.Fatalf("bonded gateway during the throttle: %v", err)
	}
	wantStatus(t, do(t, g, command.Request{Op: command.OpLock, Signed: e.sign(e.operator, e.body(command.OpLock, command.Args{}))}), command.StatusOK)
	// A rider's new handshake waits at most one slot, then gets in.
	e.fleet.Now = e.fleet.Now.Add(5 * time.Second)
	rs, err := e.connect(rider, "52:1D:E2:00:00:02")
	if err != nil {
		t.Fatalf("rider after one slot: %v", err)
	}
	wantStatus(t, do(t, rs, command.Request{Op: command.OpUnlock}), command.StatusOK)
}

// TestAttackBruteForceStillLimitedDuringGlobalBackoff: while the throttle
// holds, fresh addresses get one handshake per slot; an address-rotating
// attacker is held to that rate. A bonded address without an encrypted
// link (a copied address) is throttled like anyone.
func TestAttackBruteForceStillLimitedDuringGlobalBackoff(t *testing.T) {
	e := newEnv(t)
	rogue := floodGlobal(t, e)
	tried, refused := 0, 0
	for i := range 20 {
		if throttled(attackerHandshake(t, e, rogue, 200+i)) {
			refused++
		} else {
			tried++
		}
	}
	if tried != 1 || refused != 19 {
		t.Fatalf("in one slot: %d handshakes run, %d throttled; want 1 and 19", tried, refused)
	}
	// A copied address of a bonded gateway, without the bond's encryption.
	e.lock.mu.Lock()
	e.lock.bonds[gwAddr] = true
	e.lock.mu.Unlock()
	_, err := e.connect(e.gateway, gwAddr)
	if err == nil || !throttled(err) {
		t.Fatalf("unencrypted link from a bonded address: %v, want throttled", err)
	}
	// The next slot admits one more.
	e.fleet.Now = e.fleet.Now.Add(5 * time.Second)
	if throttled(attackerHandshake(t, e, rogue, 300)) || !throttled(attackerHandshake(t, e, rogue, 301)) {
		t.Fatal("the next slot did not admit exactly one handshake")
	}
	// Status shows the throttle.
	g, err := e.connectPeer(e.gateway, Peer{Address: gwAddr, Encrypted: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := do(t, g, command.Request{Op: command.OpStatus}).LockStatus()
	if err != nil || !st.LockoutUntil.After(e.fleet.Now) {
		t.Fatalf("status during the throttle: %+v %v", st, err)
	}
}

// TestAuthenticatedFailuresDoNotTripGlobalCap: refused requests of an
// authenticated session back off its address only; they never throttle
// others' handshakes.
func TestAuthenticatedFailuresDoNotTripGlobalCap(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Lockout.Free = 100 })
	c := e.mustConnect(e.gateway, gwAddr)
	for range 30 {
		wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock}), command.StatusForbidden)
	}
	other := e.fleet.Operator(t, "olga", cred.RoleOperator)
	for i := range 3 {
		if _, err := e.connect(other, fmt.Sprintf("AA:BB:CC:00:01:%02X", i)); err != nil {
			t.Fatalf("handshake %d after 30 authenticated failures: %v", i, err)
		}
	}
}

// TestAttackClockMovedBackDoesNotStretchLockout: set-time moving the clock
// back an hour must not turn a 60 s throttle, a 5 s slot or a peer's
// backoff into an hour-long lockout.
func TestAttackClockMovedBackDoesNotStretchLockout(t *testing.T) {
	l := newLockout(LockoutPolicy{})
	now := time.Unix(100_000, 0)
	for i := range 21 {
		l.fail(fmt.Sprintf("p%d", i), now)
	}
	for range 10 {
		l.fail("a", now)
	}
	if !l.admit("fresh", false, now).IsZero() {
		t.Fatal("the first handshake of the slot was refused")
	}
	back := now.Add(-time.Hour)
	if u := l.admit("fresh-2", false, back); u.Sub(back) > 5*time.Second {
		t.Fatalf("after the clock moved back: next slot in %v", u.Sub(back))
	}
	if u := l.until("fresh-3", back); u.Sub(back) > time.Minute {
		t.Fatalf("after the clock moved back: throttle for %v", u.Sub(back))
	}
	if u := l.peerUntil("a", back); u.Sub(back) > 5*time.Minute {
		t.Fatalf("after the clock moved back: a peer's backoff of %v", u.Sub(back))
	}
}
