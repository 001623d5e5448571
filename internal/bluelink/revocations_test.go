package bluelink

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet"
)

// TestRevocationListCarriedToLock: after the handshake the link hands its
// newer revocation list to a lock that reports an older serial; the lock
// then refuses the revoked operator's command; the link remembers the
// lock's serial for the next session.
func TestRevocationListCarriedToLock(t *testing.T) {
	r := newRig(t, 1)
	raw, err := cred.IssueRevocations(r.fleet.Root, r.fleet.RootKID, 4, r.fleet.Now, [][]byte{r.op.Cert.KID})
	if err != nil {
		t.Fatal(err)
	}
	list, err := cred.ParseRevocations(raw, r.fleet.Roots)
	if err != nil {
		t.Fatal(err)
	}
	asked := 0
	r.link.opts.Revocations = func() *cred.Revocations { asked++; return list }
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	session := func() fleet.Session {
		s, err := r.link.Dial(ctx, r.ids[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := s.(fleet.Handshaker).Handshake(ctx); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := session()
	if got := r.locks[0].RevocationSerial(); got != 4 {
		t.Fatalf("lock's serial %d after the handshake, want 4", got)
	}
	res, err := s.Do(ctx, command.OpUnlock, r.signed(t, 0, command.OpUnlock, 1))
	if err != nil || res.Status != command.StatusSignerRejected {
		t.Fatalf("revoked operator's unlock: %v %v", res, err)
	}
	_ = s.Close()
	if r.link.lockSerial[r.ids[0]] != 4 {
		t.Fatalf("link's record of the lock's serial: %d", r.link.lockSerial[r.ids[0]])
	}
	s = session()
	_ = s.Close()
	if r.acts[0].Moves() != 0 {
		t.Fatal("the bolt moved")
	}
	if asked != 2 {
		t.Fatalf("list asked %d times, want once per session", asked)
	}
}

// TestAttackRevokedLockRefusedByGateway: a lock whose credential the fleet
// revoked (a cloned or stolen lock key) gets no session from the gateway.
func TestAttackRevokedLockRefusedByGateway(t *testing.T) {
	r := newRig(t, 1)
	lockKID := r.ids[0][:]
	raw, err := cred.IssueRevocations(r.fleet.Root, r.fleet.RootKID, 1, r.fleet.Now, [][]byte{lockKID})
	if err != nil {
		t.Fatal(err)
	}
	list, err := cred.ParseRevocations(raw, r.fleet.Roots)
	if err != nil {
		t.Fatal(err)
	}
	r.link.opts.Revocations = func() *cred.Revocations { return list }
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := r.link.Dial(ctx, r.ids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.(fleet.Handshaker).Handshake(ctx)
	if !errors.Is(err, ErrLockRevoked) || Retryable(err) {
		t.Fatalf("handshake with a revoked lock: %v (retryable %v)", err, Retryable(err))
	}
	if r.locks[0].RevocationSerial() != 0 {
		t.Fatal("the gateway handed its list to a lock it refuses")
	}
}
