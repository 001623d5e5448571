package command

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/gatewayd/gatewayd/firmware/cred"
)

// Result limits.
const (
	// MaxResultSize is the largest encoded result, in bytes: what fits in
	// one Response frame (frame.DefaultMaxPlaintext).
	MaxResultSize = 2035
	// MaxDetailLen bounds Result.Detail, in bytes of UTF-8.
	MaxDetailLen = 96
	// MaxFirmwareLen bounds Result.Firmware, in bytes of UTF-8.
	MaxFirmwareLen = 32
	// MaxUsers is the most user entries a list-users result holds, and so
	// the most user slots a lock may have.
	MaxUsers = 16
	// MaxPasskey is the largest BLE passkey (six decimal digits).
	MaxPasskey = 999999
)

// Result is the outcome of a request: the plaintext of a Response frame
// (type 0x11), sent by the lock.
//
//	Result = { 1: request_id, 2: status, 3: lock_state, 4: battery,
//	           5: firmware, 6: clock, ? 7: command_id, ? 8: detail, ? 9: data,
//	           ? 10: signature }
//
// Every result, whatever its status, reports the lock's state, battery,
// firmware version and clock.
type Result struct {
	// RequestID echoes the request's (0 if the request was too broken to
	// read it).
	RequestID uint32
	// Status is the outcome.
	Status Status
	// LockState, Battery (percent, 0..100), Firmware (1..MaxFirmwareLen
	// bytes, e.g. "1.0.0") and Clock (the lock's clock; zero when it was
	// never set, encoded 0) describe the lock after the command.
	LockState LockState
	Battery   uint8
	Firmware  string
	Clock     time.Time
	// CommandID echoes the command ID of a signed command once the lock
	// has verified its body; nil otherwise. 16 bytes.
	CommandID []byte
	// Detail is a short human-readable reason (0..MaxDetailLen bytes, ""
	// leaves it out). It never holds secrets. For locked_out it is the
	// number of seconds to wait, in decimal ([LockedOutDetail]).
	Detail string
	// Data is the op-specific data, one CBOR item in deterministic
	// encoding, or nil. It is present exactly when the status is ok and
	// the op has data ([Op.HasData]), or the status is duplicate_command
	// (then it is {1: original status}). Build it with [EncodeLockStatus],
	// [EncodeUsers], [EncodeBondWindow], [EncodeDuplicate] or, for
	// read-audit, the audit package's encoder; read it with the accessors
	// of the same names.
	Data cbor.RawMessage
	// Signature is the lock's signature of this result (a COSE_Sign1 of
	// at most MaxResultSignatureSize bytes, [SignResult]), present exactly
	// when CommandID is: the lock signs every result of a signed command
	// it verified. Check it with [VerifyResult]. Never log it.
	Signature []byte
}

// Err returns nil for StatusOK, else the status's sentinel error with the
// detail, if any.
func (r *Result) Err() error {
	err := r.Status.Err()
	if err != nil && r.Detail != "" {
		return fmt.Errorf("%w: %s", err, r.Detail)
	}
	return err
}

var resultSchema = &schema[Result]{
	name: "result",
	fields: []field[Result]{
		{key: 1, name: "request_id", required: true,
			enc: func(r *Result) (any, bool, error) { return uint64(r.RequestID), true, nil },
			dec: func(r *Result, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, math.MaxUint32)
				r.RequestID = uint32(n)
				return err
			}},
		{key: 2, name: "status", required: true,
			enc: func(r *Result) (any, bool, error) {
				if !r.Status.Valid() {
					return nil, false, fmt.Errorf("undefined status %d", r.Status)
				}
				return uint64(r.Status), true, nil
			},
			dec: func(r *Result, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, uint64(maxStatus))
				r.Status = Status(n)
				return err
			}},
		{key: 3, name: "lock_state", required: true,
			enc: func(r *Result) (any, bool, error) {
				if !r.LockState.Valid() {
					return nil, false, fmt.Errorf("undefined lock state %d", r.LockState)
				}
				return uint64(r.LockState), true, nil
			},
			dec: func(r *Result, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, uint64(StateJammed))
				r.LockState = LockState(n)
				return err
			}},
		{key: 4, name: "battery", required: true,
			enc: func(r *Result) (any, bool, error) {
				if r.Battery > 100 {
					return nil, false, fmt.Errorf("battery %d%%", r.Battery)
				}
				return uint64(r.Battery), true, nil
			},
			dec: func(r *Result, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, 100)
				r.Battery = uint8(n)
				return err
			}},
		{key: 5, name: "firmware", required: true,
			enc: func(r *Result) (any, bool, error) {
				return r.Firmware, true, checkText(r.Firmware, 1, MaxFirmwareLen)
			},
			dec: func(r *Result, raw cbor.RawMessage) (err error) {
				r.Firmware, err = decText(raw, 1, MaxFirmwareLen)
				return err
			}},
		{key: 6, name: "clock", required: true,
			enc: func(r *Result) (any, bool, error) {
				t, err := encTime(r.Clock)
				return t, true, err
			},
			dec: func(r *Result, raw cbor.RawMessage) (err error) {
				r.Clock, err = decTime(raw)
				return err
			}},
		{key: 7, name: "command_id",
			enc: func(r *Result) (any, bool, error) {
				if r.CommandID == nil {
					return nil, false, nil
				}
				if len(r.CommandID) != 16 {
					return nil, false, fmt.Errorf("command ID of %d bytes, want 16", len(r.CommandID))
				}
				return r.CommandID, true, nil
			},
			dec: func(r *Result, raw cbor.RawMessage) (err error) {
				r.CommandID, err = decBytes(raw, 16)
				return err
			}},
		{key: 8, name: "detail",
			enc: func(r *Result) (any, bool, error) {
				return r.Detail, r.Detail != "", checkText(r.Detail, 0, MaxDetailLen)
			},
			dec: func(r *Result, raw cbor.RawMessage) (err error) {
				r.Detail, err = decText(raw, 1, MaxDetailLen)
				return err
			}},
		{key: 9, name: "data",
			enc: func(r *Result) (any, bool, error) {
				if r.Data == nil {
					return nil, false, nil
				}
				return r.Data, true, nil
			},
			dec: func(r *Result, raw cbor.RawMessage) error {
				r.Data = raw
				return nil
			}},
		{key: 10, name: "signature",
			enc: func(r *Result) (any, bool, error) {
				if r.Signature == nil {
					return nil, false, nil
				}
				if r.CommandID == nil {
					return nil, false, errors.New("a signature without a command ID")
				}
				if len(r.Signature) == 0 || len(r.Signature) > MaxResultSignatureSize {
					return nil, false, fmt.Errorf("signature of %d bytes, want 1..%d", len(r.Signature), MaxResultSignatureSize)
				}
				return r.Signature, true, nil
			},
			dec: func(r *Result, raw cbor.RawMessage) error {
				if err := wantMajor(raw, majorBstr, "a byte string"); err != nil {
					return err
				}
				var b []byte
				if err := decMode.Unmarshal(raw, &b); err != nil {
					return err
				}
				if len(b) == 0 || len(b) > MaxResultSignatureSize {
					return fmt.Errorf("signature of %d bytes, want 1..%d", len(b), MaxResultSignatureSize)
				}
				r.Signature = b
				return nil
			}},
	},
	check: func(r *Result) error {
		if r.Signature != nil && r.CommandID == nil {
			return errors.New("a signature (key 10) without a command ID (key 7)")
		}
		return nil
	},
}

// checkData applies the data rule of op and r.Status to r.Data. Errors wrap
// ErrMalformed.
func checkData(op Op, r *Result) error {
	want := r.Status == StatusDuplicateCommand || (r.Status == StatusOK && op.HasData())
	if !want {
		if r.Data != nil {
			return fmt.Errorf("%w: result: no data for %v with status %v", ErrMalformed, op, r.Status)
		}
		return nil
	}
	if r.Data == nil {
		return fmt.Errorf("%w: result: data required for %v with status %v", ErrMalformed, op, r.Status)
	}
	var err error
	switch {
	case r.Status == StatusDuplicateCommand:
		_, err = r.Duplicate()
	case op == OpStatus:
		_, err = r.LockStatus()
	case op == OpListUsers:
		_, err = r.Users()
	case op == OpAllowBond:
		_, err = r.BondWindow()
	default: // read-audit: defined by the audit package
		if err = canonicalItem(r.Data); err != nil {
			err = fmt.Errorf("%w: read-audit data: %w", ErrMalformed, err)
		}
	}
	return err
}

// MarshalResult encodes r, the result of a request for op, in
// deterministic CBOR. op decides which data r may carry (see
// [Result.Data]); for a status other than ok and duplicate_command it may be
// any value, even an undefined op. Errors wrap ErrMalformed.
func MarshalResult(op Op, r *Result) ([]byte, error) {
	if err := checkData(op, r); err != nil {
		return nil, err
	}
	b, err := resultSchema.marshal(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(b) > MaxResultSize {
		return nil, fmt.Errorf("%w: result of %d bytes, limit %d", ErrMalformed, len(b), MaxResultSize)
	}
	return b, nil
}

// ParseResult decodes, strictly, the result of a request for op (the op
// the caller sent, matched by request ID): at most MaxResultSize bytes, the
// keys above with values of the right types and ranges, the data rule of
// [Result.Data] with the data decoded by its table, and byte for byte the
// deterministic encoding. An undefined status or lock state is malformed: a
// gateway is updated before the locks it serves. Errors wrap ErrMalformed.
func ParseResult(op Op, b []byte) (*Result, error) {
	if len(b) > MaxResultSize {
		return nil, fmt.Errorf("%w: result of %d bytes, limit %d", ErrMalformed, len(b), MaxResultSize)
	}
	var r Result
	if err := resultSchema.decode(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := checkData(op, &r); err != nil {
		return nil, err
	}
	if err := sameEncoding(b, func() ([]byte, error) { return resultSchema.marshal(&r) }); err != nil {
		return nil, fmt.Errorf("%w: result: %w", ErrMalformed, err)
	}
	return &r, nil
}

// LockedOutDetail returns the detail of a locked_out result: the whole
// seconds to wait (rounded up), in decimal.
func LockedOutDetail(wait time.Duration) string {
	s := (wait + time.Second - 1) / time.Second
	return strconv.FormatInt(int64(max(s, 0)), 10)
}

// RetryAfter returns the wait a locked_out result asks for; ok is false for
// any other status or a detail that is not a decimal number of seconds.
func (r *Result) RetryAfter() (wait time.Duration, ok bool) {
	if r.Status != StatusLockedOut {
		return 0, false
	}
	n, err := strconv.ParseUint(r.Detail, 10, 32)
	if err != nil {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// Data items. Each is a map with its own table; the accessors decode
// r.Data strictly, including the comparison with its deterministic
// encoding, and return errors wrapping ErrMalformed.

// decodeData decodes r.Data with s into v and checks its encoding.
func decodeData[T any](s *schema[T], raw []byte, v *T) error {
	if raw == nil {
		return fmt.Errorf("%w: %s: no data", ErrMalformed, s.name)
	}
	if err := s.decode(raw, v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := sameEncoding(raw, func() ([]byte, error) { return s.marshal(v) }); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMalformed, s.name, err)
	}
	return nil
}

func encodeData[T any](s *schema[T], v *T) (cbor.RawMessage, error) {
	b, err := s.marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return b, nil
}

// LockStatus is the data of a successful status result:
//
//	{ 1: lockout_until, 2: failures, 3: users, 4: slots, ? 5: revocations }
type LockStatus struct {
	// LockoutUntil is when the global backoff ends; zero (encoded 0) when
	// the lock is not locked out.
	LockoutUntil time.Time
	// Failures counts recent failed attempts (authentication or
	// authorisation) that feed the backoff.
	Failures uint32
	// Users is the number of installed users, Slots the size of the user
	// table (Users <= Slots <= MaxUsers).
	Users, Slots uint8
	// Revocations is the serial of the fleet revocation list the lock
	// holds (docs/protocol.md §13.9); 0 (key 5 absent) when it holds none.
	// A gateway holding a newer list delivers it with set-revocations.
	Revocations uint64
}

var lockStatusSchema = &schema[LockStatus]{
	name: "status data",
	fields: []field[LockStatus]{
		{key: 1, name: "lockout_until", required: true,
			enc: func(s *LockStatus) (any, bool, error) {
				t, err := encTime(s.LockoutUntil)
				return t, true, err
			},
			dec: func(s *LockStatus, raw cbor.RawMessage) (err error) {
				s.LockoutUntil, err = decTime(raw)
				return err
			}},
		{key: 2, name: "failures", required: true,
			enc: func(s *LockStatus) (any, bool, error) { return uint64(s.Failures), true, nil },
			dec: func(s *LockStatus, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, math.MaxUint32)
				s.Failures = uint32(n)
				return err
			}},
		{key: 3, name: "users", required: true,
			enc: func(s *LockStatus) (any, bool, error) { return uint64(s.Users), true, nil },
			dec: func(s *LockStatus, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, MaxUsers)
				s.Users = uint8(n)
				return err
			}},
		{key: 4, name: "slots", required: true,
			enc: func(s *LockStatus) (any, bool, error) { return uint64(s.Slots), true, nil },
			dec: func(s *LockStatus, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, MaxUsers)
				s.Slots = uint8(n)
				return err
			}},
		{key: 5, name: "revocations",
			enc: func(s *LockStatus) (any, bool, error) { return s.Revocations, s.Revocations != 0, nil },
			dec: func(s *LockStatus, raw cbor.RawMessage) (err error) {
				s.Revocations, err = decUint(raw, 1, math.MaxUint64)
				return err
			}},
	},
	check: func(s *LockStatus) error {
		if s.Users > s.Slots || s.Slots > MaxUsers {
			return fmt.Errorf("%d users in %d slots (at most %d)", s.Users, s.Slots, MaxUsers)
		}
		return nil
	},
}

// EncodeLockStatus returns the data of a successful status result.
func EncodeLockStatus(s LockStatus) (cbor.RawMessage, error) {
	return encodeData(lockStatusSchema, &s)
}

// LockStatus decodes the data of a successful status result.
func (r *Result) LockStatus() (LockStatus, error) {
	var s LockStatus
	err := decodeData(lockStatusSchema, r.Data, &s)
	return s, err
}

// BondWindow is the data of a successful allow-bond result: the one-time
// passkey the session peer's BLE stack must answer with when it pairs
// inside the window.
//
//	{ 1: passkey, 2: window_s, 3: peer_address }
type BondWindow struct {
	// Passkey is 0..999999 (shown with leading zeros as six digits).
	Passkey uint32
	// WindowSeconds is how long the window stays open, 1..MaxBondWindow.
	WindowSeconds uint8
	// Peer is the BLE address the window is open for, as the lock sees
	// the session's link: "AA:BB:CC:DD:EE:FF" (uppercase hex).
	Peer string
}

var bondWindowSchema = &schema[BondWindow]{
	name: "allow-bond data",
	fields: []field[BondWindow]{
		{key: 1, name: "passkey", required: true,
			enc: func(w *BondWindow) (any, bool, error) {
				if w.Passkey > MaxPasskey {
					return nil, false, fmt.Errorf("passkey %d", w.Passkey)
				}
				return uint64(w.Passkey), true, nil
			},
			dec: func(w *BondWindow, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, MaxPasskey)
				w.Passkey = uint32(n)
				return err
			}},
		{key: 2, name: "window_s", required: true,
			enc: func(w *BondWindow) (any, bool, error) {
				if w.WindowSeconds < 1 || w.WindowSeconds > MaxBondWindow {
					return nil, false, fmt.Errorf("window %d s, want 1..%d", w.WindowSeconds, MaxBondWindow)
				}
				return uint64(w.WindowSeconds), true, nil
			},
			dec: func(w *BondWindow, raw cbor.RawMessage) error {
				n, err := decUint(raw, 1, MaxBondWindow)
				w.WindowSeconds = uint8(n)
				return err
			}},
		{key: 3, name: "peer_address", required: true,
			enc: func(w *BondWindow) (any, bool, error) { return w.Peer, true, checkAddress(w.Peer) },
			dec: func(w *BondWindow, raw cbor.RawMessage) (err error) {
				if w.Peer, err = decText(raw, 17, 17); err != nil {
					return err
				}
				return checkAddress(w.Peer)
			}},
	},
}

// checkAddress accepts exactly "XX:XX:XX:XX:XX:XX" with uppercase hex.
func checkAddress(s string) error {
	bad := len(s) != 17
	for i := 0; !bad && i < len(s); i++ {
		c := s[i]
		if i%3 == 2 {
			bad = c != ':'
		} else {
			bad = (c < '0' || c > '9') && (c < 'A' || c > 'F')
		}
	}
	if bad {
		return fmt.Errorf("peer address %q, want XX:XX:XX:XX:XX:XX in uppercase hex", s)
	}
	return nil
}

// EncodeBondWindow returns the data of a successful allow-bond result.
func EncodeBondWindow(w BondWindow) (cbor.RawMessage, error) {
	return encodeData(bondWindowSchema, &w)
}

// BondWindow decodes the data of a successful allow-bond result.
func (r *Result) BondWindow() (BondWindow, error) {
	var w BondWindow
	err := decodeData(bondWindowSchema, r.Data, &w)
	return w, err
}

// UserEntry is one installed user, an element of the data of a successful
// list-users result (an array of 0..MaxUsers entries, by increasing slot):
//
//	{ 1: slot, 2: user_id, 3: role, 4: not_before, 5: not_after, 6: key_id }
type UserEntry struct {
	// Slot is the user's slot, 0..MaxUsers-1.
	Slot uint8
	// UserID, Role, NotBefore and NotAfter are as installed by add-user.
	UserID              string
	Role                cred.Role
	NotBefore, NotAfter time.Time
	// KeyID identifies the user's public key: [KeyID] of it.
	KeyID [8]byte
}

// KeyID returns the key ID that list-users reports for a user's public key:
// the first 8 bytes of SHA-256 of the 32-byte key.
func KeyID(pub []byte) [8]byte {
	h := sha256.Sum256(pub)
	return [8]byte(h[:8])
}

var userEntrySchema = &schema[UserEntry]{
	name: "user entry",
	fields: []field[UserEntry]{
		{key: 1, name: "slot", required: true,
			enc: func(u *UserEntry) (any, bool, error) {
				if u.Slot >= MaxUsers {
					return nil, false, fmt.Errorf("slot %d, want 0..%d", u.Slot, MaxUsers-1)
				}
				return uint64(u.Slot), true, nil
			},
			dec: func(u *UserEntry, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, MaxUsers-1)
				u.Slot = uint8(n)
				return err
			}},
		{key: 2, name: "user_id", required: true,
			enc: func(u *UserEntry) (any, bool, error) { return u.UserID, true, checkText(u.UserID, 1, MaxUserIDLen) },
			dec: func(u *UserEntry, raw cbor.RawMessage) (err error) {
				u.UserID, err = decText(raw, 1, MaxUserIDLen)
				return err
			}},
		{key: 3, name: "role", required: true,
			enc: func(u *UserEntry) (any, bool, error) {
				if u.Role != cred.RoleRider {
					return nil, false, fmt.Errorf("role %d, want %d (rider)", u.Role, cred.RoleRider)
				}
				return uint64(u.Role), true, nil
			},
			dec: func(u *UserEntry, raw cbor.RawMessage) error {
				n, err := decUint(raw, uint64(cred.RoleRider), uint64(cred.RoleRider))
				u.Role = cred.Role(n)
				return err
			}},
		{key: 4, name: "not_before", required: true,
			enc: func(u *UserEntry) (any, bool, error) {
				t, err := encTime(u.NotBefore)
				return t, true, err
			},
			dec: func(u *UserEntry, raw cbor.RawMessage) (err error) {
				u.NotBefore, err = decTime(raw)
				return err
			}},
		{key: 5, name: "not_after", required: true,
			enc: func(u *UserEntry) (any, bool, error) {
				t, err := encTime(u.NotAfter)
				return t, true, err
			},
			dec: func(u *UserEntry, raw cbor.RawMessage) (err error) {
				u.NotAfter, err = decTime(raw)
				return err
			}},
		{key: 6, name: "key_id", required: true,
			enc: func(u *UserEntry) (any, bool, error) { return u.KeyID[:], true, nil },
			dec: func(u *UserEntry, raw cbor.RawMessage) error {
				id, err := decBytes(raw, len(u.KeyID))
				copy(u.KeyID[:], id)
				return err
			}},
	},
	check: func(u *UserEntry) error {
		if !u.NotAfter.After(u.NotBefore) {
			return errors.New("not_after not after not_before")
		}
		return nil
	},
}

// EncodeUsers returns the data of a successful list-users result: users
// as an array, which must be sorted by strictly increasing slot. An empty
// list is the empty array.
func EncodeUsers(users []UserEntry) (cbor.RawMessage, error) {
	if err := checkSlots(users); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	arr := make([]any, len(users))
	for i := range users {
		m, err := userEntrySchema.encode(&users[i])
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrMalformed, i, err)
		}
		arr[i] = m
	}
	b, err := encMode.Marshal(arr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return b, nil
}

func checkSlots(users []UserEntry) error {
	if len(users) > MaxUsers {
		return fmt.Errorf("%d users, at most %d", len(users), MaxUsers)
	}
	for i := 1; i < len(users); i++ {
		if users[i].Slot <= users[i-1].Slot {
			return fmt.Errorf("slots not strictly increasing at entry %d", i)
		}
	}
	return nil
}

// Users decodes the data of a successful list-users result.
func (r *Result) Users() ([]UserEntry, error) {
	if len(r.Data) == 0 || r.Data[0]>>5 != majorArray {
		return nil, fmt.Errorf("%w: list-users data must be an array", ErrMalformed)
	}
	var items []cbor.RawMessage
	if err := decMode.Unmarshal(r.Data, &items); err != nil {
		return nil, fmt.Errorf("%w: list-users data: %w", ErrMalformed, err)
	}
	users := make([]UserEntry, len(items))
	for i, it := range items {
		if err := userEntrySchema.decode(it, &users[i]); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrMalformed, i, err)
		}
	}
	if err := sameEncoding(r.Data, func() ([]byte, error) { return EncodeUsers(users) }); err != nil {
		return nil, fmt.Errorf("%w: list-users data: %w", ErrMalformed, err)
	}
	return users, nil
}

// duplicate is the data of a duplicate_command result.
type duplicate struct{ status Status }

var duplicateSchema = &schema[duplicate]{
	name: "duplicate_command data",
	fields: []field[duplicate]{
		{key: 1, name: "status", required: true,
			enc: func(d *duplicate) (any, bool, error) {
				if !d.status.Valid() || d.status == StatusDuplicateCommand {
					return nil, false, fmt.Errorf("original status %v", d.status)
				}
				return uint64(d.status), true, nil
			},
			dec: func(d *duplicate, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, uint64(maxStatus))
				d.status = Status(n)
				if err == nil && d.status == StatusDuplicateCommand {
					err = errors.New("original status cannot be duplicate_command")
				}
				return err
			}},
	},
}

// EncodeDuplicate returns the data of a duplicate_command result: the
// status the lock returned when it executed the command ID the first time
// (anything but duplicate_command), which it keeps with the command ID.
func EncodeDuplicate(original Status) (cbor.RawMessage, error) {
	return encodeData(duplicateSchema, &duplicate{original})
}

// Duplicate decodes the data of a duplicate_command result: the status of
// the command's first execution.
func (r *Result) Duplicate() (Status, error) {
	var d duplicate
	err := decodeData(duplicateSchema, r.Data, &d)
	return d.status, err
}
