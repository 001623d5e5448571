package channel

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/edhoc"
	"github.com/gatewayd/gatewayd/firmware/frame"
)

// Message types: the first byte of every message (docs/protocol.md §3).
// Protected frames (0x10-0x1F) are sent as they are: their first byte is
// their frame type.
const (
	MsgEDHOC1     byte = 0x01 // message_1, Initiator → Responder
	MsgEDHOC2     byte = 0x02 // message_2, Responder → Initiator
	MsgEDHOC3     byte = 0x03 // message_3, Initiator → Responder
	MsgEDHOC4     byte = 0x04 // message_4, Responder → Initiator
	MsgEDHOCError byte = 0x05 // EDHOC error message, either direction
)

// DefaultHandshakeTimeout bounds a whole handshake, message_1 to message_4.
const DefaultHandshakeTimeout = 10 * time.Second

// Transport carries whole messages. Implementations must honour the
// context's deadline. FragmentTransport adapts a BLE link.
type Transport interface {
	Send(ctx context.Context, msg []byte) error
	Recv(ctx context.Context) ([]byte, error)
}

// Config configures one side of a channel.
type Config struct {
	// Cert is our credential, and Key the private key it certifies.
	Cert *cred.Cert
	Key  ed25519.PrivateKey
	// Verifier checks the peer's credential: its roots, the kinds we
	// accept from the peer and the permissions it needs.
	Verifier *cred.Verifier
	// Resolver, if set, is used instead of Verifier, for a side that adds
	// checks of its own (the lock checks users against its user table). It
	// must put the peer's *cred.Cert in Credential.Info.
	Resolver edhoc.CredentialResolver
	// ByReference makes the Initiator send its credential by 'kid' first;
	// if the Responder answers ERR_CODE 3 it retries once by value. The
	// Responder always sends its credential by value unless ByReference.
	ByReference bool
	// HandshakeTimeout bounds the handshake; default 10 s.
	HandshakeTimeout time.Duration
	// Frame are the protected-frame limits (sequence, idle, failures).
	Frame frame.Options
	// Rand, ConnID and Trace are seams for test vectors (edhoc.Options).
	Rand   io.Reader
	ConnID []byte
	Trace  func(name string, value []byte)
}

func (c *Config) check() error {
	if c.Cert == nil || len(c.Key) != ed25519.PrivateKeySize || (c.Verifier == nil && c.Resolver == nil) {
		return fmt.Errorf("%w: Cert, Key and Verifier (or Resolver) are required", ErrConfig)
	}
	return nil
}

func (c *Config) edhoc(byValue bool) edhoc.Options {
	var peer edhoc.CredentialResolver = c.Verifier
	if c.Resolver != nil {
		peer = c.Resolver
	}
	return edhoc.Options{
		Cred:    c.Cert.EDHOC(byValue),
		AuthKey: c.Key,
		Peer:    peer,
		ConnID:  c.ConnID,
		Rand:    c.Rand,
		Trace:   c.Trace,
	}
}

func (c *Config) timeout() time.Duration {
	if c.HandshakeTimeout > 0 {
		return c.HandshakeTimeout
	}
	return DefaultHandshakeTimeout
}

// Conn is an open secure channel. Send and Recv may be used by one
// goroutine each at the same time.
type Conn struct {
	t      Transport
	sess   *frame.Session
	peer   *cred.Cert
	role   frame.Role
	sendMu sync.Mutex
	buf    []byte
}

// Peer returns the peer's verified credential.
func (c *Conn) Peer() *cred.Cert { return c.peer }

// Session exposes the frame session (for NeedsRekey and metrics).
func (c *Conn) Session() *frame.Session { return c.sess }

// Send seals payload in a frame of type typ and sends it.
func (c *Conn) Send(ctx context.Context, typ frame.Type, payload []byte) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	f, err := c.sess.Seal(c.buf[:0], typ, payload)
	if err != nil {
		return fmt.Errorf("channel: seal: %w", err)
	}
	c.buf = f
	if err := c.t.Send(ctx, f); err != nil {
		return fmt.Errorf("channel: send: %w", err)
	}
	return nil
}

// Recv returns the next frame's type and plaintext. A frame that fails
// authentication is dropped and counted by the session (which closes after
// too many); Recv then returns that error, and the caller decides whether
// to go on. An authenticated Close frame gives ErrPeerClosed.
func (c *Conn) Recv(ctx context.Context) (frame.Type, []byte, error) {
	msg, err := c.t.Recv(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("channel: recv: %w", err)
	}
	if len(msg) == 0 {
		return 0, nil, ErrEmptyMessage
	}
	if msg[0] < 0x10 || msg[0] > 0x1f {
		return 0, nil, fmt.Errorf("%w: 0x%02x after the handshake", ErrUnexpectedMessage, msg[0])
	}
	typ, pt, err := c.sess.Open(nil, msg)
	if err != nil {
		return 0, nil, fmt.Errorf("channel: open: %w", err)
	}
	if typ == frame.TypeClose {
		c.sess.Close()
		return typ, pt, ErrPeerClosed
	}
	return typ, pt, nil
}

// Close sends an authenticated Close frame with reason (best effort, within
// ctx) and closes the session.
func (c *Conn) Close(ctx context.Context, reason frame.CloseReason) error {
	err := c.Send(ctx, frame.TypeClose, []byte{byte(reason)})
	c.sess.Close()
	return err
}

// Dial runs the Initiator's side of the handshake over t and returns the
// open channel.
func Dial(ctx context.Context, t Transport, cfg Config) (*Conn, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout())
	defer cancel()
	c, err := dialOnce(ctx, t, &cfg, !cfg.ByReference)
	if cfg.ByReference && errors.Is(err, edhoc.ErrPeerError) && errors.Is(err, edhoc.ErrUnknownCredential) {
		// The lock has not cached our credential: send it by value.
		c, err = dialOnce(ctx, t, &cfg, true)
	}
	return c, err
}

func dialOnce(ctx context.Context, t Transport, cfg *Config, byValue bool) (*Conn, error) {
	in, err := edhoc.NewInitiator(cfg.edhoc(byValue))
	if err != nil {
		return nil, err
	}
	abort := func(err error) (*Conn, error) { return nil, tellPeer(ctx, t, err) }
	m1, err := in.Message1()
	if err != nil {
		return nil, err
	}
	if err := t.Send(ctx, append([]byte{MsgEDHOC1}, m1...)); err != nil {
		return nil, fmt.Errorf("channel: send message_1: %w", err)
	}
	m2, err := expect(ctx, t, MsgEDHOC2)
	if err != nil {
		return nil, err
	}
	peer, err := in.ProcessMessage2(m2)
	if err != nil {
		return abort(err)
	}
	m3, err := in.Message3()
	if err != nil {
		return abort(err)
	}
	if err := t.Send(ctx, append([]byte{MsgEDHOC3}, m3...)); err != nil {
		return nil, fmt.Errorf("channel: send message_3: %w", err)
	}
	m4, err := expect(ctx, t, MsgEDHOC4)
	if err != nil {
		return nil, err
	}
	if err := in.ProcessMessage4(m4); err != nil {
		return abort(err)
	}
	cI, cR := in.ConnIDs()
	sess, err := frame.NewSession(frame.Initiator, exporter(in.Exporter), cI, cR, cfg.Frame)
	if err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	return &Conn{t: t, sess: sess, peer: certOf(peer), role: frame.Initiator}, nil
}

// Accept runs the Responder's side of the handshake over t: it waits for
// message_1 and returns the open channel, or the reason the handshake
// failed (after telling the peer).
func Accept(ctx context.Context, t Transport, cfg Config) (*Conn, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	m1, err := expect(ctx, t, MsgEDHOC1)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout())
	defer cancel()
	return AcceptMessage1(ctx, t, cfg, m1)
}

// AcceptMessage1 is Accept for a message_1 that the caller already
// received (without its type byte).
func AcceptMessage1(ctx context.Context, t Transport, cfg Config, m1 []byte) (*Conn, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	re, err := edhoc.NewResponder(cfg.edhoc(!cfg.ByReference))
	if err != nil {
		return nil, err
	}
	abort := func(err error) (*Conn, error) { return nil, tellPeer(ctx, t, err) }
	if err := re.ProcessMessage1(m1); err != nil {
		return abort(err)
	}
	m2, err := re.Message2()
	if err != nil {
		return abort(err)
	}
	if err := t.Send(ctx, append([]byte{MsgEDHOC2}, m2...)); err != nil {
		return nil, fmt.Errorf("channel: send message_2: %w", err)
	}
	m3, err := expect(ctx, t, MsgEDHOC3)
	if err != nil {
		return nil, err
	}
	peer, err := re.ProcessMessage3(m3)
	if err != nil {
		return abort(err)
	}
	m4, err := re.Message4()
	if err != nil {
		return abort(err)
	}
	if err := t.Send(ctx, append([]byte{MsgEDHOC4}, m4...)); err != nil {
		return nil, fmt.Errorf("channel: send message_4: %w", err)
	}
	cI, cR := re.ConnIDs()
	sess, err := frame.NewSession(frame.Responder, exporter(re.Exporter), cI, cR, cfg.Frame)
	if err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	return &Conn{t: t, sess: sess, peer: certOf(peer), role: frame.Responder}, nil
}

// expect receives the next message and checks its type byte. An EDHOC error
// message from the peer is returned as the *edhoc.PeerError it carries.
func expect(ctx context.Context, t Transport, want byte) ([]byte, error) {
	msg, err := t.Recv(ctx)
	if err != nil {
		return nil, fmt.Errorf("channel: waiting for message 0x%02x: %w", want, err)
	}
	if len(msg) == 0 {
		return nil, ErrEmptyMessage
	}
	switch msg[0] {
	case want:
		return msg[1:], nil
	case MsgEDHOCError:
		pe, err := edhoc.ParseError(msg[1:])
		if err != nil {
			return nil, fmt.Errorf("channel: peer sent an unreadable error message: %w", err)
		}
		return nil, pe
	}
	return nil, fmt.Errorf("%w: got 0x%02x, want 0x%02x", ErrUnexpectedMessage, msg[0], want)
}

func exporter(f func(uint64, []byte, int) ([]byte, error)) frame.Exporter {
	return func(label uint, context []byte, length int) ([]byte, error) {
		return f(uint64(label), context, length)
	}
}

func certOf(c edhoc.Credential) *cred.Cert {
	cert, _ := c.Info.(*cred.Cert)
	return cert
}

// tellPeer sends the EDHOC error message for a handshake failure of our own
// (best effort: the link may already be gone), and returns err. An error
// message that the peer sent us is not answered.
func tellPeer(ctx context.Context, t Transport, err error) error {
	var pe *edhoc.PeerError
	if !errors.As(err, &pe) {
		_ = t.Send(ctx, append([]byte{MsgEDHOCError}, edhoc.ErrorMessage(err)...))
	}
	return err
}
