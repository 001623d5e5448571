package bluelink

import (
	"context"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/fleet"
)

// TestDialAfterCrashResetsStaleConnection: a gatewayd SIGKILLed in a
// session leaves bluetoothd holding the LE connection, with the lock in
// the middle of the dead process's secure channel. The next run's first
// dial of that lock must not reuse the connection (the lock would take
// its EDHOC message_1 for a frame of the old session and the handshake
// would wait for the lock to give up on it): it disconnects the stale
// link first, and the handshake and a command go through at once.
func TestDialAfterCrashResetsStaleConnection(t *testing.T) {
	r := newRig(t, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	// The previous run: its own bus connection, adapter and link.
	conn, err := dbus.Connect(r.bus)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := bluez.Open(ctx, conn, bluez.Options{})
	if err != nil {
		t.Fatal(err)
	}
	old, err := New(Options{Adapter: ad, Channel: r.fleet.GatewayConfig(r.gw)})
	if err != nil {
		t.Fatal(err)
	}
	for len(ad.Locks()) == 0 {
		if ctx.Err() != nil {
			t.Fatal("the previous run never heard the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, err := old.Dial(ctx, r.ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := s.(fleet.Handshaker).Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	// SIGKILL: the process's bus connection goes, nothing is closed.
	conn.Close()

	// The restarted daemon (with Conn, as the daemon's), with a deadline
	// far shorter than the lock's patience with a silent session.
	link, err := New(Options{Adapter: r.ad, Channel: r.fleet.GatewayConfig(r.gw), Conn: r.conn})
	if err != nil {
		t.Fatal(err)
	}
	hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
	defer hcancel()
	s2, err := link.Dial(hctx, r.ids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.(fleet.Handshaker).Handshake(hctx); err != nil {
		t.Fatalf("first handshake after the crash: %v", err)
	}
	res, err := s2.Do(hctx, command.OpUnlock, r.signed(t, 0, command.OpUnlock, 1))
	if err != nil || res.Status != command.StatusOK {
		t.Fatalf("unlock after the crash: %v %v", res, err)
	}
}
