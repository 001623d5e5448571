package lock

import (
	"errors"
	"fmt"
	"time"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
)

// Handle runs one request from an authenticated session and returns the
// encoded result. peerCert is the session peer's verified credential and
// peer its link. It never returns an error: every refusal is a status.
//
// The order (docs/protocol.md §13.2): parse; lockout; the session peer
// still installed (users) and not revoked; authorise (the session peer's
// permissions, or the signed command: credential, signature, role, lock
// ID, expiry, signer not revoked); for signed commands, command ID not
// executed before, counter above the signer's last, an unknown signer's
// not_after after the forget horizon; persist the counter with the command
// as pending BEFORE any effect; act; persist the outcome.
func (l *Lock) Handle(peerCert *cred.Cert, peer Peer, plaintext []byte) []byte {
	req, perr := command.ParseRequest(plaintext)
	l.mu.Lock()
	defer l.mu.Unlock()
	var res *command.Result
	if l.resetting {
		res = l.resultLocked(req.RequestID, command.StatusInternal)
		res.Detail = "resetting into the bootloader"
	} else if perr != nil {
		res = l.resultLocked(req.RequestID, command.StatusOf(perr))
		res.Detail = "malformed request"
	} else {
		l.signed = nil
		res = l.handleLocked(peerCert, peer, &req)
		l.signResultLocked(req.Op, res)
	}
	out, err := command.MarshalResult(req.Op, res)
	if err != nil {
		// Only a bug gets here; answer with the bare status.
		l.log.Error("encoding a result", "err", err)
		out, _ = command.MarshalResult(req.Op, l.resultLocked(req.RequestID, command.StatusInternal))
	}
	return out
}

// signResultLocked signs res, the result of a request for op, when it
// carries a command ID (docs/protocol.md §12.7.5): the statement binds
// this lock's ID, the command ID, op, status, lock state, the command's
// counter, the clock and the data. A failure (only a bug) leaves the
// result unsigned, which the operator sees as unverified; the outcome is
// still reported.
func (l *Lock) signResultLocked(op command.Op, res *command.Result) {
	ver := l.signed
	l.signed = nil
	if res.CommandID == nil || ver == nil {
		return
	}
	if err := command.SignResult(l.opts.Key, l.id[:], op, ver.Counter, res); err != nil {
		l.log.Error("signing a result", "err", err)
	}
}

// signerActor is the audit actor of a signed command: the signer's kid, or
// the fleet root's.
func signerActor(v *command.Verified) []byte {
	if v.Signer != nil {
		return v.Signer.KID
	}
	return v.RootKID
}

func actor(c *cred.Cert) []byte {
	if c == nil {
		return nil
	}
	return c.KID
}

func (l *Lock) refuse(res *command.Result, peerCert *cred.Cert, peer Peer, op command.Op, err error) *command.Result {
	res.Status = command.StatusOf(err)
	res.Detail = detail(err)
	now := l.nowLocked()
	switch res.Status {
	case command.StatusForbidden, command.StatusBadSignature, command.StatusSignerRejected,
		command.StatusWrongLock, command.StatusReplay, command.StatusMalformed:
		// An authenticated session's failure: its address backs off, the
		// global throttle (for unauthenticated handshakes) does not move.
		if until := l.lo.failAuthenticated(peer.Address, now); until.After(now) {
			l.record(Event{Kind: audit.EventLockout, Actor: addrActor(peer.Address), Status: uint16(min(until.Sub(now)/time.Second, 65535))})
		}
	}
	l.record(Event{Kind: audit.EventCommandRefused, Actor: actor(peerCert), Op: op, CommandID: res.CommandID, Status: uint16(res.Status)})
	l.log.Info("command refused", "peer", peer.Address, "op", op, "status", res.Status, "err", err)
	return res
}

// detail is a short, secret-free reason for the operator.
func detail(err error) string {
	s := err.Error()
	if len(s) > 96 {
		s = s[:96]
	}
	return s
}

func (l *Lock) handleLocked(peerCert *cred.Cert, peer Peer, req *command.Request) *command.Result {
	res := l.resultLocked(req.RequestID, command.StatusOK)
	now := l.nowLocked()
	if until := l.lo.peerUntil(peer.Address, now); !until.IsZero() {
		res.Status = command.StatusLockedOut
		res.Detail = command.LockedOutDetail(until.Sub(now))
		return res
	}
	if peerCert != nil && peerCert.Kind == cred.KindUser {
		// A user removed (or expired) during its session loses it at once.
		if _, u := l.findUser(peerCert.Subject); u == nil || !u.PublicKey.Equal(peerCert.PublicKey) || !u.validAt(now) {
			return l.refuse(res, peerCert, peer, req.Op, fmt.Errorf("%w: user %q no longer holds a valid slot", command.ErrForbidden, peerCert.Subject))
		}
	}
	if err := l.checkRevokedLocked(peerCert); err != nil {
		// Revoked during its session (set-revocations): it loses it at once.
		return l.refuse(res, peerCert, peer, req.Op, fmt.Errorf("%w: session peer: %w", command.ErrForbidden, err))
	}
	v := command.Verifier{Roots: l.opts.Roots, LockID: l.id, Now: l.nowLocked}
	ver, err := v.Authorize(req, peerCert)
	if err != nil {
		return l.refuse(res, peerCert, peer, req.Op, err)
	}
	if ver != nil {
		if err := l.checkRevokedLocked(ver.Signer); err != nil {
			return l.refuse(res, peerCert, peer, req.Op, fmt.Errorf("%w: %w", command.ErrSignerRejected, err))
		}
	}
	args := req.Args
	if ver == nil {
		return l.execute(res, peerCert, peer, req.Op, &args, nil)
	}
	res.CommandID = ver.CommandID[:]
	l.signed = ver // every result with a command ID is signed (signResultLocked)
	if prev, ok := l.st.recent(ver.CommandID[:]); ok {
		// Executed (or interrupted) before: report, never run again.
		res.Status = command.StatusDuplicateCommand
		res.Data, _ = command.EncodeDuplicate(prev.Status)
		l.record(Event{Kind: audit.EventCommandRefused, Actor: signerActor(ver), Op: req.Op, CommandID: res.CommandID, Status: uint16(res.Status)})
		return res
	}
	last, known := l.st.Counters[ver.SignerKey]
	if known && ver.Counter <= last.Counter {
		return l.refuse(res, peerCert, peer, req.Op,
			fmt.Errorf("%w: counter %d, last seen %d", command.ErrReplay, ver.Counter, last.Counter))
	}
	if !known && l.st.forgotten(ver.Body.NotAfter) {
		// The clock may have moved back since this signer was forgotten.
		return l.refuse(res, peerCert, peer, req.Op,
			fmt.Errorf("%w: signer unknown and not_after %d not after the forget horizon %d; sign with a later not_after",
				command.ErrReplay, ver.Body.NotAfter.Unix(), l.st.ForgetHorizon))
	}
	if !known && !l.st.makeRoom(now) {
		return l.refuse(res, peerCert, peer, req.Op, fmt.Errorf("%w: signer table full", command.ErrInternal))
	}
	// Persist the counter, with the command pending, BEFORE any effect.
	prevState := l.st
	na := ver.Body.NotAfter.Unix()
	if known && last.NotAfter > na {
		na = last.NotAfter
	}
	l.st.Counters = cloneCounters(l.st.Counters)
	l.st.Counters[ver.SignerKey] = signerState{Counter: ver.Counter, NotAfter: na}
	l.st.Pending = &commandRecord{ID: ver.CommandID[:], Op: req.Op}
	if err := l.saveState(); err != nil {
		l.st = prevState
		return l.refuse(res, peerCert, peer, req.Op, fmt.Errorf("%w: %w", command.ErrInternal, err))
	}
	args = ver.Body.Args
	res = l.execute(res, peerCert, peer, req.Op, &args, ver)
	l.st.Pending = nil
	l.st.remember(commandRecord{ID: ver.CommandID[:], Op: req.Op, Status: res.Status})
	l.st.Bolt = l.bolt
	if err := l.saveState(); err != nil {
		// The effect happened; the record of it could not be written. At
		// the next boot the command reads as interrupted, never re-run.
		l.log.Error("saving a command's outcome", "err", err)
	}
	return res
}

func cloneCounters(m map[string]signerState) map[string]signerState {
	c := make(map[string]signerState, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// execute performs an authorised operation.
func (l *Lock) execute(res *command.Result, peerCert *cred.Cert, peer Peer, op command.Op, a *command.Args, ver *command.Verified) *command.Result {
	who := actor(peerCert)
	if ver != nil {
		who = signerActor(ver)
	}
	ok := func(kind audit.Event) *command.Result {
		res.Status = command.StatusOK
		l.record(Event{Kind: kind, Actor: who, Op: op, CommandID: res.CommandID})
		return res
	}
	fail := func(err error) *command.Result { return l.refuse(res, peerCert, peer, op, err) }
	now := l.nowLocked()

	switch op {
	case command.OpLock, command.OpUnlock:
		target := command.StateLocked
		if op == command.OpUnlock {
			target = command.StateUnlocked
		}
		if err := l.opts.Actuator.Move(target); err != nil {
			l.bolt = command.StateJammed
			res.LockState = l.bolt
			return fail(fmt.Errorf("%w: %w", command.ErrJammed, err))
		}
		l.bolt = target
		res.LockState = target
		return ok(audit.EventCommandOK)

	case command.OpStatus:
		users := 0
		for _, u := range l.users {
			if u != nil {
				users++
			}
		}
		var until time.Time
		if u := l.lo.until(peer.Address, now); !u.IsZero() {
			until = u
		}
		res.Data, _ = command.EncodeLockStatus(command.LockStatus{LockoutUntil: until,
			Failures: uint32(l.lo.failures(peer.Address)), Users: uint8(users), Slots: uint8(l.slots),
			Revocations: l.revocationSerial()})
		return ok(audit.EventCommandOK)

	case command.OpAddUser:
		slot, _ := l.findUser(a.UserID)
		if slot < 0 {
			for i, u := range l.users {
				if u == nil {
					slot = i
					break
				}
			}
		}
		if slot < 0 {
			return fail(fmt.Errorf("%w: all %d slots are taken; remove a user first", command.ErrTableFull, l.slots))
		}
		u := &user{UserID: a.UserID, PublicKey: a.PublicKey, Role: a.Role,
			NotBefore: a.NotBefore.Unix(), NotAfter: a.NotAfter.Unix()}
		if err := l.putRecord(keySlotBase+uint16(slot), u); err != nil {
			return fail(fmt.Errorf("%w: %w", command.ErrInternal, err))
		}
		l.users[slot] = u
		return ok(audit.EventUserAdded)

	case command.OpRemoveUser:
		slot, _ := l.findUser(a.UserID)
		if slot < 0 {
			return fail(fmt.Errorf("%w: %q", command.ErrNoSuchUser, a.UserID))
		}
		if err := l.store.Delete(keySlotBase + uint16(slot)); err != nil {
			return fail(fmt.Errorf("%w: %w", command.ErrInternal, err))
		}
		l.users[slot] = nil
		return ok(audit.EventUserRemoved)

	case command.OpListUsers:
		var list []command.UserEntry
		for i, u := range l.users {
			if u != nil {
				list = append(list, command.UserEntry{Slot: uint8(i), UserID: u.UserID, Role: u.Role,
					NotBefore: time.Unix(u.NotBefore, 0).UTC(), NotAfter: time.Unix(u.NotAfter, 0).UTC(),
					KeyID: command.KeyID(u.PublicKey)})
			}
		}
		res.Data, _ = command.EncodeUsers(list)
		return ok(audit.EventCommandOK)

	case command.OpAllowBond:
		d := a.BondWindow()
		if d > MaxBondWindow {
			d = MaxBondWindow
		}
		pk, err := drawPasskey(l.rnd)
		if err != nil {
			return fail(fmt.Errorf("%w: %w", command.ErrInternal, err))
		}
		l.window = bondWindow{addr: peer.Address, passkey: pk, until: now.Add(d)}
		res.Data, _ = command.EncodeBondWindow(command.BondWindow{Passkey: pk, WindowSeconds: uint8(d / time.Second), Peer: peer.Address})
		return ok(audit.EventBondWindowOpened)

	case command.OpClearBonds:
		l.bonds = map[string]bool{}
		l.window = bondWindow{}
		if err := l.saveBonds(); err != nil {
			return fail(fmt.Errorf("%w: %w", command.ErrInternal, err))
		}
		return ok(audit.EventBondsCleared)

	case command.OpReadAudit:
		if l.opts.Audit == nil {
			return fail(fmt.Errorf("%w: this lock keeps no audit log", command.ErrInternal))
		}
		n := a.Max
		if n == 0 || n > audit.MaxPageEntries {
			n = audit.MaxPageEntries
		}
		d, err := l.opts.Audit.Page(a.FromSeq, n)
		// A signed result must fit one frame with its signature: fewer
		// entries then (docs/protocol.md §12.7.5); the reader goes on
		// from the page's last entry as usual.
		for ver != nil && err == nil && len(d) > command.MaxSignedResultData && n > 1 {
			n--
			d, err = l.opts.Audit.Page(a.FromSeq, n)
		}
		if err != nil {
			return fail(fmt.Errorf("%w: %w", command.ErrInternal, err))
		}
		res.Data = d
		return ok(audit.EventCommandOK)

	case command.OpSetRevocations:
		return l.setRevocations(res, fail, ok, a.Revocations)

	case command.OpEnterDFU:
		return l.enterDFU(res, fail, ok, a.InitHash)

	case command.OpSetTime:
		rtc := time.Now()
		if l.opts.RTC != nil {
			rtc = l.opts.RTC()
		}
		l.st.ClockOffset = a.Time.Unix() - rtc.Unix()
		l.st.ClockFloor = a.Time.Unix()
		res.Clock = a.Time.UTC()
		return ok(audit.EventTimeSet)
	}
	return fail(errors.New("unknown op"))
}
