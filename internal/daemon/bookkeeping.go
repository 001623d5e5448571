package daemon

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet"
)

// bookkeeping wraps the link to locks and keeps the database's picture of
// each lock current from what passes through it: the users operators
// asked for (before an add-user or remove-user goes out) and what the lock
// confirmed; the lock's battery, firmware and clock offset from every
// answer; and the signer's counter the lock accepted, which the intake
// uses to refuse a stale counter before any radio work. The users are
// written at once; the lock's facts are kept in memory and written with
// the last-seen values every SeenFlushInterval (see docs/database.md). None
// of this can fail a command: a bookkeeping error is logged and the
// command goes on.
type bookkeeping struct {
	link  fleet.Link
	db    *bonds.DB
	roots func() cred.Roots // the fleet roots trusted now (trust.Roots)
	now   func() time.Time
	log   *slog.Logger
}

func (b *bookkeeping) Dial(ctx context.Context, id bonds.LockID) (fleet.Session, error) {
	s, err := b.link.Dial(ctx, id)
	if err != nil {
		return nil, err
	}
	bs := &bookSession{b: b, id: id, s: s}
	if h, ok := s.(fleet.Handshaker); ok {
		return &bookHandshakeSession{bs, h}, nil
	}
	return bs, nil
}

// PeerKey passes the lock's key through (fleet.PeerKeyer), for the
// signature of signed audit pages.
func (s *bookSession) PeerKey() ed25519.PublicKey {
	if pk, ok := s.s.(fleet.PeerKeyer); ok {
		return pk.PeerKey()
	}
	return nil
}

// ReadAudit passes read-audit through (fleet.AuditReader); it changes
// nothing of the lock's record. A session whose link cannot read audit
// logs says so with an error.
func (s *bookSession) ReadAudit(ctx context.Context, fromSeq uint64, max int) (*command.Result, error) {
	ar, ok := s.s.(fleet.AuditReader)
	if !ok {
		return nil, fmt.Errorf("bookkeeping: the link to %s cannot read audit logs", s.id)
	}
	return ar.ReadAudit(ctx, fromSeq, max)
}

type bookSession struct {
	b  *bookkeeping
	id bonds.LockID
	s  fleet.Session

	credDone bool // the lock's credential was looked at this session
}

// bookHandshakeSession keeps the inner session's Handshaker visible to the
// scheduler, so its handshake still overlaps the next connect.
type bookHandshakeSession struct {
	*bookSession
	h fleet.Handshaker
}

func (s *bookHandshakeSession) Handshake(ctx context.Context) error { return s.h.Handshake(ctx) }

func (s *bookSession) Close() error { return s.s.Close() }

func (s *bookSession) Do(ctx context.Context, op command.Op, signed []byte) (*command.Result, error) {
	var body *command.Body
	if signed != nil {
		if b, err := command.Peek(signed); err == nil {
			body = &b
		}
	}
	log := s.b.log.With("lock", s.id, "op", op)
	if body != nil && (op == command.OpAddUser || op == command.OpRemoveUser) {
		want := bonds.Present
		if op == command.OpRemoveUser {
			want = bonds.Absent
		}
		// The lock picks the slot; -1 until a list-users says which.
		if _, err := s.b.db.SetDesiredUser(ctx, s.id, body.Args.UserID, -1, want, bonds.CommandID(body.CommandID)); err != nil {
			log.Debug("bookkeeping: desired user not recorded", "err", err)
		}
	}
	r, err := s.s.Do(ctx, op, signed)
	if err != nil || r == nil {
		return r, err
	}
	s.record(ctx, op, signed, body, r, log)
	return r, nil
}

func (s *bookSession) record(ctx context.Context, op command.Op, signed []byte, body *command.Body, r *command.Result, log *slog.Logger) {
	var kid string
	var counter uint64
	if body != nil && (r.Status == command.StatusOK || r.Status == command.StatusDuplicateCommand) {
		// The lock accepted this signer's counter.
		kid, counter = s.b.signer(ctx, signed, body)
	}
	// The lock's facts are coalesced in memory and written with the
	// last-seen values (bonds.DB.UpdateLockFacts): no fsync per command.
	// Lock reads, the intake's counter check included, see them at once.
	f := bonds.LockFacts{Battery: int(r.Battery), Firmware: r.Firmware}
	if !r.Clock.IsZero() {
		f.ClockOffset, f.HasClock = r.Clock.Sub(s.b.now()).Truncate(time.Second), true
	}
	if kid != "" {
		f.Counters = map[string]uint64{kid: counter}
	}
	if err := s.b.db.UpdateLockFacts(s.id, f); err != nil {
		log.Debug("bookkeeping: lock record not updated", "err", err)
	}
	s.recordCredential(ctx, log)
	if body != nil && r.Status == command.StatusOK && (op == command.OpAddUser || op == command.OpRemoveUser) {
		got := bonds.Present
		if op == command.OpRemoveUser {
			got = bonds.Absent
		}
		if _, err := s.b.db.ConfirmUser(ctx, s.id, body.Args.UserID, got); err != nil {
			log.Debug("bookkeeping: confirmed user not recorded", "err", err)
		}
	}
}

// signer returns the signer key and counter of a signed command the lock
// accepted, from the form the intake verified (issue 14: a command's
// signature is verified once, at intake): the journal holds the very
// bytes it verified, with the signer it named (Command.Operator: the
// verified credential's subject, or the fleet root's signer key), and a
// credential's kid is a function of its kind (operator, the only kind that
// signs) and subject (cred.KID). The counter is the body's, of those same
// bytes. A command not in the journal with these bytes (it was not
// journaled by the intake) is verified here, as before: the lock having
// accepted it, with the clock just inside its validity.
func (b *bookkeeping) signer(ctx context.Context, signed []byte, body *command.Body) (kid string, counter uint64) {
	if e, err := b.db.Entry(ctx, bonds.CommandID(body.CommandID)); err == nil && e.Operator != "" && bytes.Equal(e.Payload, signed) {
		if strings.HasPrefix(e.Operator, command.RootKeyPrefix) {
			return e.Operator, body.Counter
		}
		if k, err := cred.KID(cred.KindOperator, e.Operator); err == nil {
			return hex.EncodeToString(k), body.Counter
		}
	}
	var roots cred.Roots // none: nothing verifies
	if b.roots != nil {
		roots = b.roots()
	}
	v := command.Verifier{Roots: roots, LockID: body.LockID, Now: func() time.Time { return body.NotAfter.Add(-time.Second) }}
	if ver, err := v.Verify(signed, body.Op); err == nil {
		return ver.SignerKey, ver.Counter
	}
	return "", 0
}

// recordCredential stores the lock's credential, as the lock proved it in
// the handshake, once per session and only when it differs from the one
// on record (first contact, or a re-issued credential): one write per
// lock, not per command.
func (s *bookSession) recordCredential(ctx context.Context, log *slog.Logger) {
	if s.credDone {
		return
	}
	pc, ok := s.s.(interface{ PeerCredential() []byte })
	if !ok {
		return
	}
	raw := pc.PeerCredential()
	if raw == nil {
		return
	}
	s.credDone = true
	l, err := s.b.db.Lock(ctx, s.id)
	if err == nil && bytes.Equal(l.Credential, raw) {
		return
	}
	if _, err := s.b.db.UpdateLock(ctx, s.id, func(l *bonds.Lock) error {
		l.Credential = bytes.Clone(raw)
		return nil
	}); err != nil {
		log.Debug("bookkeeping: lock credential not recorded", "err", err)
	}
}
