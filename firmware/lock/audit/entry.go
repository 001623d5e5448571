package audit

import (
	"bytes"
	"crypto/sha256"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Sizes of the entry fields.
const (
	// HashSize is the size of prev_hash and head_hash: SHA-256.
	HashSize = 32
	// MaxActor is the longest actor (a kid: 8 bytes in this fleet).
	MaxActor = 16
	// CommandIDSize is the size of a command_id when present.
	CommandIDSize = 16
)

// Event is what an entry records (entry key 3).
type Event uint16

// Event codes. The values are fixed by docs/protocol.md §14.5.2;
// its table says what actor, op, command_id and status hold for each.
const (
	EventBoot              Event = 1  // the lock started
	EventPowerCutRecovered Event = 2  // storage found a power cut's traces at boot (status: bits)
	EventHandshakeOK       Event = 3  // an EDHOC handshake completed (actor: peer kid)
	EventHandshakeFailed   Event = 4  // a handshake was refused (actor: peer BLE address)
	EventCommandOK         Event = 5  // a command ran (op, command_id, actor: signer or peer)
	EventCommandRefused    Event = 6  // a command was refused (status: the refusal)
	EventBondWindowOpened  Event = 7  // allow-bond opened a bond window (actor: peer kid)
	EventPairingOK         Event = 8  // a peer bonded inside the window (actor: its BLE address)
	EventPairingFailed     Event = 9  // a pairing attempt failed or was rate-limited
	EventBondsCleared      Event = 10 // clear-bonds ran
	EventUserAdded         Event = 11 // add-user installed a user
	EventUserRemoved       Event = 12 // remove-user revoked a user
	EventTimeSet           Event = 13 // set-time moved the clock
	EventLockout           Event = 14 // a peer was locked out (actor: BLE address; status: seconds)
	EventLogRepaired       Event = 15 // Open dropped damaged entries (status: how many)
	EventDFUEntered        Event = 16 // enter-dfu authorised an update; the lock resets into its bootloader (actor: signer kid)
)

var eventNames = [...]string{"", "boot", "power_cut_recovered", "handshake_ok", "handshake_failed",
	"command_ok", "command_refused", "bond_window_opened", "pairing_ok", "pairing_failed",
	"bonds_cleared", "user_added", "user_removed", "time_set", "lockout", "log_repaired", "dfu_entered"}

// String returns the event's spec name ("command_ok"), or "event(N)".
func (e Event) String() string {
	if int(e) < len(eventNames) && e != 0 {
		return eventNames[e]
	}
	return fmt.Sprintf("event(%d)", uint16(e))
}

// Bits of the status of an EventPowerCutRecovered entry.
const (
	RecoveredTornRecord      = 1 << 0 // a record write was cut; it did not happen
	RecoveredInterruptedGC   = 1 << 1 // a page format or collection was cut; undone
	RecoveredUnfinishedErase = 1 << 2 // a collection was cut after its commit; finished
)

// Entry is one audit log entry, a CBOR map with integer keys, all present:
//
//	audit-entry = {
//	  1: uint,                    ; seq: monotonic, never reused
//	  2: uint,                    ; time: the lock's clock, unix seconds
//	  3: uint .size 2,            ; event (Event)
//	  4: bstr .size (0..16),      ; actor: kid of the peer or signer, or empty
//	  5: uint .size 1,            ; op: the command's op code, or 0
//	  6: bstr .size 0 / bstr .size 16, ; command_id of a signed command, or empty
//	  7: uint .size 2,            ; status: the command's status code, or event-specific
//	  8: bstr .size 32,           ; prev_hash: hash of entry seq-1, or the genesis hash
//	}
//
// The hash of an entry is SHA-256 of its deterministic encoding (RFC 8949
// §4.2.1: shortest integers, keys in order 1..8, definite lengths).
type Entry struct {
	Seq       uint64 `cbor:"1,keyasint"`
	Time      uint64 `cbor:"2,keyasint"`
	Event     Event  `cbor:"3,keyasint"`
	Actor     []byte `cbor:"4,keyasint"`
	Op        uint8  `cbor:"5,keyasint"`
	CommandID []byte `cbor:"6,keyasint"`
	Status    uint16 `cbor:"7,keyasint"`
	PrevHash  []byte `cbor:"8,keyasint"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	eo := cbor.CoreDetEncOptions()
	eo.NilContainers = cbor.NilContainerAsEmpty // a nil actor is h'', never null
	var err error
	if encMode, err = eo.EncMode(); err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   8,
		MaxArrayElements:  1024,
		MaxMapPairs:       16,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// check validates the field sizes of a stored or received entry.
func (e *Entry) check() error {
	if err := e.checkFields(); err != nil {
		return err
	}
	if len(e.PrevHash) != HashSize {
		return fmt.Errorf("prev_hash of %d bytes, want %d", len(e.PrevHash), HashSize)
	}
	return nil
}

// checkFields validates the caller's fields of a new entry.
func (e *Entry) checkFields() error {
	if len(e.Actor) > MaxActor {
		return fmt.Errorf("actor of %d bytes, at most %d", len(e.Actor), MaxActor)
	}
	if n := len(e.CommandID); n != 0 && n != CommandIDSize {
		return fmt.Errorf("command_id of %d bytes, want 0 or %d", n, CommandIDSize)
	}
	return nil
}

// Encode returns the deterministic CBOR encoding of e.
func (e Entry) Encode() ([]byte, error) {
	if err := e.check(); err != nil {
		return nil, fmt.Errorf("%w: entry %d: %v", ErrMalformed, e.Seq, err)
	}
	b, err := encMode.Marshal(&e)
	if err != nil {
		return nil, fmt.Errorf("%w: entry %d: %v", ErrMalformed, e.Seq, err)
	}
	return b, nil
}

// Hash returns SHA-256 of e's deterministic encoding, whatever its field
// sizes (a reader hashes what it received).
func (e Entry) Hash() []byte {
	b, err := encMode.Marshal(&e)
	if err != nil { // impossible: the fields are integers and byte strings
		return nil
	}
	h := sha256.Sum256(b)
	return h[:]
}

// DecodeEntry decodes one entry, refusing anything but its exact
// deterministic encoding with valid field sizes (ErrMalformed).
func DecodeEntry(b []byte) (Entry, error) {
	var e Entry
	if err := decodeExact(b, &e); err != nil {
		return Entry{}, fmt.Errorf("%w: entry: %v", ErrMalformed, err)
	}
	if err := e.check(); err != nil {
		return Entry{}, fmt.Errorf("%w: entry %d: %v", ErrMalformed, e.Seq, err)
	}
	return e, nil
}

// decodeExact decodes b into v and requires that v encodes back to b: so
// every field is present, and the encoding is the deterministic one.
func decodeExact(b []byte, v any) error {
	rest, err := decMode.UnmarshalFirst(b, v)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d bytes after the item", len(rest))
	}
	again, err := encMode.Marshal(v)
	if err != nil {
		return err
	}
	if !bytes.Equal(again, b) {
		return fmt.Errorf("not the deterministic encoding, or a field is missing")
	}
	return nil
}

// genesisLabel prefixes the lock ID in the genesis hash.
const genesisLabel = "gatewayd audit genesis v1"

// Genesis returns the prev_hash of a lock's entry 0: SHA-256 of the ASCII
// label "gatewayd audit genesis v1" followed by the lock ID (its 8-byte
// kid). Two locks' chains therefore differ from their first entry on.
func Genesis(lockID []byte) []byte {
	h := sha256.New()
	h.Write([]byte(genesisLabel))
	h.Write(lockID)
	return h.Sum(nil)
}
