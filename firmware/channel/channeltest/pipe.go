// Package channeltest provides in-memory links for tests of the secure
// channel: a pair of packet links with a fixed ATT MTU and optional,
// seeded reordering and duplication of packets (what EATT and retries can
// do on a real link). It may import the standard library and firmware/
// only, and is never used by production code.
package channeltest

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
)

// ErrClosed is returned when the pipe was closed.
var ErrClosed = errors.New("channeltest: pipe closed")

// Faults perturbs packets on their way. Zero means a perfect link.
type Faults struct {
	// Seed makes the perturbation reproducible.
	Seed uint64
	// Swap is the probability that a packet (not the last of its
	// message) is held back and sent after the next one.
	Swap float64
	// Duplicate is the probability that a packet is delivered twice.
	Duplicate float64
}

// PacketLink is one end of a pipe. It implements channel.Link.
type PacketLink struct {
	mtu  int
	in   <-chan []byte
	out  chan<- []byte
	done chan struct{}
	once *sync.Once

	mu     sync.Mutex
	faults Faults
	rnd    *rand.Rand
	held   []byte
	// Sent records every packet written, for tests that replay or inspect
	// traffic (a sniffer's view).
	Sent [][]byte
}

// Pipe returns two connected links with ATT MTU mtu.
func Pipe(mtu int, f Faults) (a, b *PacketLink) {
	ab, ba := make(chan []byte, 1024), make(chan []byte, 1024)
	done, once := make(chan struct{}), new(sync.Once)
	mk := func(in, out chan []byte, seed uint64) *PacketLink {
		return &PacketLink{mtu: mtu, in: in, out: out, done: done, once: once,
			faults: f, rnd: rand.New(rand.NewPCG(f.Seed, seed))}
	}
	return mk(ba, ab, 1), mk(ab, ba, 2)
}

// MTU implements channel.Link.
func (l *PacketLink) MTU() int { return l.mtu }

// WritePacket implements channel.Link. Packets longer than MTU-3 are
// refused, as the ATT layer would.
func (l *PacketLink) WritePacket(ctx context.Context, p []byte) error {
	if len(p) > l.mtu-3 {
		return errors.New("channeltest: packet longer than ATT_MTU-3")
	}
	cp := append([]byte(nil), p...)
	l.mu.Lock()
	l.Sent = append(l.Sent, cp)
	var send [][]byte
	switch {
	case l.held != nil:
		send = [][]byte{cp, l.held}
		l.held = nil
	case l.faults.Swap > 0 && !lastFragment(cp) && l.rnd.Float64() < l.faults.Swap:
		l.held = cp
	default:
		send = [][]byte{cp}
	}
	if l.faults.Duplicate > 0 && len(send) > 0 && l.rnd.Float64() < l.faults.Duplicate {
		send = append(send, send[0])
	}
	l.mu.Unlock()
	for _, s := range send {
		if err := l.Inject(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// lastFragment reports whether p ends its message (docs/protocol.md §2
// header: msg_id, offset u16, total u16). The last fragment is never held
// back, so every message completes, just out of order.
func lastFragment(p []byte) bool {
	if len(p) < 5 {
		return true
	}
	off := int(p[1])<<8 | int(p[2])
	total := int(p[3])<<8 | int(p[4])
	return off+len(p)-5 >= total
}

// Flush sends a packet held back by Swap.
func (l *PacketLink) Flush(ctx context.Context) error {
	l.mu.Lock()
	h := l.held
	l.held = nil
	l.mu.Unlock()
	if h == nil {
		return nil
	}
	return l.Inject(ctx, h)
}

// Inject delivers p to the other end as if this end had written it,
// bypassing faults and the record: an attacker on the link.
func (l *PacketLink) Inject(ctx context.Context, p []byte) error {
	select {
	case l.out <- p:
		return nil
	case <-l.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReadPacket implements channel.Link. Packets written before the pipe
// closed are still delivered, as a real link delivers what it received
// before the disconnection: a select on both would pick at random.
func (l *PacketLink) ReadPacket(ctx context.Context) ([]byte, error) {
	select {
	case p := <-l.in:
		return p, nil
	default:
	}
	select {
	case p := <-l.in:
		return p, nil
	case <-l.done:
		// A packet written before the close and the close itself can be
		// ready at once when this reader wakes: select picks either, so
		// look at the packets once more before reporting the close.
		select {
		case p := <-l.in:
			return p, nil
		default:
		}
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close closes both ends.
func (l *PacketLink) Close() { l.once.Do(func() { close(l.done) }) }
