package channel_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/edhoc"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/frame"
)

// result of the lock's side of a handshake, run in its own goroutine.
type result struct {
	conn *channel.Conn
	err  error
}

// connect runs Accept (lock) in a goroutine and Dial (gateway) here, over a
// pipe with ATT MTU mtu. It returns both ends' results and the links.
func connect(t *testing.T, mtu int, faults channeltest.Faults, gw, lk channel.Config) (gwRes, lockRes result, a, b *channeltest.PacketLink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	a, b = channeltest.Pipe(mtu, faults)
	t.Cleanup(a.Close)
	gt := channel.NewFragmentTransport(a, fragment.Options{})
	lt := channel.NewFragmentTransport(b, fragment.Options{})
	done := make(chan result, 1)
	go func() {
		c, err := channel.Accept(ctx, lt, lk)
		done <- result{c, err}
	}()
	c, err := channel.Dial(ctx, gt, gw)
	if err != nil {
		a.Close() // unblock the lock if it still waits
	}
	return result{c, err}, <-done, a, b
}

func TestHandshakeAndFramesAcrossMTUs(t *testing.T) {
	f := channeltest.NewFleet(t, "acme")
	gw, lk := f.Gateway(t, "gw-dock-1"), f.Lock(t, 0x0102030405060708)
	for _, mtu := range []int{23, 24, 64, 185, 247} {
		for _, faults := range []channeltest.Faults{{}, {Seed: uint64(mtu), Swap: 0.3, Duplicate: 0.2}} {
			t.Run(fmt.Sprintf("mtu%d/faults=%v", mtu, faults.Swap > 0), func(t *testing.T) {
				gr, l, _, _ := connect(t, mtu, faults, f.GatewayConfig(gw), f.LockConfig(lk))
				g, err := gr.conn, gr.err
				if err != nil || l.err != nil {
					t.Fatalf("dial: %v; accept: %v", err, l.err)
				}
				if g.Peer().Kind != cred.KindLock || g.Peer().Subject != lk.Cert.Subject {
					t.Fatalf("gateway sees peer %v %q", g.Peer().Kind, g.Peer().Subject)
				}
				if l.conn.Peer().Kind != cred.KindGateway || l.conn.Peer().Subject != "gw-dock-1" {
					t.Fatalf("lock sees peer %v %q", l.conn.Peer().Kind, l.conn.Peer().Subject)
				}
				ctx := context.Background()
				for i := range 20 {
					req := bytes.Repeat([]byte{byte(i)}, 1+i*40)
					if err := g.Send(ctx, frame.TypeRequest, req); err != nil {
						t.Fatal(err)
					}
					typ, got, err := l.conn.Recv(ctx)
					if err != nil || typ != frame.TypeRequest || !bytes.Equal(got, req) {
						t.Fatalf("lock got %v %x %v", typ, got, err)
					}
					if err := l.conn.Send(ctx, frame.TypeResponse, got); err != nil {
						t.Fatal(err)
					}
					typ, got, err = g.Recv(ctx)
					if err != nil || typ != frame.TypeResponse || !bytes.Equal(got, req) {
						t.Fatalf("gateway got %v %x %v", typ, got, err)
					}
				}
				if err := g.Close(ctx, frame.CloseNormal); err != nil {
					t.Fatal(err)
				}
				if _, _, err := l.conn.Recv(ctx); !errors.Is(err, channel.ErrPeerClosed) {
					t.Fatalf("after Close: %v", err)
				}
			})
		}
	}
}

// dialMustFail checks that the gateway refuses with all of want, and that
// the lock learns of it through an EDHOC error message.
func dialMustFail(t *testing.T, gw, lk channel.Config, want ...error) {
	t.Helper()
	gr, l, _, _ := connect(t, 64, channeltest.Faults{}, gw, lk)
	g, err := gr.conn, gr.err
	if g != nil {
		t.Fatal("gateway opened a channel")
	}
	for _, w := range want {
		if !errors.Is(err, w) {
			t.Errorf("gateway error %v does not match %v", err, w)
		}
	}
	if l.conn != nil || !errors.Is(l.err, edhoc.ErrPeerError) {
		t.Errorf("lock: conn %v, error %v; want the gateway's error message", l.conn, l.err)
	}
}

// acceptMustFail checks that the lock refuses with all of want, and that
// the gateway learns of it through an EDHOC error message.
func acceptMustFail(t *testing.T, gw, lk channel.Config, want ...error) {
	t.Helper()
	gr, l, _, _ := connect(t, 64, channeltest.Faults{}, gw, lk)
	g, err := gr.conn, gr.err
	if l.conn != nil {
		t.Fatal("lock opened a channel")
	}
	for _, w := range want {
		if !errors.Is(l.err, w) {
			t.Errorf("lock error %v does not match %v", l.err, w)
		}
	}
	if g != nil || !errors.Is(err, edhoc.ErrPeerError) {
		t.Errorf("gateway: conn %v, error %v; want the lock's error message", g, err)
	}
}

func TestLockCredentialNotSignedByFleetRoot(t *testing.T) {
	f := channeltest.NewFleet(t, "acme")
	gw := f.Gateway(t, "gw-1")
	t.Run("unknown root", func(t *testing.T) {
		rogue := channeltest.NewFleet(t, "rogue")
		lk := rogue.Lock(t, 7)
		dialMustFail(t, f.GatewayConfig(gw), rogue.LockConfig(lk), edhoc.ErrCredentialRejected, cred.ErrUnknownRoot)
	})
	t.Run("rogue key under the fleet root's kid", func(t *testing.T) {
		rogue := channeltest.NewFleet(t, "rogue")
		rogue.RootKID = f.RootKID
		rogue.Roots = cred.Roots{}
		rogue.Roots.Add(f.RootKID, rogue.Root.Public().(ed25519.PublicKey))
		lk := rogue.Lock(t, 7)
		dialMustFail(t, f.GatewayConfig(gw), f.LockConfig(lk), edhoc.ErrCredentialRejected, cred.ErrBadSignature)
	})
}

func TestExpiredCredential(t *testing.T) {
	f := channeltest.NewFleet(t, "acme")
	t.Run("lock", func(t *testing.T) {
		lk := f.Issue(t, cred.Claims{Subject: "00000000000000aa", Kind: cred.KindLock,
			NotBefore: f.Now.Add(-48 * time.Hour), Expiry: f.Now.Add(-time.Hour)})
		dialMustFail(t, f.GatewayConfig(f.Gateway(t, "gw")), f.LockConfig(lk), edhoc.ErrCredentialRejected, cred.ErrExpired)
	})
	t.Run("gateway", func(t *testing.T) {
		gw := f.Issue(t, cred.Claims{Subject: "gw-old", Kind: cred.KindGateway, Perms: cred.GatewayPerms,
			NotBefore: f.Now.Add(-48 * time.Hour), Expiry: f.Now.Add(-time.Second)})
		acceptMustFail(t, f.GatewayConfig(gw), f.LockConfig(f.Lock(t, 1)), edhoc.ErrCredentialRejected, cred.ErrExpired)
	})
	t.Run("not yet valid", func(t *testing.T) {
		lk := f.Issue(t, cred.Claims{Subject: "00000000000000ab", Kind: cred.KindLock,
			NotBefore: f.Now.Add(time.Hour), Expiry: f.Now.Add(48 * time.Hour)})
		dialMustFail(t, f.GatewayConfig(f.Gateway(t, "gw")), f.LockConfig(lk), edhoc.ErrCredentialRejected, cred.ErrNotYetValid)
	})
}

func TestOperatorCredentialPresentedAsLock(t *testing.T) {
	f := channeltest.NewFleet(t, "acme")
	op := f.Operator(t, "alice", cred.RoleAdmin)
	// A device that holds a valid operator credential poses as a lock.
	dialMustFail(t, f.GatewayConfig(f.Gateway(t, "gw")), f.LockConfig(op), edhoc.ErrCredentialRejected, cred.ErrWrongKind)
}

func TestLockRefusesAnotherLockAsInitiator(t *testing.T) {
	f := channeltest.NewFleet(t, "acme")
	other := f.Lock(t, 2)
	cfg := f.GatewayConfig(other) // a lock credential dialing a lock
	acceptMustFail(t, cfg, f.LockConfig(f.Lock(t, 1)), edhoc.ErrCredentialRejected, cred.ErrWrongKind)
}

func TestByReferenceRetriesByValue(t *testing.T) {
	f := channeltest.NewFleet(t, "acme")
	gw, lk := f.Gateway(t, "gw"), f.Lock(t, 3)
	gcfg, lcfg := f.GatewayConfig(gw), f.LockConfig(lk)
	gcfg.ByReference = true
	countEDHOC1 := func(a *channeltest.PacketLink) int {
		n := 0
		for _, p := range a.Sent {
			// First fragment of a message (offset 0) whose first byte is
			// the message_1 type.
			if len(p) > 5 && p[1] == 0 && p[2] == 0 && p[5] == channel.MsgEDHOC1 {
				n++
			}
		}
		return n
	}
	for attempt, wantHellos := range []int{2, 1} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		a, b := channeltest.Pipe(247, channeltest.Faults{})
		lt := channel.NewFragmentTransport(b, fragment.Options{})
		var lockErrs []error
		done := make(chan *channel.Conn, 1)
		go func() {
			// The lock serves handshakes on this link until one succeeds.
			for {
				c, err := channel.Accept(ctx, lt, lcfg)
				if err == nil || ctx.Err() != nil {
					done <- c
					return
				}
				lockErrs = append(lockErrs, err)
			}
		}()
		g, err := channel.Dial(ctx, channel.NewFragmentTransport(a, fragment.Options{}), gcfg)
		lc := <-done
		cancel()
		a.Close()
		if err != nil || g == nil || lc == nil {
			t.Fatalf("attempt %d: dial %v; lock errors %v", attempt, err, lockErrs)
		}
		if got := countEDHOC1(a); got != wantHellos {
			t.Fatalf("attempt %d: %d message_1, want %d", attempt, got, wantHellos)
		}
		if attempt == 0 && (len(lockErrs) != 1 || !errors.Is(lockErrs[0], edhoc.ErrUnknownCredential)) {
			t.Fatalf("first contact: lock errors %v, want one ErrUnknownCredential", lockErrs)
		}
	}
}

func TestSnifferLearnsNothing(t *testing.T) {
	f := channeltest.NewFleet(t, "acme")
	gw, lk := f.Gateway(t, "gw-secret-name"), f.Lock(t, 0x1122334455667788)
	gr, l, a, b := connect(t, 185, channeltest.Faults{}, f.GatewayConfig(gw), f.LockConfig(lk))
	g, err := gr.conn, gr.err
	if err != nil || l.err != nil {
		t.Fatal(err, l.err)
	}
	ctx := context.Background()
	secret := []byte("unlock user 42 with code 0xC0FFEE")
	if err := g.Send(ctx, frame.TypeRequest, secret); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.conn.Recv(ctx); err != nil {
		t.Fatal(err)
	}
	var air []byte
	for _, p := range append(a.Sent, b.Sent...) {
		air = append(air, p...)
	}
	for name, v := range map[string][]byte{
		"gateway subject": []byte("gw-secret-name"),
		"lock kid":        lk.Cert.KID,
		"lock credential": lk.Cert.Raw,
		"gateway kid":     gw.Cert.KID,
		"command":         secret,
		"command prefix":  secret[:8],
	} {
		if bytes.Contains(air, v) {
			t.Errorf("a sniffer sees the %s", name)
		}
	}
}

func TestReplayedFrameOverTheLink(t *testing.T) {
	f := channeltest.NewFleet(t, "acme")
	gr, l, a, _ := connect(t, 247, channeltest.Faults{}, f.GatewayConfig(f.Gateway(t, "gw")), f.LockConfig(f.Lock(t, 9)))
	g, err := gr.conn, gr.err
	if err != nil || l.err != nil {
		t.Fatal(err, l.err)
	}
	ctx := context.Background()
	if err := g.Send(ctx, frame.TypeRequest, []byte("unlock")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.conn.Recv(ctx); err != nil {
		t.Fatal(err)
	}
	// The attacker re-sends the captured packet with a fresh fragment
	// msg_id, so it passes reassembly and reaches the frame layer.
	captured := append([]byte(nil), a.Sent[len(a.Sent)-1]...)
	captured[0] += 100
	if err := a.Inject(ctx, captured); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.conn.Recv(ctx); !errors.Is(err, frame.ErrReplay) {
		t.Fatalf("replayed frame: %v", err)
	}
}

func TestFreshSessionKeysPerSession(t *testing.T) {
	f := channeltest.NewFleet(t, "acme")
	gw, lk := f.Gateway(t, "gw"), f.Lock(t, 5)
	var frames [][]byte
	for range 3 {
		gr, l, a, _ := connect(t, 247, channeltest.Faults{}, f.GatewayConfig(gw), f.LockConfig(lk))
		g, err := gr.conn, gr.err
		if err != nil || l.err != nil {
			t.Fatal(err, l.err)
		}
		if err := g.Send(context.Background(), frame.TypeRequest, []byte("status")); err != nil {
			t.Fatal(err)
		}
		last := a.Sent[len(a.Sent)-1]
		for _, prev := range frames {
			if bytes.Equal(prev[5:], last[5:]) {
				t.Fatal("two sessions produced the same protected frame: keys were reused")
			}
		}
		frames = append(frames, last)
	}
}

func TestFrameBeforeHandshakeRefused(t *testing.T) {
	f := channeltest.NewFleet(t, "acme")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, b := channeltest.Pipe(247, channeltest.Faults{})
	defer a.Close()
	gt := channel.NewFragmentTransport(a, fragment.Options{})
	go func() { _ = gt.Send(ctx, []byte{byte(frame.TypeRequest), 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) }()
	_, err := channel.Accept(ctx, channel.NewFragmentTransport(b, fragment.Options{}), f.LockConfig(f.Lock(t, 1)))
	if !errors.Is(err, channel.ErrUnexpectedMessage) {
		t.Fatalf("got %v", err)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	f := channeltest.NewFleet(t, "acme")
	a, b := channeltest.Pipe(247, channeltest.Faults{})
	defer a.Close()
	_ = b // the lock never answers
	cfg := f.GatewayConfig(f.Gateway(t, "gw"))
	cfg.HandshakeTimeout = 50 * time.Millisecond
	_, err := channel.Dial(context.Background(), channel.NewFragmentTransport(a, fragment.Options{}), cfg)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}
