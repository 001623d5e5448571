package bonds

import (
	"encoding/hex"
	"fmt"
	"time"
)

// LockID is a lock's 8-byte ID (the protocol's lock ID). Its text form, in
// JSON and in messages, is 16 lower-case hex digits.
type LockID [8]byte

// CommandID is a command's 16-byte ID, chosen by the operator and covered by
// the operator's signature. Its text form is 32 lower-case hex digits.
type CommandID [16]byte

func (id LockID) String() string    { return hex.EncodeToString(id[:]) }
func (id CommandID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is all zeros, which no lock has.
func (id LockID) IsZero() bool { return id == LockID{} }

// IsZero reports whether id is all zeros, which no command has.
func (id CommandID) IsZero() bool { return id == CommandID{} }

// MarshalText encodes id as hex.
func (id LockID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// MarshalText encodes id as hex.
func (id CommandID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes exactly 16 hex digits.
func (id *LockID) UnmarshalText(b []byte) error { return parseHex(id[:], string(b), "lock ID") }

// UnmarshalText decodes exactly 32 hex digits.
func (id *CommandID) UnmarshalText(b []byte) error { return parseHex(id[:], string(b), "command ID") }

// ParseLockID parses 16 hex digits.
func ParseLockID(s string) (LockID, error) {
	var id LockID
	return id, parseHex(id[:], s, "lock ID")
}

// ParseCommandID parses 32 hex digits.
func ParseCommandID(s string) (CommandID, error) {
	var id CommandID
	return id, parseHex(id[:], s, "command ID")
}

func parseHex(dst []byte, s, what string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("%s %q: want %d hex digits: %w", what, s, 2*len(dst), ErrInvalid)
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("%s %q: %v: %w", what, s, err, ErrInvalid)
	}
	return nil
}

// State is a journal entry's state. The machine is
//
//	received → queued → running → succeeded | failed | expired | rejected
//	received → rejected | expired
//	queued   → expired | rejected
//	running  → queued (a retryable failure; the next run is another attempt)
//
// Terminal states (succeeded, failed, expired, rejected) are final.
type State string

// Journal states.
const (
	StateReceived  State = "received"
	StateQueued    State = "queued"
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateExpired   State = "expired"
	StateRejected  State = "rejected"
)

var transitions = map[State][]State{
	StateReceived: {StateQueued, StateRejected, StateExpired},
	StateQueued:   {StateRunning, StateExpired, StateRejected},
	StateRunning:  {StateSucceeded, StateFailed, StateExpired, StateRejected, StateQueued},
}

// Valid reports whether s is one of the seven states.
func (s State) Valid() bool {
	switch s {
	case StateReceived, StateQueued, StateRunning, StateSucceeded, StateFailed, StateExpired, StateRejected:
		return true
	}
	return false
}

// Terminal reports whether s is final: succeeded, failed, expired or
// rejected.
func (s State) Terminal() bool {
	switch s {
	case StateSucceeded, StateFailed, StateExpired, StateRejected:
		return true
	}
	return false
}

// CanMove reports whether the state machine allows from → to.
func CanMove(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// BondState is what the gateway knows of its BLE bond with a lock.
type BondState string

// Bond states. Lost means the database says bonded but BlueZ has no bond
// (found by Reconcile): the lock needs re-bonding, through an allow-bond
// command; a lost bond is never silently deleted.
const (
	BondNone    BondState = "none"
	BondBonding BondState = "bonding"
	BondBonded  BondState = "bonded"
	BondLost    BondState = "lost"
)

// Valid reports whether b is one of the four bond states.
func (b BondState) Valid() bool {
	switch b {
	case BondNone, BondBonding, BondBonded, BondLost:
		return true
	}
	return false
}

// Presence is whether a user is (or should be) installed on a lock.
type Presence string

// Presences. Unknown is valid only as a confirmed state: nobody asked the
// lock yet.
const (
	Present Presence = "present"
	Absent  Presence = "absent"
	Unknown Presence = "unknown"
)

func (p Presence) validDesired() bool   { return p == Present || p == Absent }
func (p Presence) validConfirmed() bool { return p == Present || p == Absent || p == Unknown }

// Lock is a lock's record.
type Lock struct {
	ID LockID `json:"id"`
	// Credential is the lock's fleet credential (CWT) as issued at the
	// factory. It holds only public data, but export shows its SHA-256
	// fingerprint instead of the bytes.
	Credential []byte `json:"credential,omitempty"`

	// Address is the lock's BLE identity address, "AA:BB:CC:DD:EE:FF".
	Address  string    `json:"address,omitempty"`
	Bond     BondState `json:"bond"`
	BondedAt time.Time `json:"bonded_at,omitzero"`

	LastSeen time.Time `json:"last_seen,omitzero"`
	RSSI     int       `json:"rssi,omitempty"`
	Battery  int       `json:"battery,omitempty"` // percent
	Firmware string    `json:"firmware,omitempty"`

	// ClockOffset is the lock's clock minus the gateway's, last measured.
	ClockOffset time.Duration `json:"clock_offset,omitempty"`
	// Counters maps a signer's key ID (hex) to the highest per-signer
	// counter the lock is known to have accepted.
	Counters map[string]uint64 `json:"counters,omitempty"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// User is a user (rider) of a lock: the state operators asked for against
// the state the lock confirmed.
type User struct {
	LockID LockID `json:"lock_id"`
	UserID string `json:"user_id"`
	Slot   int    `json:"slot"`

	Desired   Presence  `json:"desired"`
	DesiredAt time.Time `json:"desired_at"`
	DesiredBy CommandID `json:"desired_by"` // the command that asked

	Confirmed   Presence  `json:"confirmed"`
	ConfirmedAt time.Time `json:"confirmed_at,omitzero"`
}

// MaxUserID is the longest user ID, in bytes.
const MaxUserID = 64

// AuditCursor is how far the gateway has read a lock's audit log, and
// what it read that the broker has not acknowledged yet: Seq is the next
// sequence number to read (the lock's log starts at 0) and Head the hash
// chain's head at it (the hash of entry Seq-1, or the lock's genesis hash),
// as firmware/lock/audit's Cursor. Pending are the records read, verified
// and not yet published, oldest first, their Seq strictly increasing; at
// most MaxAuditPending. See AdvanceAudit.
type AuditCursor struct {
	Seq     uint64        `json:"seq"`
	Head    []byte        `json:"head"`
	Pending []AuditRecord `json:"pending,omitempty"`
}

// AuditRecord is one thing read from a lock's audit log for the backend:
// an entry (Entry set: its deterministic CBOR encoding, exactly as the
// lock sent it, Seq its sequence number), or a loss (Entry empty: Missed
// entries from Seq on were overwritten by the lock's ring before the
// gateway read them).
type AuditRecord struct {
	Seq    uint64    `json:"seq"`
	Entry  []byte    `json:"entry,omitempty"`
	Missed uint64    `json:"missed,omitempty"`
	ReadAt time.Time `json:"read_at"`
}

// MaxAuditPending bounds AuditCursor.Pending: a lock's records read and
// not yet acknowledged by the broker. Beyond it AdvanceAudit refuses
// (ErrAuditBacklog) and the lock's own log holds the rest.
const MaxAuditPending = 128

// Command is what the MQTT layer appends to the journal when a command
// arrives.
type Command struct {
	ID        CommandID `json:"id"`
	LockID    LockID    `json:"lock_id"`
	Operator  string    `json:"operator"`
	Operation string    `json:"operation"` // the spec's op name: "unlock", "add-user", ...
	// NotAfter is the signed command's not-after time (zero if it has
	// none). Prune keeps an entry until both the replay window and NotAfter
	// have passed, so a command whose signature is still valid is always
	// deduplicated.
	NotAfter time.Time `json:"not_after,omitzero"`
	// Payload is the signed command as received (COSE_Sign1), kept so the
	// scheduler can resume it after a restart. It is a secret for this
	// package's purposes: never logged, never exported.
	Payload []byte `json:"payload,omitempty"`
}

// Entry is a journal entry: a command and where it is.
type Entry struct {
	Command
	ReceivedAt time.Time `json:"received_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	State      State     `json:"state"`
	// Attempts counts how many times the entry entered running.
	Attempts int `json:"attempts"`
	// Result is set when, and only when, State is terminal.
	Result *Result `json:"result,omitempty"`
	// OutboxSeq is the key of the entry's result in the outbox while the
	// broker has not acknowledged it; 0 otherwise.
	OutboxSeq uint64 `json:"outbox_seq,omitempty"`
	// AckedAt is when the broker acknowledged the result; zero until then.
	AckedAt time.Time `json:"acked_at,omitzero"`
}

// Acked reports whether the broker acknowledged the entry's result.
func (e *Entry) Acked() bool { return !e.AckedAt.IsZero() }

// Result is a command's one result, as queued in the outbox.
type Result struct {
	CommandID CommandID `json:"command_id"`
	LockID    LockID    `json:"lock_id"`
	Operation string    `json:"operation"`
	State     State     `json:"state"`            // terminal
	Status    string    `json:"status,omitempty"` // status code name, "ok", "replay", ...
	Detail    string    `json:"detail,omitempty"`
	// Payload is the encoded result to publish, opaque here. It may carry
	// user IDs and lock data, so it is never logged or exported.
	Payload    []byte    `json:"payload,omitempty"`
	Attempts   int       `json:"attempts"`
	FinishedAt time.Time `json:"finished_at"`
}
