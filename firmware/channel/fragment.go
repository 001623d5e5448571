package channel

import (
	"context"
	"fmt"
	"sync"

	"github.com/gatewayd/gatewayd/firmware/fragment"
)

// Link is a packet link: one packet is one ATT write value (Initiator to
// Responder) or one notification value (Responder to Initiator).
type Link interface {
	WritePacket(ctx context.Context, p []byte) error
	ReadPacket(ctx context.Context) ([]byte, error)
	// MTU is the negotiated ATT MTU (23..517); packets carry at most
	// MTU-3 bytes.
	MTU() int
}

// FragmentTransport carries whole messages over a Link, split and
// reassembled by firmware/fragment (docs/protocol.md §2). Send may be called
// by one goroutine and Recv by another at the same time.
type FragmentTransport struct {
	link Link

	sendMu sync.Mutex
	nextID uint8
	buf    []byte

	recvMu sync.Mutex
	re     *fragment.Reassembler
}

// NewFragmentTransport wraps link.
func NewFragmentTransport(link Link, opts fragment.Options) *FragmentTransport {
	return &FragmentTransport{link: link, re: fragment.NewReassembler(opts)}
}

// Send splits msg for the link's current MTU and writes every fragment.
func (f *FragmentTransport) Send(ctx context.Context, msg []byte) error {
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	id := f.nextID
	f.nextID++
	for off := 0; off < len(msg) || (off == 0 && len(msg) == 0); {
		var err error
		var next int
		f.buf, next, err = fragment.AppendFragment(f.buf[:0], id, msg, off, f.link.MTU())
		if err != nil {
			return fmt.Errorf("channel: fragment: %w", err)
		}
		if err := f.link.WritePacket(ctx, f.buf); err != nil {
			return err
		}
		off = next
	}
	return nil
}

// Recv reads packets until a message is complete. A bad fragment ends the
// call with its error (wrapping a fragment sentinel); the next call goes on
// with the packets that follow.
func (f *FragmentTransport) Recv(ctx context.Context) ([]byte, error) {
	f.recvMu.Lock()
	defer f.recvMu.Unlock()
	for {
		p, err := f.link.ReadPacket(ctx)
		if err != nil {
			return nil, err
		}
		msg, err := f.re.Add(p)
		if err != nil {
			return nil, fmt.Errorf("channel: reassemble: %w", err)
		}
		if msg != nil {
			return msg, nil
		}
	}
}
