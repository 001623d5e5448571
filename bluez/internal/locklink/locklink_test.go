package locklink_test

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/internal/locklink"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

func newLink(t *testing.T, mtu, queue int, notify func(context.Context, []byte) error) *locklink.Link {
	t.Helper()
	if notify == nil {
		notify = func(context.Context, []byte) error { return nil }
	}
	l, err := locklink.New(locklink.Options{MTU: mtu, Queue: queue, Notify: notify})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestDeliverReadInOrderAndCopied(t *testing.T) {
	l := newLink(t, 23, 4, nil)
	ctx := context.Background()
	buf := []byte{1, 2, 3}
	if err := l.Deliver(ctx, buf); err != nil {
		t.Fatal(err)
	}
	buf[0] = 9 // the caller reuses its buffer
	if err := l.Deliver(ctx, []byte{4}); err != nil {
		t.Fatal(err)
	}
	for _, want := range [][]byte{{1, 2, 3}, {4}} {
		p, err := l.ReadPacket(ctx)
		if err != nil || !bytes.Equal(p, want) {
			t.Fatalf("ReadPacket = %x, %v; want %x", p, err, want)
		}
	}
}

func TestMTULimits(t *testing.T) {
	for _, mtu := range []int{0, 22, 518} {
		if _, err := locklink.New(locklink.Options{MTU: mtu, Notify: func(context.Context, []byte) error { return nil }}); !errors.Is(err, locklink.ErrBadMTU) {
			t.Fatalf("MTU %d: %v", mtu, err)
		}
	}
	if _, err := locklink.New(locklink.Options{MTU: 23}); err == nil {
		t.Fatal("nil Notify accepted")
	}
	var sent [][]byte
	l := newLink(t, 23, 0, func(_ context.Context, p []byte) error { sent = append(sent, p); return nil })
	ctx := context.Background()
	if err := l.Deliver(ctx, make([]byte, 21)); !errors.Is(err, locklink.ErrTooLong) {
		t.Fatalf("Deliver of MTU-2 bytes: %v", err)
	}
	if err := l.WritePacket(ctx, make([]byte, 21)); !errors.Is(err, locklink.ErrTooLong) {
		t.Fatalf("WritePacket of MTU-2 bytes: %v", err)
	}
	if err := l.WritePacket(ctx, make([]byte, 20)); err != nil || len(sent) != 1 {
		t.Fatalf("WritePacket of MTU-3 bytes: %v, %d sent", err, len(sent))
	}
	if err := l.SetMTU(185); err != nil || l.MTU() != 185 {
		t.Fatalf("SetMTU: %v, MTU %d", err, l.MTU())
	}
	if err := l.WritePacket(ctx, make([]byte, 182)); err != nil {
		t.Fatalf("WritePacket at the new MTU: %v", err)
	}
	if err := l.SetMTU(600); !errors.Is(err, locklink.ErrBadMTU) || l.MTU() != 185 {
		t.Fatalf("SetMTU(600): %v, MTU %d", err, l.MTU())
	}
}

func TestCloseEndsEverything(t *testing.T) {
	l := newLink(t, 23, 4, nil)
	ctx := context.Background()
	if err := l.Deliver(ctx, []byte{1}); err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	l2 := newLink(t, 23, 4, nil)
	go func() { _, err := l2.ReadPacket(ctx); read <- err }()
	l.Close()
	l.Close()
	l2.Close()
	if err := <-read; !errors.Is(err, locklink.ErrLinkDown) {
		t.Fatalf("blocked ReadPacket after Close: %v", err)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed")
	}
	if _, err := l.ReadPacket(ctx); !errors.Is(err, locklink.ErrLinkDown) {
		t.Fatalf("ReadPacket after Close: %v", err)
	}
	if err := l.Deliver(ctx, []byte{1}); !errors.Is(err, locklink.ErrLinkDown) {
		t.Fatalf("Deliver after Close: %v", err)
	}
	if err := l.WritePacket(ctx, []byte{1}); !errors.Is(err, locklink.ErrLinkDown) {
		t.Fatalf("WritePacket after Close: %v", err)
	}
}

func TestDeliverBlocksWhenFull(t *testing.T) {
	l := newLink(t, 23, 1, nil)
	if err := l.Deliver(context.Background(), []byte{1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Deliver(ctx, []byte{2}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Deliver to a full queue: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Deliver(context.Background(), []byte{3}) }()
	l.Close()
	if err := <-done; !errors.Is(err, locklink.ErrLinkDown) {
		t.Fatalf("blocked Deliver after Close: %v", err)
	}
}

func TestNotifyError(t *testing.T) {
	boom := errors.New("boom")
	l := newLink(t, 23, 0, func(context.Context, []byte) error { return boom })
	if err := l.WritePacket(context.Background(), []byte{1}); !errors.Is(err, boom) {
		t.Fatalf("WritePacket: %v", err)
	}
}

// gatewayEnd is the gateway's side of the link in the test: its writes
// are Deliver calls, its reads the notifications.
type gatewayEnd struct {
	l     *locklink.Link
	notes chan []byte
}

func (g gatewayEnd) MTU() int { return g.l.MTU() }
func (g gatewayEnd) WritePacket(ctx context.Context, p []byte) error {
	return g.l.Deliver(ctx, p)
}
func (g gatewayEnd) ReadPacket(ctx context.Context) ([]byte, error) {
	select {
	case p := <-g.notes:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestServeRunsTheLock: a handshake and a signed unlock through Serve, at
// the smallest MTU (every message fragmented), then Close ends Serve.
func TestServeRunsTheLock(t *testing.T) {
	fleet := channeltest.NewFleet(t, "acme")
	gw, op := fleet.Gateway(t, "gw"), fleet.Operator(t, "otto", cred.RoleOperator)
	lp := fleet.Lock(t, 0x4c4b000000000001)
	act := &locktest.Actuator{}
	lk, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
		Actuator: act, RTC: func() time.Time { return fleet.Now }})
	if err != nil {
		t.Fatal(err)
	}
	notes := make(chan []byte, 1024)
	var packets atomic.Int32
	l := newLink(t, 23, 0, func(_ context.Context, p []byte) error {
		packets.Add(1)
		notes <- append([]byte(nil), p...)
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- locklink.Serve(ctx, lk, l, lock.Peer{Address: "00:AA:01:00:00:00"}) }()
	ch, err := channel.Dial(ctx, channel.NewFragmentTransport(gatewayEnd{l, notes}, fragment.Options{}), fleet.GatewayConfig(gw))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	signed, err := command.Sign(op.Key, op.Cert.Raw, command.Body{LockID: lk.ID(), Op: command.OpUnlock,
		CommandID: [16]byte{1}, NotAfter: fleet.Now.Add(time.Hour), Counter: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, err := lockclient.New(ch).Signed(ctx, command.OpUnlock, signed)
	if err != nil || r.Status != command.StatusOK || act.Moves() != 1 {
		t.Fatalf("unlock: %v %v, %d moves", r, err, act.Moves())
	}
	if packets.Load() < 3 {
		t.Fatalf("%d notifications at MTU 23: messages were not fragmented", packets.Load())
	}
	l.Close()
	if err := <-served; !errors.Is(err, locklink.ErrLinkDown) {
		t.Fatalf("Serve after Close: %v", err)
	}
}
