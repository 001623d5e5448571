package locklink

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
)

// DefaultQueue is the default number of delivered packets a Link holds
// before Deliver blocks.
const DefaultQueue = 1024

// Options configure a Link.
type Options struct {
	// MTU is the connection's ATT MTU, 23..517.
	MTU int
	// Notify sends one notification on Outbox (the lock's WritePacket). It
	// is called by the lock's goroutine, one packet at a time. Required.
	Notify func(ctx context.Context, p []byte) error
	// Queue is how many written packets wait for the lock; 0 is
	// DefaultQueue.
	Queue int
}

// Link is the lock's side of one GATT connection. It implements
// channel.Link: ReadPacket returns the packets Deliver queued, in order;
// WritePacket calls Options.Notify. Its methods are safe for concurrent
// use.
type Link struct {
	notify    func(ctx context.Context, p []byte) error
	mtu       atomic.Int32
	in        chan []byte
	done      chan struct{}
	closeOnce sync.Once
}

var _ channel.Link = (*Link)(nil)

// New returns an open Link.
func New(opts Options) (*Link, error) {
	if opts.Notify == nil {
		return nil, fmt.Errorf("locklink: Options.Notify is nil")
	}
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	l := &Link{notify: opts.Notify, in: make(chan []byte, opts.Queue), done: make(chan struct{})}
	if err := l.SetMTU(opts.MTU); err != nil {
		return nil, err
	}
	return l, nil
}

// MTU is the connection's current ATT MTU.
func (l *Link) MTU() int { return int(l.mtu.Load()) }

// SetMTU changes the ATT MTU, as learnt from the stack (BlueZ reports it
// with each write).
func (l *Link) SetMTU(mtu int) error {
	if mtu < fragment.MinATTMTU || mtu > fragment.MaxATTMTU {
		return fmt.Errorf("%w: %d", ErrBadMTU, mtu)
	}
	l.mtu.Store(int32(mtu))
	return nil
}

// Deliver queues one GATT write's value for the lock. It copies p, and
// blocks while the queue is full, until ctx ends or the link goes down.
func (l *Link) Deliver(ctx context.Context, p []byte) error {
	if len(p) > l.MTU()-3 {
		return fmt.Errorf("%w: %d bytes, ATT_MTU %d", ErrTooLong, len(p), l.MTU())
	}
	select {
	case <-l.done:
		return ErrLinkDown
	default:
	}
	select {
	case l.in <- append([]byte(nil), p...):
		return nil
	case <-l.done:
		return ErrLinkDown
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReadPacket returns the next delivered packet (the lock reads Inbox).
// Once the link is down it returns ErrLinkDown, even if packets are left.
func (l *Link) ReadPacket(ctx context.Context) ([]byte, error) {
	select {
	case <-l.done:
		return nil, ErrLinkDown
	default:
	}
	select {
	case p := <-l.in:
		return p, nil
	case <-l.done:
		return nil, ErrLinkDown
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// WritePacket sends p as one Outbox notification through Options.Notify.
func (l *Link) WritePacket(ctx context.Context, p []byte) error {
	if len(p) > l.MTU()-3 {
		return fmt.Errorf("%w: %d bytes, ATT_MTU %d", ErrTooLong, len(p), l.MTU())
	}
	select {
	case <-l.done:
		return ErrLinkDown
	default:
	}
	if err := l.notify(ctx, p); err != nil {
		return fmt.Errorf("locklink: notify: %w", err)
	}
	return nil
}

// Close takes the link down: the connection ended. It is idempotent.
func (l *Link) Close() {
	l.closeOnce.Do(func() { close(l.done) })
}

// Done is closed by Close.
func (l *Link) Done() <-chan struct{} { return l.done }

// Serve runs the lock on the link until ctx ends or the link goes down,
// as lock.Serve over a channel.FragmentTransport. peer is what the BLE
// stack knows of the connected device: its address ("AA:BB:CC:DD:EE:FF"),
// which bond windows and lockouts key on, and whether the stack encrypted
// the link with the key of a bond (lock.Peer.Encrypted: such a peer, if
// the lock holds its bond, is not held back by the global throttle,
// docs/protocol.md §13.8). A stack that cannot tell leaves Encrypted
// false.
func Serve(ctx context.Context, lk *lock.Lock, l *Link, peer lock.Peer) error {
	t := channel.NewFragmentTransport(l, fragment.Options{})
	return lk.Serve(ctx, t, peer)
}
