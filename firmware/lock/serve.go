package lock

import (
	"context"
	"errors"
	"fmt"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/edhoc"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/frame"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
)

// Transport carries whole messages of one BLE connection
// (channel.FragmentTransport over GATT).
type Transport = channel.Transport

// errTransport marks a failure of the connection itself: Serve returns.
var errTransport = errors.New("lock: connection failed")

// SessionIdle is how long a session waits for the next request.
const SessionIdle = frame.DefaultIdleTimeout

func isFragmentErr(err error) bool {
	for _, e := range []error{fragment.ErrShortFragment, fragment.ErrMessageTooLarge, fragment.ErrBadLength,
		fragment.ErrConflict, fragment.ErrDiscarded, fragment.ErrTooManyInFlight, fragment.ErrTimeout} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (l *Lock) channelConfig() channel.Config {
	return channel.Config{
		Cert: l.opts.Cert, Key: l.opts.Key, Resolver: resolver{l},
		// The idle timer runs on the monotonic clock: set-time moves the
		// lock's clock, and must not make a session look idle for days.
		Frame: frame.Options{}, Rand: l.opts.Rand,
	}
}

// serveOne waits for one message_1 and, if a handshake succeeds, serves
// the session. A nil error means "go on with this connection".
func (l *Lock) serveOne(ctx context.Context, t Transport, peer Peer) error {
	if l.Resetting() {
		return ErrReset
	}
	msg, err := t.Recv(ctx)
	if err != nil {
		if isFragmentErr(err) {
			return nil
		}
		return fmt.Errorf("%w: %w", errTransport, err)
	}
	if len(msg) == 0 || msg[0] != channel.MsgEDHOC1 {
		return nil // §3.3: dropped in CONNECTED
	}
	now := l.Now()
	if until := l.lo.admit(peer.Address, l.reserved(peer), now); !until.IsZero() {
		pe := &edhoc.ProtocolError{Code: edhoc.ErrCodeUnspecified,
			Info: fmt.Sprintf("locked out for %d s", int(until.Sub(now).Seconds())+1)}
		_ = t.Send(ctx, append([]byte{channel.MsgEDHOCError}, pe.Message()...))
		return nil
	}
	hctx, cancel := context.WithTimeout(ctx, channel.DefaultHandshakeTimeout)
	conn, err := channel.AcceptMessage1(hctx, t, l.channelConfig(), msg[1:])
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l.handshakeFailed(peer, err)
		return nil
	}
	l.mu.Lock()
	l.record(Event{Kind: audit.EventHandshakeOK, Actor: conn.Peer().KID})
	l.mu.Unlock()
	return l.serveSession(ctx, conn, peer)
}

func (l *Lock) handshakeFailed(peer Peer, err error) {
	// Only a peer that tried and failed to authenticate is backed off; a
	// broken link is not its fault.
	if errors.Is(err, edhoc.ErrCredentialRejected) || errors.Is(err, edhoc.ErrAuthentication) ||
		errors.Is(err, edhoc.ErrUnknownCredential) || errors.Is(err, edhoc.ErrMalformed) || errors.Is(err, edhoc.ErrInvalidKey) {
		l.mu.Lock()
		l.lo.fail(peer.Address, l.nowLocked())
		l.record(Event{Kind: audit.EventHandshakeFailed, Actor: addrActor(peer.Address)})
		l.mu.Unlock()
	}
	l.log.Info("handshake refused", "peer", peer.Address, "err", err)
}

// serveSession answers requests until the session ends.
func (l *Lock) serveSession(ctx context.Context, conn *channel.Conn, peer Peer) error {
	defer conn.Session().Close()
	for {
		rctx, cancel := context.WithTimeout(ctx, SessionIdle)
		typ, pt, err := conn.Recv(rctx)
		cancel()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, channel.ErrPeerClosed),
			errors.Is(err, frame.ErrClosed), errors.Is(err, frame.ErrIdle), errors.Is(err, frame.ErrTooManyFailures):
			return nil
		case isFragmentErr(err), errors.Is(err, channel.ErrUnexpectedMessage), errors.Is(err, channel.ErrEmptyMessage):
			continue
		case errors.Is(err, frame.ErrReplay), errors.Is(err, frame.ErrStale), errors.Is(err, frame.ErrAuth),
			errors.Is(err, frame.ErrBadType), errors.Is(err, frame.ErrShortFrame), errors.Is(err, frame.ErrFrameTooLarge):
			continue // refused and counted by the session (§6.8)
		default:
			return fmt.Errorf("%w: %w", errTransport, err)
		}
		if typ != frame.TypeRequest {
			continue
		}
		out := l.Handle(conn.Peer(), peer, pt)
		if err := conn.Send(ctx, frame.TypeResponse, out); err != nil {
			return fmt.Errorf("%w: %w", errTransport, err)
		}
		if reset, resetting := l.takeReset(); reset {
			// The result of enter-dfu is on its way; the lock resets into
			// its bootloader (the SDK's NVIC_SystemReset after the
			// buttonless service's indication).
			l.opts.Bootloader.ResetIntoBootloader()
			return ErrReset
		} else if resetting {
			return ErrReset
		}
	}
}

// resolver checks a peer's credential with the lock's verifier, against
// the revocation list held (§13.9) and, for a user, against the user
// table: a user must hold a slot with the same public key, inside the
// slot's validity window by the lock's clock.
type resolver struct{ l *Lock }

func (r resolver) ResolveCredential(idCred []byte) (edhoc.Credential, error) {
	c, err := r.l.verify.ResolveCredential(idCred)
	if err != nil {
		return c, err
	}
	cert, _ := c.Info.(*cred.Cert)
	if cert == nil {
		return c, nil
	}
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	if err := r.l.checkRevokedLocked(cert); err != nil {
		return edhoc.Credential{}, fmt.Errorf("%w: %w", edhoc.ErrCredentialRejected, err)
	}
	if cert.Kind != cred.KindUser {
		return c, nil
	}
	_, u := r.l.findUser(cert.Subject)
	switch {
	case u == nil:
		return edhoc.Credential{}, fmt.Errorf("%w: user %q has no slot on this lock", edhoc.ErrCredentialRejected, cert.Subject)
	case !u.PublicKey.Equal(cert.PublicKey):
		return edhoc.Credential{}, fmt.Errorf("%w: user %q holds another key on this lock", edhoc.ErrCredentialRejected, cert.Subject)
	case !u.validAt(r.l.nowLocked()):
		return edhoc.Credential{}, fmt.Errorf("%w: user %q is outside its validity window on this lock", edhoc.ErrCredentialRejected, cert.Subject)
	}
	return c, nil
}

func (l *Lock) findUser(id string) (int, *user) {
	for i, u := range l.users {
		if u != nil && u.UserID == id {
			return i, u
		}
	}
	return -1, nil
}
