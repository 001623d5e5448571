// Package bluelink implements fleet.Link over the BlueZ client: a lock is
// found by its advertised lock ID in the adapter's presence table, reached
// with an LE connection (bluez.Adapter.Connect), and spoken to through the
// secure channel (firmware/channel: EDHOC, then protected frames over the
// GATT fragment transport) with a lockclient.
//
// It is the one place where bluez/, fleet/ and firmware/ meet, so neither
// of them imports the others. It may import those, bonds (for lock IDs)
// and the standard library.
package bluelink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/frame"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
	"github.com/gatewayd/gatewayd/fleet"
)

// Options configures a Link.
type Options struct {
	// Adapter finds and connects locks. Required.
	Adapter *bluez.Adapter
	// Channel is the gateway's side of the secure channel: its credential
	// and key, and the verifier of lock credentials. Required.
	Channel channel.Config
	// Fragment are the GATT fragmentation limits; zero is the defaults.
	Fragment fragment.Options
	// Logger; nil discards.
	Logger *slog.Logger
}

// Link reaches locks through BlueZ. It satisfies fleet.Link.
type Link struct {
	opts Options
	log  *slog.Logger
}

// New returns a Link.
func New(opts Options) (*Link, error) {
	if opts.Adapter == nil || opts.Channel.Cert == nil {
		return nil, errors.New("bluelink: Adapter and Channel are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Link{opts: opts, log: opts.Logger.With("subsystem", "bluelink")}, nil
}

var _ fleet.Link = (*Link)(nil)

// Dial connects to the lock with ID id, if the adapter hears it. The
// handshake runs in Session.Handshake, after the scheduler released its
// connect slot.
func (l *Link) Dial(ctx context.Context, id bonds.LockID) (fleet.Session, error) {
	var found *bluez.LockInfo
	for _, li := range l.opts.Adapter.Locks() {
		if li.Err == nil && li.LockID == id {
			found = &li
			break
		}
	}
	if found == nil {
		return nil, fmt.Errorf("bluelink: dial %s: %w", id, fleet.ErrLockAway)
	}
	dev, err := l.opts.Adapter.Connect(ctx, bluez.DeviceOptions{Path: found.Path, Logger: l.opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("bluelink: connect %s (%s): %w", id, found.Address, err)
	}
	return &session{l: l, id: id, addr: found.Address, dev: dev}, nil
}

type session struct {
	l    *Link
	id   bonds.LockID
	addr string
	dev  *bluez.Device

	mu   sync.Mutex
	conn *channel.Conn
	lc   *lockclient.Client
}

// Handshake runs EDHOC with the lock: both sides prove their fleet
// credentials, and the session keys are derived.
func (s *session) Handshake(ctx context.Context) error {
	conn, err := channel.Dial(ctx, channel.NewFragmentTransport(s.dev, s.l.opts.Fragment), s.l.opts.Channel)
	if err != nil {
		return fmt.Errorf("bluelink: handshake with %s (%s): %w", s.id, s.addr, err)
	}
	s.mu.Lock()
	s.conn, s.lc = conn, lockclient.New(conn)
	s.mu.Unlock()
	return nil
}

// PeerCredential is the lock's fleet credential (CWT) as it proved it in
// the handshake; nil before the handshake.
func (s *session) PeerCredential() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil || s.conn.Peer() == nil {
		return nil
	}
	return s.conn.Peer().Raw
}

// Do sends one request (signed, or for the gateway's own permissions when
// signed is nil).
func (s *session) Do(ctx context.Context, op command.Op, signed []byte) (*command.Result, error) {
	s.mu.Lock()
	lc := s.lc
	s.mu.Unlock()
	if lc == nil {
		if err := s.Handshake(ctx); err != nil {
			return nil, err
		}
		s.mu.Lock()
		lc = s.lc
		s.mu.Unlock()
	}
	var (
		r   *command.Result
		err error
	)
	if signed == nil {
		r, err = lc.Do(ctx, command.Request{Op: op})
	} else {
		r, err = lc.Signed(ctx, op, signed)
	}
	if err != nil {
		return nil, fmt.Errorf("bluelink: %v on %s: %w", op, s.id, err)
	}
	return r, nil
}

// Close ends the session politely (a protected close frame, bounded to a
// second) and disconnects.
func (s *session) Close() error {
	s.mu.Lock()
	conn := s.conn
	s.conn, s.lc = nil, nil
	s.mu.Unlock()
	if conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(ctx, frame.CloseNormal)
		cancel()
	}
	return s.dev.Close()
}

// Retryable says whether a Link error may succeed on a later attempt: the
// lock is away, BlueZ said so (bluez.Retryable: busy, aborted, bluetoothd
// restarting, the link dropped), or a deadline passed. A handshake the lock
// refused (a credential problem) is not. A lock that closed the session
// (idle, rekey) is retryable.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, fleet.ErrLockAway) || bluez.Retryable(err) {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, channel.ErrPeerClosed)
}
