package bluez

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/internal/fakebluez"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/fragment"
)

var _ channel.Link = (*Device)(nil)

func newGATTEnv(t *testing.T) (*env, *fakebluez.GATT, *Dispatcher) {
	t.Helper()
	e := newEnv(t)
	dev := e.fake.AddDevice("44:00:00:00:00:01", lockProps(1, 0, 50, -60))
	g, err := e.fake.AddLockGATT(dev, LockServiceUUID, InboxUUID, OutboxUUID, 185)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDispatcher(e.client, 2*time.Second)
	t.Cleanup(func() { _ = d.Close() })
	return e, g, d
}

func TestDeviceLink(t *testing.T) {
	e, g, disp := newGATTEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := disp.BluetoothdGone(ctx); err != nil { // the dispatcher's one owner watch
		t.Fatal(err)
	}
	rules0 := matchRules(t, e.bus, e.via, e.client)
	g0 := runtime.NumGoroutine()

	d, err := Connect(ctx, e.client, DeviceOptions{Path: g.Device, Dispatcher: disp})
	if err != nil {
		t.Fatal(err)
	}
	if d.MTU() != 185 {
		t.Fatalf("MTU %d", d.MTU())
	}
	if !g.Notifying() {
		t.Fatal("notifications not enabled")
	}
	if err := d.WritePacket(ctx, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-g.Writes:
		if string(w.Value) != "\x01\x02\x03" || w.Type != WriteCommand || w.Char != g.Inbox {
			t.Fatalf("write %+v", w)
		}
	case <-ctx.Done():
		t.Fatal("no write")
	}
	if err := d.WritePacket(ctx, make([]byte, 183)); !errors.Is(err, ErrInvalidArguments) {
		t.Fatalf("oversize write: %v", err)
	}
	for i := range 10 {
		g.Notify([]byte{byte(i), 0xAA})
	}
	for i := range 10 {
		p, err := d.ReadPacket(ctx)
		if err != nil || len(p) != 2 || p[0] != byte(i) {
			t.Fatalf("ReadPacket %d = %x, %v", i, p, err)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	if _, err := d.ReadPacket(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadPacket with nothing pending: %v", err)
	}
	cancelShort()
	g.Drop()
	if _, err := d.ReadPacket(ctx); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("ReadPacket after link loss: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadPacket(ctx); !errors.Is(err, ErrNotConnected) && !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadPacket after Close: %v", err)
	}
	if got := matchRules(t, e.bus, e.via, e.client); got != rules0 {
		t.Fatalf("match rules after Close %d, before %d", got, rules0)
	}
	if n := settleGoroutines(t, g0); n > g0 {
		t.Fatalf("goroutines after Close %d, before %d", n, g0)
	}
}

func TestDeviceWriteRequestFragmentRoundTrip(t *testing.T) {
	e, g, disp := newGATTEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := Connect(ctx, e.client, DeviceOptions{Path: g.Device, Dispatcher: disp, WriteType: WriteRequest})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// A 1,000-byte message through firmware/channel's fragment layer:
	// written as fragments, reassembled on the fake's side, notified back
	// fragment by fragment and reassembled by Recv.
	tr := channel.NewFragmentTransport(d, fragment.Options{})
	msg := make([]byte, 1000)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	if err := tr.Send(ctx, msg); err != nil {
		t.Fatal(err)
	}
	re := fragment.NewReassembler(fragment.Options{})
	var frags [][]byte
	for got := []byte(nil); got == nil; {
		select {
		case w := <-g.Writes:
			if w.Type != WriteRequest || len(w.Value) > d.MTU()-3 {
				t.Fatalf("write type %q, %d bytes", w.Type, len(w.Value))
			}
			frags = append(frags, w.Value)
			if got, err = re.Add(w.Value); err != nil {
				t.Fatal(err)
			}
			if got != nil && !bytes.Equal(got, msg) {
				t.Fatal("lock side reassembled a different message")
			}
		case <-ctx.Done():
			t.Fatal("message not written")
		}
	}
	if len(frags) < 2 {
		t.Fatalf("%d fragments for 1000 bytes at MTU %d", len(frags), d.MTU())
	}
	for _, f := range frags {
		g.Notify(f)
	}
	back, err := tr.Recv(ctx)
	if err != nil || !bytes.Equal(back, msg) {
		t.Fatalf("Recv = %d bytes, %v", len(back), err)
	}
}

func TestDeviceConnectErrors(t *testing.T) {
	e, g, disp := newGATTEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The dispatcher's one owner watch of org.bluez (BluetoothdGone) is
	// added by the first Connect and stays until the dispatcher closes.
	if _, err := disp.BluetoothdGone(ctx); err != nil {
		t.Fatal(err)
	}
	rules0 := matchRules(t, e.bus, e.via, e.client)

	g.SetConnectError("org.bluez.Error.Failed", "le-connection-abort-by-local")
	_, err := Connect(ctx, e.client, DeviceOptions{Path: g.Device, Dispatcher: disp})
	if !errors.Is(err, ErrConnectionAborted) || !Retryable(err) {
		t.Fatalf("Connect = %v, want retryable ErrConnectionAborted", err)
	}

	g.SetConnectError("", "")
	g.SetNoResolve(true)
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if _, err := Connect(short, e.client, DeviceOptions{Path: g.Device, Dispatcher: disp}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect without ServicesResolved = %v, want deadline", err)
	}
	if got := matchRules(t, e.bus, e.via, e.client); got != rules0 {
		t.Fatalf("failed Connects left %d rules, want %d", got, rules0)
	}
	if _, err := Connect(ctx, e.client, DeviceOptions{Path: g.Device}); !errors.Is(err, ErrInvalidArguments) {
		t.Fatalf("Connect without Dispatcher = %v", err)
	}
}

// TestDeviceCloseWaitsForDisconnect: bluetoothd answers Disconnect before
// the link is down; Close returns only once Connected turned false, so
// that an immediate reconnect never meets a half-torn-down link.
func TestDeviceCloseWaitsForDisconnect(t *testing.T) {
	e, g, disp := newGATTEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := Connect(ctx, e.client, DeviceOptions{Path: g.Device, Dispatcher: disp})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	g.SetLateDisconnect(release)
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while Connected was still true", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Close did not return after Connected turned false")
	}
}
