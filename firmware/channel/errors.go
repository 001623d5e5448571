package channel

import "errors"

// Sentinel errors. Errors from the layers below (edhoc, cred, frame,
// fragment) are wrapped unchanged, so their own sentinels match too.
var (
	// ErrUnexpectedMessage is returned when the peer sends a message whose
	// type byte is not the one the protocol state expects (for example a
	// protected frame before the handshake completed).
	ErrUnexpectedMessage = errors.New("channel: unexpected message type")
	// ErrEmptyMessage is returned when a transport delivers a message
	// without even a type byte.
	ErrEmptyMessage = errors.New("channel: empty message")
	// ErrPeerClosed is returned by Recv after the peer sent an
	// authenticated Close frame.
	ErrPeerClosed = errors.New("channel: peer closed the session")
	// ErrConfig is returned by Dial and Accept when the Config lacks a
	// credential, a key or a verifier.
	ErrConfig = errors.New("channel: incomplete configuration")
)
