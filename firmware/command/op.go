package command

import (
	"fmt"

	"github.com/gatewayd/gatewayd/firmware/cred"
)

// Op is an operation code (request key 1, body key 2).
type Op uint8

// Operation codes. The values are fixed by the spec; 0 and values above 11
// are unknown (status unknown_op).
const (
	OpLock       Op = 1  // lock the bike
	OpUnlock     Op = 2  // unlock the bike
	OpStatus     Op = 3  // report state, battery, clock and lockout
	OpAddUser    Op = 4  // install a user (rider) in a slot
	OpRemoveUser Op = 5  // revoke a user
	OpListUsers  Op = 6  // list the installed users
	OpAllowBond  Op = 7  // open a BLE bond window for the session peer
	OpClearBonds Op = 8  // forget every BLE bond
	OpReadAudit  Op = 9  // read audit log entries
	OpSetTime    Op = 10 // set the lock's clock
	// OpSetRevocations hands the lock a newer fleet revocation list
	// (docs/protocol.md §5.11, §13.9). The list is self-authenticating (the
	// fleet root signed it), so any authenticated peer may deliver it: it
	// needs no permission bit and is never a signed command.
	OpSetRevocations Op = 11
	// OpEnterDFU authorises one firmware update: the lock answers, then
	// resets into its bootloader, which executes only the init packet
	// whose SHA-256 the command names (docs/protocol.md §12.4, docs/dfu.md).
	// Only an admin whose credential holds every permission of its role
	// may sign it ([AdminOnly]); it is never unsigned.
	OpEnterDFU Op = 12

	maxOp = OpEnterDFU
)

// opInfo is the one table of per-operation facts.
type opInfo struct {
	name string
	perm cred.Perm
	// signed: a request for this op must carry a signed command, except
	// lock and unlock from a user over its own session.
	signed bool
	// data: a successful result carries data (key 9).
	data bool
	// args lists the op's argument table (see args.go).
	args []argField
	// open: any authenticated peer may run it, unsigned, with no
	// permission bit (set-revocations, whose argument carries its own
	// authority).
	open bool
	// admin: no permission bit of its own; only a signer of the admin
	// role whose effective permissions are the whole admin cap may sign
	// it (enter-dfu).
	admin bool
}

var ops = [...]opInfo{
	OpLock:           {name: "lock", perm: cred.PermLock, signed: true},
	OpUnlock:         {name: "unlock", perm: cred.PermUnlock, signed: true},
	OpStatus:         {name: "status", perm: cred.PermStatus, data: true},
	OpAddUser:        {name: "add-user", perm: cred.PermAddUser, signed: true, args: addUserArgs},
	OpRemoveUser:     {name: "remove-user", perm: cred.PermRemoveUser, signed: true, args: removeUserArgs},
	OpListUsers:      {name: "list-users", perm: cred.PermListUsers, data: true},
	OpAllowBond:      {name: "allow-bond", perm: cred.PermAllowBond, data: true, args: allowBondArgs},
	OpClearBonds:     {name: "clear-bonds", perm: cred.PermClearBonds, signed: true},
	OpReadAudit:      {name: "read-audit", perm: cred.PermReadAudit, data: true, args: readAuditArgs},
	OpSetTime:        {name: "set-time", perm: cred.PermSetTime, signed: true, args: setTimeArgs},
	OpSetRevocations: {name: "set-revocations", args: setRevocationsArgs, open: true},
	OpEnterDFU:       {name: "enter-dfu", signed: true, args: enterDFUArgs, admin: true},
}

// Valid reports whether o is a defined operation code.
func (o Op) Valid() bool { return o >= OpLock && o <= maxOp }

// String returns the op's spec name ("unlock", "add-user", ...), or "op(N)"
// for an undefined code.
func (o Op) String() string {
	if o.Valid() {
		return ops[o].name
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// ParseOp returns the op whose spec name is name ("unlock", "add-user",
// ...), as String gives it; ok is false for any other name.
func ParseOp(name string) (op Op, ok bool) {
	for o := OpLock; o.Valid(); o++ {
		if ops[o].name == name {
			return o, true
		}
	}
	return 0, false
}

// Perm returns the permission bit of firmware/cred that allows o (PermLock
// for OpLock ... PermSetTime for OpSetTime), or 0 for an undefined code and
// for set-revocations ([Op.Open]) and enter-dfu ([Op.AdminOnly]);
// [cred.Cert.Allows] never grants 0.
func (o Op) Perm() cred.Perm {
	if o.Valid() {
		return ops[o].perm
	}
	return 0
}

// AdminOnly reports whether o has no permission bit of its own and may be
// signed only by an operator credential of the admin role whose effective
// permissions hold every bit of the admin cap (cred.AdminPerms): enter-dfu.
// A firmware update can change everything the lock does, so an admin
// restricted to fewer rights than its role's may not sign it; a new
// permission bit would have made every credential issued before it
// unable to sign it, and every lock of protocol version 1 refuse the
// credentials issued after it.
func (o Op) AdminOnly() bool { return o.Valid() && ops[o].admin }

// Open reports whether any authenticated session peer may run o unsigned,
// without a permission bit: only set-revocations, whose list is signed by
// the fleet root and checked by the lock itself.
func (o Op) Open() bool { return o.Valid() && ops[o].open }

// HasData reports whether a successful result of o carries data (key 9):
// status, list-users, allow-bond and read-audit.
func (o Op) HasData() bool { return o.Valid() && ops[o].data }

// RequiresSignature reports whether a request for op, received over a
// session whose authenticated peer has kind peer, must carry a signed
// command (request key 4). Lock, unlock, add-user, remove-user, clear-bonds
// and set-time must be signed — except lock and unlock requested by a user
// (a rider's phone) over its own EDHOC session, which the user's own
// credential authorises. The other operations are authorised by the session
// peer's effective permissions; a signed variant of them is accepted too.
// Undefined ops report true (fail closed).
func RequiresSignature(op Op, peer cred.Kind) bool {
	if !op.Valid() {
		return true
	}
	if peer == cred.KindUser && (op == OpLock || op == OpUnlock) {
		return false
	}
	return ops[op].signed
}

// LockState is the state of the bike lock's actuator (result key 3).
type LockState uint8

// Lock states.
const (
	StateLocked   LockState = 0
	StateUnlocked LockState = 1
	// StateJammed: the actuator failed to reach a position; the lock
	// cannot tell whether the bike is secured.
	StateJammed LockState = 2
)

// Valid reports whether s is a defined lock state.
func (s LockState) Valid() bool { return s <= StateJammed }

// String returns "locked", "unlocked", "jammed" or "state(N)".
func (s LockState) String() string {
	switch s {
	case StateLocked:
		return "locked"
	case StateUnlocked:
		return "unlocked"
	case StateJammed:
		return "jammed"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}
