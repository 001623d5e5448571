// Package dfutest links a DFU controller to the reference bootloader in
// process: a [controller.Transport] over a [target.Conn], with faults (a
// link that drops after so many firmware bytes, a link that corrupts a
// write) and counts of what crossed it. For tests only.
//
// It may import the standard library and firmware/ packages only.
package dfutest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gatewayd/gatewayd/firmware/dfu/target"
)

// ErrDropped is returned by writes after the link dropped.
var ErrDropped = errors.New("dfutest: link dropped")

// Link is one connection. Its zero fault fields mean a perfect link.
type Link struct {
	conn *target.Conn

	// DropAfter, if positive, drops the link once that many bytes went
	// through Packet writes (counted over the link's life).
	DropAfter int
	// Corrupt, if set, may change a Packet write in transit (n counts
	// the link's Packet writes from 0).
	Corrupt func(n int, data []byte) []byte
	// Model, if set, gives the link a modelled duration (Elapsed).
	Model LinkModel
	clock clock

	mu      sync.Mutex
	notes   chan []byte
	dropped bool

	// Counts, read after the transfer.
	PacketWrites, PacketBytes, Requests, Notified int
}

// Connect opens a link to b at the given ATT MTU and enables Control
// Point notifications, as a central does before DFU.
func Connect(b *target.Bootloader, attMTU int) *Link {
	c := b.Connect(attMTU)
	c.EnableNotifications()
	// Every request has one response and the controller reads each
	// before its next request; PRN notifications too. A few slots are
	// plenty; a full buffer is a controller bug and drops the link.
	return &Link{conn: c, notes: make(chan []byte, 8)}
}

// Elapsed is the modelled time the link has carried traffic so far
// (zero without a Model).
func (l *Link) Elapsed() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.clock.now
}

// Conn is the bootloader's side of the link.
func (l *Link) Conn() *target.Conn { return l.conn }

// ATTMTU implements controller.Transport.
func (l *Link) ATTMTU() int { return l.conn.ATTMTU() }

// Notifications implements controller.Transport.
func (l *Link) Notifications() <-chan []byte { return l.notes }

// Drop drops the link now.
func (l *Link) Drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropLocked()
}

func (l *Link) dropLocked() {
	if !l.dropped {
		l.dropped = true
		l.conn.Disconnect()
		close(l.notes)
	}
}

func (l *Link) deliver(n []byte) {
	if n == nil {
		return
	}
	select {
	case l.notes <- n:
		l.Notified++
	default:
		l.dropLocked()
	}
}

// WriteControlPoint implements controller.Transport.
func (l *Link) WriteControlPoint(_ context.Context, req []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dropped {
		return ErrDropped
	}
	l.Requests++
	l.clock.m = l.Model
	l.clock.send()
	l.clock.roundTrip()
	n, err := l.conn.WriteControlPoint(req)
	if err != nil {
		return err
	}
	l.deliver(n)
	if l.conn.Closed() { // the bootloader reset after activation
		l.dropLocked()
	}
	return nil
}

// WritePacket implements controller.Transport.
func (l *Link) WritePacket(_ context.Context, data []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dropped {
		return ErrDropped
	}
	if l.DropAfter > 0 && l.PacketBytes+len(data) > l.DropAfter {
		l.dropLocked()
		return ErrDropped
	}
	if l.Corrupt != nil {
		data = l.Corrupt(l.PacketWrites, append([]byte(nil), data...))
	}
	l.PacketWrites++
	l.PacketBytes += len(data)
	l.clock.m = l.Model
	l.clock.send()
	n, err := l.conn.WritePacket(data)
	if err != nil {
		return err
	}
	if n != nil {
		l.clock.roundTrip() // the controller waits for the receipt
	}
	l.deliver(n)
	return nil
}
