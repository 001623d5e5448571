package bluelink

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/fleet"
)

// impostorAddr sorts before the rig's locks (C0:…), so the adapter lists
// it first: without a preference, Dial picks it.
const impostorAddr = "A0:00:00:00:00:01"

// addImpostor hosts, at addr, a reference lock holding a genuine
// credential and key of lock credOf (as if read out of that lock's flash)
// that advertises lock ID as. It returns its actuator.
func (r *rig) addImpostor(t *testing.T, as bonds.LockID, credOf bonds.LockID, addr string) *locktest.Actuator {
	t.Helper()
	lp := r.fleet.Lock(t, binary.BigEndian.Uint64(credOf[:]))
	act := &locktest.Actuator{}
	l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: r.fleet.Roots, Store: locktest.NewStore(),
		Actuator: act, RTC: func() time.Time { return r.fleet.Now }})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.emu.AddLock(l, addr, emulator.LockOptions{AdvertisedID: as}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, li := range r.ad.Locks() {
			if li.Address == addr && li.LockID == as {
				return act
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("impostor %s not heard", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// verifiedRecorder records OnVerified calls.
type verifiedRecorder struct {
	mu    sync.Mutex
	calls []string
}

func (v *verifiedRecorder) onVerified(id bonds.LockID, addr string, c []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls = append(v.calls, id.String()+" "+addr)
}

func (v *verifiedRecorder) get() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.calls...)
}

// TestAttackImpostorRefused: a device advertising lock A's ID that proves
// lock B's genuine credential (its key extracted from B) is refused in the
// handshake, before any command or bonding: not verified, not bonded,
// counted as an impostor, logged with its address and both IDs, and not
// retryable when no other device advertises A. The next Dial does not
// connect it again until RefuseFor has passed.
func TestAttackImpostorRefused(t *testing.T) {
	r := newRig(t, 1) // lock B only; lock A is not in range
	lockA := bonds.LockID{0x4c, 0x4b, 0, 0, 0, 0, 0, 0x0a}
	lockB := r.ids[0]
	act := r.addImpostor(t, lockA, lockB, impostorAddr)

	var (
		logs syncBuffer
		ver  verifiedRecorder
		bond = &bondRecorder{should: true}
		now  = time.Now()
		mu   sync.Mutex
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := r.bondingLink(t, bond, slog.New(slog.NewTextHandler(&logs, nil)))
	var refusedCalls []string
	l.opts.OnVerified, l.opts.Now = ver.onVerified, clock
	l.opts.OnRefused = func(id bonds.LockID, addr, presented string) {
		refusedCalls = append(refusedCalls, id.String()+" "+addr+" "+presented)
	}
	l.refused.now = clock

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := l.Dial(ctx, lockA)
	if err != nil {
		t.Fatal(err)
	}
	err = s.(fleet.Handshaker).Handshake(ctx)
	_ = s.Close()
	re, ok := errors.AsType[*RefusedError](err)
	if !ok || !errors.Is(err, ErrImpostor) || !errors.Is(err, ErrRefused) || !errors.Is(err, cred.ErrWrongSubject) {
		t.Fatalf("handshake with the impostor: %v", err)
	}
	if re.Lock != lockA || re.Address != impostorAddr || re.Presented != lockB.String() || re.Others || Retryable(err) {
		t.Errorf("refusal %+v (retryable %v)", re, Retryable(err))
	}
	if got := ver.get(); len(got) != 0 {
		t.Errorf("impostor verified: %v", got)
	}
	if want := lockA.String() + " " + impostorAddr + " " + lockB.String(); len(refusedCalls) != 1 || refusedCalls[0] != want {
		t.Errorf("OnRefused calls %q, want %q", refusedCalls, want)
	}
	if ev := bond.take(); len(ev) != 0 || len(bond.asked) != 0 {
		t.Errorf("bonding with the impostor: asked %v, events %v", bond.asked, ev)
	}
	if n := testutil.ToFloat64(l.met.impostors); n != 1 {
		t.Errorf("gatewayd_link_impostors_total = %v", n)
	}
	line := ""
	for _, ln := range strings.Split(logs.String(), "\n") {
		if strings.Contains(ln, "impostor refused") {
			line = ln
		}
	}
	for _, want := range []string{"addr=" + impostorAddr, "lock=" + lockA.String(), "presented_lock=" + lockB.String()} {
		if !strings.Contains(line, want) {
			t.Errorf("impostor log line %q lacks %q", line, want)
		}
	}
	if act.Moves() != 0 {
		t.Errorf("impostor's bolt moved")
	}

	// Remembered: the next Dial refuses at once, naming the device, and
	// is not retryable; after RefuseFor, the device is tried again.
	_, err = l.Dial(ctx, lockA)
	if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrImpostor) || Retryable(err) || !strings.Contains(err.Error(), impostorAddr) {
		t.Errorf("second dial: %v (retryable %v)", err, Retryable(err))
	}
	if n := testutil.ToFloat64(l.met.impostors); n != 1 {
		t.Errorf("second dial connected the impostor again: impostors %v", n)
	}
	mu.Lock()
	now = now.Add(DefaultRefuseFor)
	mu.Unlock()
	s, err = l.Dial(ctx, lockA)
	if err != nil {
		t.Fatalf("dial after RefuseFor: %v", err)
	}
	_ = s.Close()
}

// TestAttackImpostorBesideRealLock: an impostor and the real lock A both
// advertise A, the impostor first. The impostor is refused with a
// retryable error (another device advertises A), and the next Dial
// reaches the real lock, which unlocks. A link that knows A's bonded
// address dials the real lock first and never touches the impostor.
func TestAttackImpostorBesideRealLock(t *testing.T) {
	r := newRig(t, 2)
	lockA, lockB := r.ids[0], r.ids[1]
	impAct := r.addImpostor(t, lockA, lockB, impostorAddr)
	var ver verifiedRecorder
	l, err := New(Options{Adapter: r.ad, Channel: r.fleet.GatewayConfig(r.gw), OnVerified: ver.onVerified})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	s, err := l.Dial(ctx, lockA)
	if err != nil {
		t.Fatal(err)
	}
	err = s.(fleet.Handshaker).Handshake(ctx)
	_ = s.Close()
	if !errors.Is(err, ErrImpostor) || !Retryable(err) {
		t.Fatalf("first handshake (the impostor): %v (retryable %v)", err, Retryable(err))
	}
	s, err = l.Dial(ctx, lockA)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.(fleet.Handshaker).Handshake(ctx); err != nil {
		t.Fatalf("second handshake (the real lock): %v", err)
	}
	res, err := s.Do(ctx, command.OpUnlock, r.signed(t, 0, command.OpUnlock, 1))
	_ = s.Close()
	if err != nil || res.Status != command.StatusOK {
		t.Fatalf("unlock: %v %v", res, err)
	}
	if r.acts[0].Moves() != 1 || impAct.Moves() != 0 || r.acts[1].Moves() != 0 {
		t.Errorf("moves: real A %d, impostor %d, B %d", r.acts[0].Moves(), impAct.Moves(), r.acts[1].Moves())
	}
	if got := ver.get(); len(got) != 1 || got[0] != lockA.String()+" "+r.addrs[0] {
		t.Errorf("verified %v, want the real lock's address %s", got, r.addrs[0])
	}

	// The bonded address first: the impostor is not dialled at all.
	l2, err := New(Options{Adapter: r.ad, Channel: r.fleet.GatewayConfig(r.gw),
		Address: func(id bonds.LockID) string {
			if id == lockA {
				return strings.ToLower(r.addrs[0])
			}
			return ""
		}})
	if err != nil {
		t.Fatal(err)
	}
	s, err = l2.Dial(ctx, lockA)
	if err != nil {
		t.Fatal(err)
	}
	err = s.(fleet.Handshaker).Handshake(ctx)
	_ = s.Close()
	if err != nil || testutil.ToFloat64(l2.met.impostors) != 0 {
		t.Errorf("dial of the bonded address: %v, impostors %v", err, testutil.ToFloat64(l2.met.impostors))
	}
}

// TestRefusalsBounded: the refused addresses are forgotten after their
// time, and at most MaxRefused are kept (the one expiring first goes).
func TestRefusalsBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	rf := &refusals{ttl: time.Minute, max: 3, now: func() time.Time { return now }, m: map[refusalKey]refusal{}}
	id := bonds.LockID{1}
	for i, a := range []string{"A0:00:00:00:00:01", "A0:00:00:00:00:02", "A0:00:00:00:00:03", "A0:00:00:00:00:04"} {
		rf.add(id, a, "")
		now = now.Add(time.Second * time.Duration(i+1))
	}
	if n := rf.len(); n != 3 {
		t.Errorf("%d refusals kept, max 3", n)
	}
	if _, ok := rf.get(id, "a0:00:00:00:00:01"); ok {
		t.Error("the oldest refusal was kept past the bound")
	}
	if _, ok := rf.get(id, "a0:00:00:00:00:04"); !ok {
		t.Error("the newest refusal was not kept")
	}
	if _, ok := rf.get(bonds.LockID{2}, "A0:00:00:00:00:04"); ok {
		t.Error("a refusal for one lock ID applies to another")
	}
	now = now.Add(time.Minute)
	if n := rf.len(); n != 0 {
		t.Errorf("%d refusals kept past their time", n)
	}
}
