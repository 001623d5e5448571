package bluelink

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/fleet"
)

type rig struct {
	emu   *emulator.Emulator
	ad    *bluez.Adapter
	fleet *channeltest.Fleet
	link  *Link
	ids   []bonds.LockID
	addrs []string
	acts  []*locktest.Actuator
	locks []*lock.Lock
	op    channeltest.Party
	conn  *dbus.Conn
	gw    channeltest.Party
	bus   string // the bus address
}

// newRig: a real dbus-daemon, the emulator with n reference locks, our
// adapter, and a Link with the gateway's fleet credential.
func newRig(t *testing.T, n int) *rig {
	t.Helper()
	ctx := t.Context()
	bus, err := emulator.StartBus(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("%v (the BlueZ emulator needs dbus-daemon: run scripts/deps.sh)", err)
	}
	t.Cleanup(func() { bus.Close() })
	emu, err := emulator.Start(ctx, emulator.Options{Addr: bus.Addr, Seed: 1, RadioInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	r := &rig{emu: emu, fleet: channeltest.NewFleet(t, "acme"), bus: bus.Addr}
	r.op = r.fleet.Operator(t, "otto", cred.RoleOperator)
	for i := range n {
		lp := r.fleet.Lock(t, uint64(0x4c4b000000000001+i))
		act := &locktest.Actuator{}
		l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: r.fleet.Roots, Store: locktest.NewStore(),
			Actuator: act, RTC: func() time.Time { return r.fleet.Now }})
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("C0:00:00:00:00:%02X", i+1)
		if err := emu.AddLock(l, addr, emulator.LockOptions{}); err != nil {
			t.Fatal(err)
		}
		r.ids = append(r.ids, bonds.LockID(l.ID()))
		r.addrs = append(r.addrs, addr)
		r.acts = append(r.acts, act)
		r.locks = append(r.locks, l)
	}
	conn, err := dbus.Connect(bus.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r.conn = conn
	r.ad, err = bluez.Open(ctx, conn, bluez.Options{SweepEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.ad.Close() })
	r.gw = r.fleet.Gateway(t, "gw-1")
	r.link, err = New(Options{Adapter: r.ad, Channel: r.fleet.GatewayConfig(r.gw)})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(r.ad.Locks()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("discovered %d of %d locks", len(r.ad.Locks()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

func (r *rig) signed(t *testing.T, i int, op command.Op, ctr uint64) []byte {
	t.Helper()
	b := command.Body{LockID: r.ids[i], Op: op, CommandID: [16]byte{byte(ctr), 0xb1}, NotAfter: r.fleet.Now.Add(time.Hour), Counter: ctr}
	s, err := command.Sign(r.op.Key, r.op.Cert.Raw, b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDialHandshakeDo: a lock heard on the radio is dialled by its ID,
// the EDHOC handshake runs, a gateway status and an operator-signed
// unlock go through, and the bolt moves once.
func TestDialHandshakeDo(t *testing.T) {
	r := newRig(t, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := r.link.Dial(ctx, r.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := s.(fleet.Handshaker).Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := s.Do(ctx, command.OpStatus, nil)
	if err != nil || res.Status != command.StatusOK {
		t.Fatalf("status: %v %v", res, err)
	}
	res, err = s.Do(ctx, command.OpUnlock, r.signed(t, 1, command.OpUnlock, 1))
	if err != nil || res.Status != command.StatusOK {
		t.Fatalf("unlock: %v %v", res, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if r.acts[1].Moves() != 1 || r.acts[0].Moves() != 0 {
		t.Errorf("moves: %d %d", r.acts[0].Moves(), r.acts[1].Moves())
	}
}

// TestAwayAndFaults: a lock not heard is ErrLockAway (retryable); an
// aborted LE connection is retryable; a lock of another fleet fails the
// handshake, which is not.
func TestAwayAndFaults(t *testing.T) {
	r := newRig(t, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err := r.link.Dial(ctx, bonds.LockID{9, 9})
	if !errors.Is(err, fleet.ErrLockAway) || !Retryable(err) {
		t.Errorf("unknown lock: %v", err)
	}
	if err := r.emu.InjectFaults(r.addrs[0], emulator.Faults{ConnectAbort: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = r.link.Dial(ctx, r.ids[0])
	if err == nil || !Retryable(err) {
		t.Errorf("aborted connect: %v (retryable %v)", err, Retryable(err))
	}

	// A gateway credential of another fleet: the lock refuses it.
	other := channeltest.NewFleet(t, "evil")
	bad, err := New(Options{Adapter: r.ad, Channel: other.GatewayConfig(other.Gateway(t, "gw-x"))})
	if err != nil {
		t.Fatal(err)
	}
	s, err := bad.Dial(ctx, r.ids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.(fleet.Handshaker).Handshake(ctx)
	if err == nil || Retryable(err) {
		t.Errorf("foreign gateway handshake: %v (retryable %v)", err, Retryable(err))
	}
}
