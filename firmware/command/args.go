package command

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/gatewayd/gatewayd/firmware/cred"
)

// Argument limits.
const (
	// MaxUserIDLen bounds a user ID (add-user, remove-user), in bytes of
	// UTF-8; it is cred.MaxSubjectLen, the subject of the user's credential.
	MaxUserIDLen = cred.MaxSubjectLen
	// DefaultBondWindow is the window allow-bond opens when its args name
	// none, and MaxBondWindow the longest it may ask for, in seconds.
	DefaultBondWindow = 30
	MaxBondWindow     = 60
	// MaxAuditEntries is the most entries one read-audit may ask for.
	MaxAuditEntries = 16
	// InitHashLen is the size of enter-dfu's init_hash: a SHA-256.
	InitHashLen = 32
)

// Args are the arguments of an operation (request key 3, body key 3). One
// struct serves every operation; each field belongs to the operations named
// in its comment and must be left at its zero value for the others (encoding
// fails otherwise). Lock, unlock, status, list-users and clear-bonds take no
// arguments. The wire keys are per operation:
//
//	add-user:    {1: user_id, 2: public_key, 3: role, 4: not_before, 5: not_after}
//	remove-user: {1: user_id}
//	allow-bond:  {? 1: window_s}
//	read-audit:  {1: from_seq, 2: max}
//	set-time:    {1: time}
//	set-revocations: {1: list}
//	enter-dfu:   {1: init_hash}
type Args struct {
	// UserID is the user's ID, the subject of its credential: add-user
	// (key 1), remove-user (key 1). 1..64 bytes of UTF-8.
	UserID string
	// PublicKey is the user's Ed25519 public key: add-user (key 2).
	PublicKey ed25519.PublicKey
	// Role is the user's role: add-user (key 3). Only cred.RoleRider is
	// defined.
	Role cred.Role
	// NotBefore and NotAfter are the user's validity window on the lock,
	// valid for NotBefore <= t < NotAfter: add-user (keys 4 and 5).
	// NotBefore may be zero (encoded 0: valid at once); NotAfter must be
	// after it.
	NotBefore, NotAfter time.Time
	// WindowSeconds is the bond window to open, 1..MaxBondWindow seconds:
	// allow-bond (key 1). 0 leaves the key out, and the lock opens
	// DefaultBondWindow seconds.
	WindowSeconds uint8
	// FromSeq is the first audit sequence number to return: read-audit
	// (key 1).
	FromSeq uint32
	// Max is how many audit entries to return at most, 1..MaxAuditEntries:
	// read-audit (key 2).
	Max uint8
	// Time is the lock's new clock: set-time (key 1). Not zero.
	Time time.Time
	// Revocations is a fleet revocation list (cred.IssueRevocations), as
	// signed by the fleet root, 1..cred.MaxRevocationsSize bytes:
	// set-revocations (key 1). The lock verifies it.
	Revocations []byte
	// InitHash is the SHA-256 of the init packet (the package's .dat, as
	// the DFU controller sends it) of the one update the lock's
	// bootloader may then execute: enter-dfu (key 1). 32 bytes.
	InitHash []byte
}

// BondWindow returns the window allow-bond asks for: WindowSeconds, or
// DefaultBondWindow seconds when it is 0.
func (a *Args) BondWindow() time.Duration {
	if a.WindowSeconds == 0 {
		return DefaultBondWindow * time.Second
	}
	return time.Duration(a.WindowSeconds) * time.Second
}

// Equal reports whether a and b are the same arguments.
func (a *Args) Equal(b *Args) bool {
	return a.UserID == b.UserID && bytes.Equal(a.PublicKey, b.PublicKey) &&
		a.Role == b.Role && a.NotBefore.Equal(b.NotBefore) && a.NotAfter.Equal(b.NotAfter) &&
		a.WindowSeconds == b.WindowSeconds && a.FromSeq == b.FromSeq && a.Max == b.Max &&
		a.Time.Equal(b.Time) && bytes.Equal(a.Revocations, b.Revocations) &&
		bytes.Equal(a.InitHash, b.InitHash)
}

// argDesc describes one Args field independently of its key, which is per
// operation.
type argDesc struct {
	name string
	zero func(a *Args) bool
	enc  func(a *Args) (any, error)
	dec  func(a *Args, raw cbor.RawMessage) error
}

// argField places an argDesc at a key of an operation's args map.
type argField struct {
	key      uint64
	required bool
	d        *argDesc
}

var (
	argUserID = &argDesc{
		name: "user_id",
		zero: func(a *Args) bool { return a.UserID == "" },
		enc: func(a *Args) (any, error) {
			return a.UserID, checkText(a.UserID, 1, MaxUserIDLen)
		},
		dec: func(a *Args, raw cbor.RawMessage) (err error) {
			a.UserID, err = decText(raw, 1, MaxUserIDLen)
			return err
		},
	}
	argPublicKey = &argDesc{
		name: "public_key",
		zero: func(a *Args) bool { return a.PublicKey == nil },
		enc: func(a *Args) (any, error) {
			if len(a.PublicKey) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("public key of %d bytes, want 32", len(a.PublicKey))
			}
			return []byte(a.PublicKey), nil
		},
		dec: func(a *Args, raw cbor.RawMessage) error {
			b, err := decBytes(raw, ed25519.PublicKeySize)
			a.PublicKey = b
			return err
		},
	}
	argRole = &argDesc{
		name: "role",
		zero: func(a *Args) bool { return a.Role == 0 },
		enc: func(a *Args) (any, error) {
			if a.Role != cred.RoleRider {
				return nil, fmt.Errorf("role %d, want %d (rider)", a.Role, cred.RoleRider)
			}
			return uint64(a.Role), nil
		},
		dec: func(a *Args, raw cbor.RawMessage) error {
			n, err := decUint(raw, uint64(cred.RoleRider), uint64(cred.RoleRider))
			a.Role = cred.Role(n)
			return err
		},
	}
	argNotBefore = &argDesc{
		name: "not_before",
		zero: func(a *Args) bool { return a.NotBefore.IsZero() },
		enc:  func(a *Args) (any, error) { return encTime(a.NotBefore) },
		dec: func(a *Args, raw cbor.RawMessage) (err error) {
			a.NotBefore, err = decTime(raw)
			return err
		},
	}
	argNotAfter = &argDesc{
		name: "not_after",
		zero: func(a *Args) bool { return a.NotAfter.IsZero() },
		enc:  func(a *Args) (any, error) { return encTime(a.NotAfter) },
		dec: func(a *Args, raw cbor.RawMessage) (err error) {
			a.NotAfter, err = decTime(raw)
			return err
		},
	}
	argWindow = &argDesc{
		name: "window_s",
		zero: func(a *Args) bool { return a.WindowSeconds == 0 },
		enc: func(a *Args) (any, error) {
			if a.WindowSeconds > MaxBondWindow {
				return nil, fmt.Errorf("window %d s, want 1..%d", a.WindowSeconds, MaxBondWindow)
			}
			return uint64(a.WindowSeconds), nil
		},
		dec: func(a *Args, raw cbor.RawMessage) error {
			n, err := decUint(raw, 1, MaxBondWindow)
			a.WindowSeconds = uint8(n)
			return err
		},
	}
	argFromSeq = &argDesc{
		name: "from_seq",
		zero: func(a *Args) bool { return a.FromSeq == 0 },
		enc:  func(a *Args) (any, error) { return uint64(a.FromSeq), nil },
		dec: func(a *Args, raw cbor.RawMessage) error {
			n, err := decUint(raw, 0, math.MaxUint32)
			a.FromSeq = uint32(n)
			return err
		},
	}
	argMax = &argDesc{
		name: "max",
		zero: func(a *Args) bool { return a.Max == 0 },
		enc: func(a *Args) (any, error) {
			if a.Max < 1 || a.Max > MaxAuditEntries {
				return nil, fmt.Errorf("max %d, want 1..%d", a.Max, MaxAuditEntries)
			}
			return uint64(a.Max), nil
		},
		dec: func(a *Args, raw cbor.RawMessage) error {
			n, err := decUint(raw, 1, MaxAuditEntries)
			a.Max = uint8(n)
			return err
		},
	}
	argTime = &argDesc{
		name: "time",
		zero: func(a *Args) bool { return a.Time.IsZero() },
		enc: func(a *Args) (any, error) {
			if a.Time.IsZero() {
				return nil, errors.New("time must be set")
			}
			return encTime(a.Time)
		},
		dec: func(a *Args, raw cbor.RawMessage) error {
			n, err := decUint(raw, 1, maxTime)
			a.Time = timeOf(n)
			return err
		},
	}
	argRevocations = &argDesc{
		name: "list",
		zero: func(a *Args) bool { return a.Revocations == nil },
		enc: func(a *Args) (any, error) {
			if len(a.Revocations) == 0 || len(a.Revocations) > cred.MaxRevocationsSize {
				return nil, fmt.Errorf("revocation list of %d bytes, want 1..%d", len(a.Revocations), cred.MaxRevocationsSize)
			}
			return a.Revocations, nil
		},
		dec: func(a *Args, raw cbor.RawMessage) error {
			if err := wantMajor(raw, majorBstr, "a byte string"); err != nil {
				return err
			}
			var b []byte
			if err := decMode.Unmarshal(raw, &b); err != nil {
				return err
			}
			if len(b) == 0 || len(b) > cred.MaxRevocationsSize {
				return fmt.Errorf("revocation list of %d bytes, want 1..%d", len(b), cred.MaxRevocationsSize)
			}
			a.Revocations = b
			return nil
		},
	}

	argInitHash = &argDesc{
		name: "init_hash",
		zero: func(a *Args) bool { return a.InitHash == nil },
		enc: func(a *Args) (any, error) {
			if len(a.InitHash) != InitHashLen {
				return nil, fmt.Errorf("init hash of %d bytes, want %d", len(a.InitHash), InitHashLen)
			}
			return a.InitHash, nil
		},
		dec: func(a *Args, raw cbor.RawMessage) error {
			b, err := decBytes(raw, InitHashLen)
			a.InitHash = b
			return err
		},
	}

	// allArgs lists every argDesc, for the "unused fields are zero" rule.
	allArgs = []*argDesc{argUserID, argPublicKey, argRole, argNotBefore, argNotAfter,
		argWindow, argFromSeq, argMax, argTime, argRevocations, argInitHash}
)

// The per-operation argument tables, referenced from the ops table.
var (
	addUserArgs = []argField{
		{1, true, argUserID},
		{2, true, argPublicKey},
		{3, true, argRole},
		{4, true, argNotBefore},
		{5, true, argNotAfter},
	}
	removeUserArgs = []argField{{1, true, argUserID}}
	allowBondArgs  = []argField{{1, false, argWindow}}
	readAuditArgs  = []argField{{1, true, argFromSeq}, {2, true, argMax}}
	setTimeArgs    = []argField{{1, true, argTime}}

	setRevocationsArgs = []argField{{1, true, argRevocations}}
	enterDFUArgs       = []argField{{1, true, argInitHash}}
)

// argSchemas holds the schema of each operation's args map, built from the
// ops table.
var argSchemas [maxOp + 1]*schema[Args]

func init() {
	for op := OpLock; op <= maxOp; op++ {
		fields := ops[op].args
		s := &schema[Args]{name: op.String() + " args"}
		for _, af := range fields {
			d := af.d
			s.fields = append(s.fields, field[Args]{
				key:      af.key,
				name:     d.name,
				required: af.required,
				enc: func(a *Args) (any, bool, error) {
					if !af.required && d.zero(a) {
						return nil, false, nil
					}
					v, err := d.enc(a)
					return v, true, err
				},
				dec: d.dec,
			})
		}
		s.check = func(a *Args) error {
			for _, d := range allArgs {
				if !d.zero(a) && !usesArg(fields, d) {
					return fmt.Errorf("%s is not an argument of %v", d.name, op)
				}
			}
			if op == OpAddUser && !a.NotAfter.After(a.NotBefore) {
				return fmt.Errorf("not_after %d not after not_before %d", a.NotAfter.Unix(), a.NotBefore.Unix())
			}
			return nil
		}
		argSchemas[op] = s
	}
}

func usesArg(fields []argField, d *argDesc) bool {
	for _, f := range fields {
		if f.d == d {
			return true
		}
	}
	return false
}

// encodeArgs returns the args map of op (possibly empty) for a, in
// deterministic CBOR. Errors wrap ErrUnknownOp or ErrMalformed.
func encodeArgs(op Op, a *Args) ([]byte, error) {
	if !op.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrUnknownOp, uint8(op))
	}
	b, err := argSchemas[op].marshal(a)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return b, nil
}

// decodeArgs decodes raw, the args map of op, strictly except for the final
// re-encode-and-compare, which the caller does on the whole message.
func decodeArgs(op Op, raw []byte) (Args, error) {
	var a Args
	if !op.Valid() {
		return a, fmt.Errorf("%w: %d", ErrUnknownOp, uint8(op))
	}
	if err := argSchemas[op].decode(raw, &a); err != nil {
		return Args{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return a, nil
}
