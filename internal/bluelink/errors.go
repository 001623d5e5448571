package bluelink

import "errors"

var (
	// ErrBondPeer is returned when the link did not attempt a bonding
	// because the lock opened its bond window for another address than our
	// adapter's: a device relaying the link in the middle would learn the
	// passkey from a passkey-entry pairing with it, so the gateway does not
	// pair.
	ErrBondPeer = errors.New("bluelink: the bond window is not open for our adapter")

	// ErrRefused is returned (inside a *RefusedError) when the device
	// dialled for a lock did not prove that lock's identity in the
	// handshake: the gateway refused its credential (docs/protocol.md §5.8),
	// and by Dial when every device advertising the lock's ID was refused
	// a short while ago.
	ErrRefused = errors.New("bluelink: device refused: it did not prove the lock's identity")

	// ErrImpostor is returned (inside a *RefusedError, with ErrRefused)
	// when the device advertising a lock's ID proved a genuine credential
	// of another lock: a key taken from one lock used to pose as another.
	ErrImpostor = errors.New("bluelink: impostor: the device proved another lock's credential")
)

// ErrLockRevoked is returned by Handshake when the lock's credential is
// revoked by the fleet revocation list (Options.Revocations): the gateway
// does not talk to it. Not retryable.
var ErrLockRevoked = errors.New("bluelink: the lock's credential is revoked")
