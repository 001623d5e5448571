package operator

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

// Reason says why input was refused before it was journaled: the "reason"
// of a [Rejected] notice. The values are stable, machine-readable strings.
type Reason string

// Reasons.
const (
	// ReasonOversized: the payload is larger than command.MaxSignedSize;
	// nothing of it was decoded.
	ReasonOversized Reason = "oversized"
	// ReasonMalformed: the payload is not exactly one signed command in
	// the spec's strict CBOR (envelope or body).
	ReasonMalformed Reason = "malformed"
	// ReasonSignerRejected: the signer is not an operator credential of a
	// trusted fleet root valid now (or a trusted root kid).
	ReasonSignerRejected Reason = "signer_rejected"
	// ReasonBadSignature: the signature does not verify under the
	// signer's key.
	ReasonBadSignature Reason = "bad_signature"
	// ReasonForbidden: the signer's role does not allow the operation
	// (allow-bond is allowed to nobody; the fleet root signs set-time
	// only).
	ReasonForbidden Reason = "forbidden"
	// ReasonDuplicate: the command ID is already in the journal; its one
	// result is (or will be) on the result topic.
	ReasonDuplicate Reason = "duplicate"
	// ReasonOverloaded: more QoS 1 messages were in flight than the
	// gateway holds (65535, the MQTT packet identifier space, unless
	// configured lower); the message was acknowledged unread. Send it
	// again.
	ReasonOverloaded Reason = "overloaded"
	// ReasonUnsupported: the operation is one the protocol defines but
	// this gateway does not carry (enter-dfu, until the gateway is the
	// DFU controller of docs/dfu.md: a lock sent it would reset into a
	// bootloader nothing serves).
	ReasonUnsupported Reason = "unsupported"
)

var reasons = []Reason{ReasonOversized, ReasonMalformed, ReasonSignerRejected, ReasonBadSignature,
	ReasonForbidden, ReasonDuplicate, ReasonOverloaded, ReasonUnsupported}

// Gateway statuses of results for commands the gateway refused after
// journaling them (Result.Status): the lock's status names of the same
// refusals.
const (
	StatusExpired = "expired" // command.StatusExpired's name
	StatusReplay  = "replay"  // command.StatusReplay's name
)

// maxDetail bounds the detail of a notice, in bytes.
const maxDetail = 256

// Rejected is the JSON notice published on the rejected topic for input
// refused before it was journaled.
type Rejected struct {
	Reason Reason `json:"reason"`
	Detail string `json:"detail,omitempty"`
	// CommandID, LockID and Operation are what the payload claims, when it
	// decoded that far (not verified, unless Reason is duplicate).
	CommandID string `json:"command_id,omitempty"`
	LockID    string `json:"lock_id,omitempty"`
	Operation string `json:"operation,omitempty"`
	// State is, for a duplicate, the journaled command's state now.
	State bonds.State `json:"state,omitempty"`
	// PayloadSHA256 (hex) and PayloadSize identify the payload received.
	PayloadSHA256 string    `json:"payload_sha256"`
	PayloadSize   int       `json:"payload_size"`
	ReceivedAt    time.Time `json:"received_at"`
}

func newRejected(reason Reason, detail string, payload []byte, claimed *command.Body, received time.Time) Rejected {
	sum := sha256.Sum256(payload)
	n := Rejected{Reason: reason, Detail: truncate(detail, maxDetail), PayloadSHA256: hex.EncodeToString(sum[:]),
		PayloadSize: len(payload), ReceivedAt: received.UTC()}
	if claimed != nil {
		n.CommandID = hex.EncodeToString(claimed.CommandID[:])
		n.LockID = hex.EncodeToString(claimed.LockID[:])
		n.Operation = claimed.Op.String()
	}
	return n
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// ResultMessage is the JSON published on the result topic: exactly one per
// journaled command ID (at least once on the wire).
type ResultMessage struct {
	CommandID bonds.CommandID `json:"command_id"`
	LockID    bonds.LockID    `json:"lock_id"`
	Operation string          `json:"operation"`
	// State is terminal: succeeded, failed, expired or rejected.
	State bonds.State `json:"state"`
	// Status is the lock's status name ("ok", "replay", "jammed", …) or
	// the gateway's reason for a command it did not carry to the lock.
	Status     string    `json:"status,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	Attempts   int       `json:"attempts"`
	ReceivedAt time.Time `json:"received_at,omitzero"`
	FinishedAt time.Time `json:"finished_at"`

	// The lock's own result, when the lock answered: its state, battery,
	// firmware and clock after the command, and the op's data.
	LockState  string      `json:"lock_state,omitempty"`
	Battery    *int        `json:"battery,omitempty"`
	Firmware   string      `json:"firmware,omitempty"`
	LockClock  time.Time   `json:"lock_clock,omitzero"`
	LockStatus *LockStatus `json:"lock_status,omitempty"` // status
	Users      []User      `json:"users,omitzero"`        // list-users ([] when none)
	// LockResult is the lock's result as it sent it (CBOR, spec §12.8),
	// base64 in JSON; read-audit data is only here. Never present for
	// allow-bond (it carries the bond window's passkey).
	LockResult []byte `json:"lock_result,omitempty"`

	// LockSignature is the lock's signature of its result (lock_result's
	// key 10, a COSE_Sign1, docs/protocol.md §12.7.5), base64 in JSON:
	// present exactly when the lock signed the result. Check it with
	// [VerifyResult]; until then, nothing above is the lock's word.
	LockSignature []byte `json:"lock_signature,omitempty"`
	// LockCredential is the lock's fleet credential (CWT, base64), as the
	// lock proved it in the handshake, so that a verifier can check
	// LockSignature offline: it chains to the fleet root. Present with
	// LockSignature when the gateway has it on record; a backend may use
	// its own copy instead ([VerifyOptions].LockCredential).
	LockCredential []byte `json:"lock_credential,omitempty"`
	// Unsigned says why the result carries no lock signature (one of the
	// Unsigned… values); empty when LockSignature is present.
	Unsigned string `json:"unsigned,omitempty"`
}

// Why a result carries no lock signature (ResultMessage.Unsigned).
const (
	// UnsignedGateway: the gateway produced the result without the lock's
	// answer (expired in the queue, a link error, refused by the gateway).
	UnsignedGateway = "gateway"
	// UnsignedLockRefused: the lock answered, but refused the command
	// before it verified it (locked_out, bad_signature, expired, ...): the
	// lock signs only results of commands it verified.
	UnsignedLockRefused = "lock_refused_unverified"
	// UnsignedNotSigned: the lock's result names the command but carries
	// no signature (a lock whose firmware does not sign results).
	UnsignedNotSigned = "lock_did_not_sign"
	// UnsignedUnreadable: the lock's result could not be decoded.
	UnsignedUnreadable = "lock_result_unreadable"
)

// LockStatus is the data of a successful status result.
type LockStatus struct {
	LockoutUntil time.Time `json:"lockout_until,omitzero"`
	Failures     uint32    `json:"failures"`
	Users        int       `json:"users"`
	Slots        int       `json:"slots"`
}

// User is one installed user of a list-users result.
type User struct {
	Slot      int       `json:"slot"`
	UserID    string    `json:"user_id"`
	Role      string    `json:"role"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	KeyID     string    `json:"key_id"` // hex
}

// NewResultMessage builds the result message of r, a journal result, for a
// command received at received (zero if not known). r.Payload, when not
// empty, is the lock's result as the lock sent it (command.MarshalResult
// encoding for the command's op); it is decoded strictly, and an error
// says it could not be (the message is then still usable, without the
// lock's data).
func NewResultMessage(r bonds.Result, received time.Time) (ResultMessage, error) {
	m := ResultMessage{CommandID: r.CommandID, LockID: r.LockID, Operation: r.Operation, State: r.State,
		Status: r.Status, Detail: r.Detail, Attempts: r.Attempts, FinishedAt: r.FinishedAt.UTC()}
	if !received.IsZero() {
		m.ReceivedAt = received.UTC()
	}
	if len(r.Payload) == 0 {
		m.Unsigned = UnsignedGateway
		return m, nil
	}
	m.Unsigned = UnsignedUnreadable
	op, ok := command.ParseOp(r.Operation)
	if !ok {
		return m, fmt.Errorf("operator: result of %s: unknown operation %q", r.CommandID, r.Operation)
	}
	lr, err := command.ParseResult(op, r.Payload)
	if err != nil {
		return m, fmt.Errorf("operator: result of %s: lock result: %w", r.CommandID, err)
	}
	switch {
	case lr.Signature != nil:
		m.LockSignature, m.Unsigned = lr.Signature, ""
	case lr.CommandID == nil:
		m.Unsigned = UnsignedLockRefused
	default:
		m.Unsigned = UnsignedNotSigned
	}
	battery := int(lr.Battery)
	m.LockState, m.Battery, m.Firmware, m.LockClock = lr.LockState.String(), &battery, lr.Firmware, lr.Clock.UTC()
	if m.Status == "" {
		m.Status = lr.Status.String()
	}
	if op == command.OpAllowBond {
		return m, nil // never the passkey
	}
	m.LockResult = r.Payload
	if lr.Status != command.StatusOK {
		return m, nil
	}
	switch op {
	case command.OpStatus:
		s, err := lr.LockStatus()
		if err != nil {
			return m, fmt.Errorf("operator: result of %s: %w", r.CommandID, err)
		}
		m.LockStatus = &LockStatus{Failures: s.Failures, Users: int(s.Users), Slots: int(s.Slots)}
		if !s.LockoutUntil.IsZero() {
			m.LockStatus.LockoutUntil = s.LockoutUntil.UTC()
		}
	case command.OpListUsers:
		us, err := lr.Users()
		if err != nil {
			return m, fmt.Errorf("operator: result of %s: %w", r.CommandID, err)
		}
		m.Users = make([]User, 0, len(us))
		for _, u := range us {
			m.Users = append(m.Users, User{Slot: int(u.Slot), UserID: u.UserID, Role: roleName(u.Role),
				NotBefore: u.NotBefore.UTC(), NotAfter: u.NotAfter.UTC(), KeyID: hex.EncodeToString(u.KeyID[:])})
		}
	}
	return m, nil
}

func roleName(r cred.Role) string {
	if r == cred.RoleRider {
		return "rider"
	}
	return fmt.Sprintf("role(%d)", r)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only plain types above: cannot fail.
		panic(fmt.Sprintf("operator: JSON encoding: %v", err))
	}
	return b
}
