package vectors

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/internal/dfuvectors"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
)

// CommandExample is one request the reference lock answered.
type CommandExample struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Peer        string `json:"session_peer"`
	Op          string `json:"op"`
	Signer      string `json:"signer,omitempty"`
	Body        Hex    `json:"signed_body,omitempty"`
	Signed      Hex    `json:"signed_command,omitempty"`
	Request     Hex    `json:"request"`
	Result      Hex    `json:"result"`
	Status      string `json:"status"`
	StatusCode  uint16 `json:"status_code"`
	// ResultStatement and ResultSignature are, for a result the lock
	// signed (one with a command ID, §12.7.5), the signed statement (the
	// COSE_Sign1 payload) and the signature (result key 10).
	ResultStatement Hex `json:"result_statement,omitempty"`
	ResultSignature Hex `json:"result_signature,omitempty"`
}

// Commands is firmware/testdata/commands.json.
type Commands struct {
	Description string           `json:"description"`
	Spec        string           `json:"spec"`
	Now         string           `json:"lock_clock"`
	Root        Root             `json:"fleet_root"`
	Lock        Identity         `json:"lock"`
	Gateway     Identity         `json:"gateway"`
	Operator    Identity         `json:"operator"`
	Admin       Identity         `json:"admin"`
	User        Identity         `json:"user"`
	Examples    []CommandExample `json:"examples"`
}

// seedStream is an endless deterministic byte stream (SHA-256 in counter
// mode over a label), for the lock's passkeys.
type seedStream struct {
	label string
	n     uint64
	buf   []byte
}

func (s *seedStream) Read(p []byte) (int, error) {
	for len(s.buf) < len(p) {
		h := sha256.Sum256(fmt.Appendf(nil, "%s/%d", s.label, s.n))
		s.n++
		s.buf = append(s.buf, h[:]...)
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func buildCommands(f *Fleet) (*Commands, error) {
	op, err := f.issue("operator", cred.Claims{Subject: "otto", Kind: cred.KindOperator, Role: cred.RoleOperator, Perms: cred.OperatorPerms})
	if err != nil {
		return nil, err
	}
	admin, err := f.issue("admin", cred.Claims{Subject: "alice", Kind: cred.KindOperator, Role: cred.RoleAdmin, Perms: cred.AdminPerms})
	if err != nil {
		return nil, err
	}
	user, err := f.issue("user", cred.Claims{Subject: "rider-0001", Kind: cred.KindUser, Role: cred.RoleRider, Perms: cred.RiderPerms})
	if err != nil {
		return nil, err
	}
	bl := &vectorBootloader{}
	l, err := lock.New(lock.Options{Cert: f.Lock.cert, Key: f.Lock.key, Roots: f.roots, Store: locktest.NewStore(), Bootloader: bl,
		Actuator: &locktest.Actuator{}, RTC: func() time.Time { return Now }, Rand: &seedStream{label: "lock rand"},
		// The refusals below would otherwise lock the gateway out (§13).
		Lockout: lock.LockoutPolicy{Free: 1000, GlobalFailures: 1000}})
	if err != nil {
		return nil, err
	}
	out := &Commands{
		Description: "Requests answered by the reference lock, in this order, on a lock with empty storage whose clock reads lock_clock. " +
			"Each request is the plaintext of a Request frame; each result the plaintext of the Response frame. " +
			"Signed commands are COSE_Sign1 by the named signer; Ed25519 is deterministic, so every byte is reproducible.",
		Spec: "docs/protocol.md §12, §13", Now: Now.Format(time.RFC3339),
		Root: f.Root, Lock: f.Lock, Gateway: f.Gateway, Operator: op, Admin: admin, User: user,
	}
	signers := map[string]Identity{"operator": op, "admin": admin}
	var n uint64
	body := func(o command.Op, a command.Args) command.Body {
		n++
		id := Seed(fmt.Sprintf("command id %d", n))
		return command.Body{LockID: l.ID(), Op: o, Args: a, CommandID: [16]byte(id[:16]), NotAfter: Now.Add(time.Hour), Counter: n}
	}
	type step struct {
		name, desc, signer string
		req                command.Request
		body               *command.Body
		tamper             bool
	}
	add := func(s step) error {
		ex := CommandExample{Name: s.name, Description: s.desc, Peer: "gateway " + f.Gateway.Subject, Op: s.req.Op.String(), Signer: s.signer}
		if s.body != nil {
			bb, err := command.MarshalBody(s.body)
			if err != nil {
				return err
			}
			ex.Body = bb
			var signed []byte
			if s.signer == "fleet root" {
				signed, err = command.SignAsRoot(f.rootKey, f.Root.KID, *s.body)
			} else {
				id := signers[s.signer]
				signed, err = command.Sign(id.key, id.Credential, *s.body)
			}
			if err != nil {
				return err
			}
			if s.tamper {
				i := bytes.Index(signed, bb)
				signed = bytes.Clone(signed)
				signed[i+len(bb)-1] ^= 0x01 // the last byte of the body: the counter
			}
			ex.Signed = signed
			s.req.Signed = signed
		}
		req, err := command.MarshalRequest(&s.req)
		if err != nil {
			return err
		}
		ex.Request = req
		ex.Result = l.Handle(f.Gateway.cert, lock.Peer{Address: "AA:BB:CC:00:00:01"}, req)
		r, err := command.ParseResult(s.req.Op, ex.Result)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		ex.Status, ex.StatusCode = r.Status.String(), uint16(r.Status)
		if r.Signature != nil {
			st, err := command.StatementOf(l.ID(), s.req.Op, s.body.Counter, r)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			if ex.ResultStatement, err = command.MarshalStatement(&st); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			if !bytes.Contains(r.Signature, ex.ResultStatement) {
				return fmt.Errorf("%s: the result signature does not hold the statement", s.name)
			}
			ex.ResultSignature = r.Signature
		}
		out.Examples = append(out.Examples, ex)
		return nil
	}
	b := func(o command.Op, a command.Args) *command.Body { x := body(o, a); return &x }
	unlock := b(command.OpUnlock, command.Args{})
	other := b(command.OpUnlock, command.Args{})
	other.LockID[7] ^= 0xff
	stale := b(command.OpLock, command.Args{})
	stale.Counter = 1
	expired := b(command.OpLock, command.Args{})
	expired.NotAfter = Now.Add(-time.Second)
	for _, s := range []step{
		{name: "status", desc: "A gateway asks for status on its own authority.", req: command.Request{Op: command.OpStatus, RequestID: 1}},
		{name: "signed unlock", desc: "An operator-signed unlock, carried by the gateway.", signer: "operator", req: command.Request{Op: command.OpUnlock, RequestID: 2}, body: unlock},
		{name: "replayed unlock", desc: "The same signed unlock again: duplicate_command with the original status {1: 0}; the bolt does not move.", signer: "operator", req: command.Request{Op: command.OpUnlock, RequestID: 3}, body: unlock},
		{name: "unsigned unlock", desc: "The gateway tries to unlock on its own authority: forbidden.", req: command.Request{Op: command.OpUnlock, RequestID: 4}},
		{name: "lower counter", desc: "A new command ID whose counter (1) is not above the operator's last accepted one (1): replay.", signer: "operator", req: command.Request{Op: command.OpLock, RequestID: 5}, body: stale},
		{name: "another lock", desc: "A command signed for another lock ID: wrong_lock.", signer: "operator", req: command.Request{Op: command.OpUnlock, RequestID: 6}, body: other},
		{name: "expired", desc: "A command whose not_after has passed by the lock's clock: expired.", signer: "operator", req: command.Request{Op: command.OpLock, RequestID: 7}, body: expired},
		{name: "tampered", desc: "A signed lock whose body was changed after signing (last byte flipped): bad_signature.", signer: "operator", req: command.Request{Op: command.OpLock, RequestID: 8}, body: b(command.OpLock, command.Args{}), tamper: true},
		{name: "add-user", desc: "An admin-signed add-user of rider-0001.", signer: "admin", req: command.Request{Op: command.OpAddUser, RequestID: 9},
			body: b(command.OpAddUser, command.Args{UserID: user.Subject, PublicKey: user.cert.PublicKey, Role: cred.RoleRider, NotBefore: Now, NotAfter: Now.AddDate(0, 1, 0)})},
		{name: "add-user by an operator", desc: "The operator role may not add users: forbidden.", signer: "operator", req: command.Request{Op: command.OpAddUser, RequestID: 10},
			body: b(command.OpAddUser, command.Args{UserID: "rider-0002", PublicKey: user.cert.PublicKey, Role: cred.RoleRider, NotBefore: Now, NotAfter: Now.AddDate(0, 1, 0)})},
		{name: "list-users", desc: "An admin-signed list-users.", signer: "admin", req: command.Request{Op: command.OpListUsers, RequestID: 11}, body: b(command.OpListUsers, command.Args{})},
		{name: "allow-bond", desc: "The gateway opens a 30 s bond window for its own address; the passkey comes from the lock's RNG (here a fixed stream).", req: command.Request{Op: command.OpAllowBond, RequestID: 12, Args: command.Args{WindowSeconds: 30}}},
		{name: "set-time by the fleet root", desc: "The fleet root moves the clock one hour on.", signer: "fleet root", req: command.Request{Op: command.OpSetTime, RequestID: 13}, body: b(command.OpSetTime, command.Args{Time: Now.Add(time.Hour)})},
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	// Revocation (§5.11, §13.9): the fleet root revokes the operator; the
	// gateway delivers the list; the operator's next command is refused.
	list, err := cred.IssueRevocations(f.rootKey, f.Root.KID, 1, Now, [][]byte{op.cert.KID})
	if err != nil {
		return nil, err
	}
	late := b(command.OpLock, command.Args{})
	late.NotAfter = Now.Add(2 * time.Hour) // the clock moved one hour on (set-time)
	for _, s := range []step{
		{name: "set-revocations", desc: "The gateway delivers a fleet revocation list (serial 1) that revokes the operator otto.", req: command.Request{Op: command.OpSetRevocations, RequestID: 14, Args: command.Args{Revocations: list}}},
		{name: "status after set-revocations", desc: "Status reports the serial of the list the lock holds (key 5).", req: command.Request{Op: command.OpStatus, RequestID: 15}},
		{name: "revoked operator", desc: "A lock signed by the revoked operator: signer_rejected.", signer: "operator", req: command.Request{Op: command.OpLock, RequestID: 16}, body: late},
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	// Firmware update (§13.10): enter-dfu names the init packet of
	// firmware/testdata/dfu/package.zip. The bolt is still open from
	// example 2.
	initHash, err := dfuInitHash()
	if err != nil {
		return nil, err
	}
	later := func(o command.Op, a command.Args) *command.Body {
		x := b(o, a)
		x.NotAfter = Now.Add(2 * time.Hour)
		return x
	}
	for _, s := range []step{
		{name: "enter-dfu while unlocked", desc: "An admin-signed enter-dfu while the bolt is open (the bike in use): not_ready; the counter is spent.", signer: "admin", req: command.Request{Op: command.OpEnterDFU, RequestID: 17},
			body: later(command.OpEnterDFU, command.Args{InitHash: initHash[:]})},
		{name: "lock by an admin", desc: "An admin-signed lock.", signer: "admin", req: command.Request{Op: command.OpLock, RequestID: 18}, body: later(command.OpLock, command.Args{})},
		{name: "enter-dfu", desc: "An admin-signed enter-dfu naming the SHA-256 of the init packet of firmware/testdata/dfu/package.zip: ok; the lock writes the hash to its bootloader's settings and resets into it once the result is sent.", signer: "admin", req: command.Request{Op: command.OpEnterDFU, RequestID: 19},
			body: later(command.OpEnterDFU, command.Args{InitHash: initHash[:]})},
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	if !bl.set || bl.hash != initHash || !l.Resetting() {
		return nil, fmt.Errorf("enter-dfu: the bootloader got %x (set %v), resetting %v", bl.hash, bl.set, l.Resetting())
	}
	return out, nil
}

// vectorBootloader is the vectors lock's bootloader: it keeps the hash
// enter-dfu names; the lock never resets (Handle, not Serve).
type vectorBootloader struct {
	hash [32]byte
	set  bool
}

func (v *vectorBootloader) AuthoriseDFU(h [32]byte) error { v.hash, v.set = h, true; return nil }
func (v *vectorBootloader) ResetIntoBootloader()          {}

// dfuInitHash is the SHA-256 of the init packet of the DFU test vectors'
// package (firmware/testdata/dfu/package.zip).
func dfuInitHash() ([32]byte, error) {
	key, err := dfuvectors.Key("fleet dfu key")
	if err != nil {
		return [32]byte{}, err
	}
	z, err := dfu.Generate(dfuvectors.Spec(key))
	if err != nil {
		return [32]byte{}, err
	}
	p, err := dfu.Parse(z, dfu.Limits{})
	if err != nil {
		return [32]byte{}, err
	}
	return p.Images[0].InitHash(), nil
}
