package fleettest

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/frame"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
	"github.com/gatewayd/gatewayd/firmware/lock/flash"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
	"github.com/gatewayd/gatewayd/fleet"
)

// GatewayAddress is the BLE address the reference locks see the gateway
// connect from.
const GatewayAddress = "02:00:00:00:00:01"

// RefLink is a fleet.Link to real reference locks: each Dial opens an
// in-memory pipe (channeltest.Pipe) to the lock, which serves it with
// lock.Serve; the session's Handshake runs the real EDHOC handshake
// (channel.Dial, with the fleet's gateway credential) and Do sends requests
// with lockclient. Link failures (a dropped pipe, a deadline) are
// retryable errors, as the BlueZ client's are.
type RefLink struct {
	Fleet   *channeltest.Fleet
	Gateway channeltest.Party
	// MTU is the pipes' ATT MTU (default 185).
	MTU int
	// Audit gives each lock AddLock boots an audit log
	// (firmware/lock/audit, in memory), as RefLock.AuditLog.
	Audit bool
	// AuditSign makes those logs sign each page with the lock's key.
	AuditSign bool

	mu      sync.Mutex
	locks   map[bonds.LockID]*RefLock
	counter uint64
	wg      sync.WaitGroup
}

var _ fleet.Link = (*RefLink)(nil)

// RefLock is one reference lock hosted by a RefLink.
type RefLock struct {
	ID       bonds.LockID
	Party    channeltest.Party
	Lock     *lock.Lock
	Actuator *locktest.Actuator
	Store    *locktest.Store
	// AuditLog is the lock's audit log when RefLink.Audit was set.
	AuditLog *audit.Log

	mu          sync.Mutex
	away        bool
	drops       int
	sessions    int
	maxSessions int
	dials       int
}

// NewRefLink returns a link for fleet f, with a gateway credential issued
// for "gw-test".
func NewRefLink(tb channeltest.TB, f *channeltest.Fleet) *RefLink {
	tb.Helper()
	return &RefLink{Fleet: f, Gateway: f.Gateway(tb, "gw-test"), locks: map[bonds.LockID]*RefLock{}}
}

// AddLock boots reference lock number n of the fleet (empty storage, its
// clock at the fleet's Now) and makes it reachable.
func (r *RefLink) AddLock(tb channeltest.TB, n uint64) *RefLock {
	tb.Helper()
	p := r.Fleet.Lock(tb, n)
	l := &RefLock{Party: p, Actuator: &locktest.Actuator{}, Store: locktest.NewStore()}
	binary.BigEndian.PutUint64(l.ID[:], n)
	opts := lock.Options{Cert: p.Cert, Key: p.Key, Roots: r.Fleet.Roots, Store: l.Store,
		Actuator: l.Actuator, RTC: func() time.Time { return r.Fleet.Now }}
	if r.Audit {
		ao := audit.Options{LockID: p.Cert.KID, Now: func() time.Time { return r.Fleet.Now }}
		if r.AuditSign {
			ao.Signer = p.Key
		}
		log, err := audit.Open(flash.NewMem(), ao)
		if err != nil {
			tb.Fatalf("lock %d: audit log: %v", n, err)
		}
		l.AuditLog, opts.Audit = log, lock.AuditLog(log)
	}
	lk, err := lock.New(opts)
	if err != nil {
		tb.Fatalf("lock %d: %v", n, err)
	}
	if bonds.LockID(lk.ID()) != l.ID {
		tb.Fatalf("lock %d has ID %x", n, lk.ID())
	}
	l.Lock = lk
	r.mu.Lock()
	r.locks[l.ID] = l
	r.mu.Unlock()
	return l
}

// Command returns a journal command for l: op signed by signer with the
// link's next counter and command ID id, valid for an hour from the
// fleet's Now.
func (r *RefLink) Command(tb channeltest.TB, l *RefLock, signer channeltest.Party, op command.Op, id bonds.CommandID) bonds.Command {
	tb.Helper()
	r.mu.Lock()
	r.counter++
	ctr := r.counter
	r.mu.Unlock()
	b := command.Body{LockID: l.ID, Op: op, CommandID: id, NotAfter: r.Fleet.Now.Add(time.Hour), Counter: ctr}
	signed, err := command.Sign(signer.Key, signer.Cert.Raw, b)
	if err != nil {
		tb.Fatalf("sign: %v", err)
	}
	return bonds.Command{ID: id, LockID: l.ID, Operator: signer.Cert.Subject, Operation: op.String(),
		NotAfter: b.NotAfter, Payload: signed}
}

// SetAway makes Dial to l fail with fleet.ErrLockAway (or not).
func (l *RefLock) SetAway(away bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.away = away
}

// DropAnswers makes the next n requests to l lose their answer: the lock
// receives and executes the request, then the link drops before its
// result reaches the gateway.
func (l *RefLock) DropAnswers(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drops = n
}

// MaxSessions returns the most sessions l had open at once; Dials how
// many times it was dialled.
func (l *RefLock) MaxSessions() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxSessions
}

// Dials returns how many times l was dialled (away or not).
func (l *RefLock) Dials() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dials
}

// Dial implements fleet.Link: it "connects" (a new pipe, served by the
// lock); the handshake is the session's Handshake.
func (r *RefLink) Dial(ctx context.Context, id bonds.LockID) (fleet.Session, error) {
	r.mu.Lock()
	l := r.locks[id]
	r.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("fleettest: lock %s: %w", id, fleet.ErrLockAway)
	}
	l.mu.Lock()
	l.dials++
	if l.away {
		l.mu.Unlock()
		return nil, fmt.Errorf("fleettest: lock %s: %w", id, fleet.ErrLockAway)
	}
	l.sessions++
	l.maxSessions = max(l.maxSessions, l.sessions)
	l.mu.Unlock()
	if err := ctx.Err(); err != nil {
		l.endSession()
		return nil, err
	}
	mtu := r.MTU
	if mtu == 0 {
		mtu = 185
	}
	a, b := channeltest.Pipe(mtu, channeltest.Faults{})
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r.wg.Go(func() {
		defer close(done)
		_ = l.Lock.Serve(sctx, channel.NewFragmentTransport(b, fragment.Options{}), lock.Peer{Address: GatewayAddress})
	})
	s := &refSession{r: r, l: l, pipe: a, cancel: cancel, done: done}
	s.tr = &dropTransport{t: channel.NewFragmentTransport(a, fragment.Options{}), pipe: a}
	return s, nil
}

func (l *RefLock) endSession() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sessions--
}

// Close waits for the locks' goroutines (every session must be closed).
func (r *RefLink) Close() { r.wg.Wait() }

type refSession struct {
	r      *RefLink
	l      *RefLock
	pipe   *channeltest.PacketLink
	tr     *dropTransport
	conn   *channel.Conn
	client *lockclient.Client
	cancel context.CancelFunc
	done   chan struct{}
	closed bool
}

// Handshake implements fleet.Handshaker: EDHOC with the lock.
func (s *refSession) Handshake(ctx context.Context) error {
	if s.conn != nil {
		return nil
	}
	conn, err := channel.Dial(ctx, s.tr, s.r.Fleet.GatewayConfig(s.r.Gateway))
	if err != nil {
		return err
	}
	s.conn, s.client = conn, lockclient.New(conn)
	return nil
}

func (s *refSession) Do(ctx context.Context, op command.Op, signed []byte) (*command.Result, error) {
	if err := s.Handshake(ctx); err != nil {
		return nil, err
	}
	s.l.mu.Lock()
	if s.l.drops > 0 {
		s.l.drops--
		s.tr.setDrop()
	}
	s.l.mu.Unlock()
	return s.client.Do(ctx, command.Request{Op: op, Signed: signed})
}

// ReadAudit implements fleet.AuditReader: read-audit on the gateway's
// own credential.
func (s *refSession) ReadAudit(ctx context.Context, fromSeq uint64, max int) (*command.Result, error) {
	if err := s.Handshake(ctx); err != nil {
		return nil, err
	}
	if fromSeq > math.MaxUint32 || max < 1 || max > command.MaxAuditEntries {
		return nil, fmt.Errorf("fleettest: read-audit from %d, max %d: out of range", fromSeq, max)
	}
	return s.client.ReadAudit(ctx, uint32(fromSeq), uint8(max))
}

// PeerKey implements fleet.PeerKeyer: the lock's key from its credential,
// as the handshake verified it.
func (s *refSession) PeerKey() ed25519.PublicKey {
	if s.conn == nil || s.conn.Peer() == nil {
		return nil
	}
	return s.conn.Peer().PublicKey
}

func (s *refSession) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.conn.Close(ctx, frame.CloseNormal)
		cancel()
	}
	s.pipe.Close()
	s.cancel()
	<-s.done
	s.l.endSession()
	return nil
}

// dropTransport is the gateway's end of a pipe. Its errors are retryable
// (a BLE link's failures are); armed, it swallows the next message from
// the lock (the result of a request it executed) and drops the link.
type dropTransport struct {
	t    channel.Transport
	pipe *channeltest.PacketLink
	mu   sync.Mutex
	drop bool
}

// linkError is a retryable failure of the in-memory link.
type linkError struct{ err error }

func (e *linkError) Error() string   { return "fleettest: link: " + e.err.Error() }
func (e *linkError) Unwrap() error   { return e.err }
func (e *linkError) Retryable() bool { return true }

func (d *dropTransport) setDrop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.drop = true
}

func (d *dropTransport) Send(ctx context.Context, msg []byte) error {
	if err := d.t.Send(ctx, msg); err != nil {
		return &linkError{err}
	}
	return nil
}

func (d *dropTransport) Recv(ctx context.Context) ([]byte, error) {
	msg, err := d.t.Recv(ctx)
	if err != nil {
		return nil, &linkError{err}
	}
	d.mu.Lock()
	drop := d.drop
	d.drop = false
	d.mu.Unlock()
	if drop {
		d.pipe.Close()
		return nil, &linkError{fmt.Errorf("connection lost after the lock answered (%d bytes dropped)", len(msg))}
	}
	return msg, nil
}
