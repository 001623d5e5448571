package lock

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
)

// keyRevocations holds the fleet revocation list the lock trusts, as the
// fleet root signed it (docs/protocol.md §13.9, §14.1). It is one flash
// record of at most cred.MaxRevocationsSize bytes; the parsed kids take
// cred.MaxRevoked * 8 = 512 bytes of RAM.
const keyRevocations uint16 = 0x0003

// loadRevocations reads the stored list and verifies it again under the
// lock's roots. A stored list that no longer verifies fails the boot, like
// any other corrupt record: forgetting revocations silently would re-admit
// revoked credentials.
func (l *Lock) loadRevocations() error {
	var raw []byte
	if err := l.getRecord(keyRevocations, &raw); err != nil {
		return err
	}
	if raw == nil {
		return nil
	}
	r, err := cred.ParseRevocations(raw, l.opts.Roots)
	if err != nil {
		return fmt.Errorf("lock: record %#04x (revocation list): %w", keyRevocations, err)
	}
	l.revoked = r
	return nil
}

// revocationSerial is the serial of the list held, 0 for none.
func (l *Lock) revocationSerial() uint64 {
	if l.revoked == nil {
		return 0
	}
	return l.revoked.Serial
}

// RevocationSerial returns the serial of the revocation list the lock
// holds; 0 if it holds none.
func (l *Lock) RevocationSerial() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.revocationSerial()
}

// checkRevokedLocked refuses a credential whose kid the held list revokes.
func (l *Lock) checkRevokedLocked(c *cred.Cert) error {
	if c != nil && l.revoked.IsRevoked(c.KID) {
		return fmt.Errorf("%v credential %q (kid %x) is revoked by revocation list %d", c.Kind, c.Subject, c.KID, l.revoked.Serial)
	}
	return nil
}

// setRevocations runs set-revocations: verify the list under the lock's
// roots; keep it only if its serial is above the one held (an older list
// never replaces a newer one); write it to flash before using it.
func (l *Lock) setRevocations(res *command.Result, fail func(error) *command.Result, ok func(audit.Event) *command.Result, raw []byte) *command.Result {
	r, err := cred.ParseRevocations(raw, l.opts.Roots)
	if err != nil {
		switch {
		case errors.Is(err, cred.ErrUnknownRoot):
			return fail(fmt.Errorf("%w: %w", command.ErrSignerRejected, err))
		case errors.Is(err, cred.ErrBadSignature):
			return fail(fmt.Errorf("%w: %w", command.ErrBadSignature, err))
		}
		return fail(fmt.Errorf("%w: %w", command.ErrMalformed, err))
	}
	held := l.revocationSerial()
	switch {
	case r.Serial < held:
		return fail(fmt.Errorf("%w: revocation list %d is older than the one held (%d)", command.ErrReplay, r.Serial, held))
	case r.Serial == held && !bytes.Equal(r.Raw, l.revoked.Raw):
		return fail(fmt.Errorf("%w: another revocation list %d is already held", command.ErrReplay, r.Serial))
	case r.Serial == held:
		return ok(audit.EventCommandOK) // the same list again: nothing to do
	}
	if err := l.putRecord(keyRevocations, r.Raw); err != nil {
		return fail(fmt.Errorf("%w: %w", command.ErrInternal, err))
	}
	l.revoked = r
	l.log.Warn("revocation list installed", "serial", r.Serial, "revoked", len(r.Revoked))
	return ok(audit.EventCommandOK)
}
