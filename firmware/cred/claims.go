package cred

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is the kind of subject a credential names (private claim -65537).
type Kind uint8

// Credential kinds. The values are fixed by the spec; 0 and values above 4
// are invalid.
const (
	KindLock     Kind = 1 // a lock; subject is its 8-byte lock ID in hex
	KindGateway  Kind = 2 // a gateway
	KindOperator Kind = 3 // a fleet operator or admin (see Role)
	KindUser     Kind = 4 // a lock user (a phone)
)

// String returns the kind's name, or "kind(N)" for an invalid value.
func (k Kind) String() string {
	switch k {
	case KindLock:
		return "lock"
	case KindGateway:
		return "gateway"
	case KindOperator:
		return "operator"
	case KindUser:
		return "user"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid reports whether k is one of the four defined kinds.
func (k Kind) Valid() bool { return k >= KindLock && k <= KindUser }

// Role refines a kind (private claim -65539). Its meaning depends on the
// kind: operator credentials carry RoleOperator or RoleAdmin, user
// credentials carry RoleRider, and lock and gateway credentials carry no
// role (RoleNone, the claim is absent).
type Role uint8

// Roles.
const (
	RoleNone     Role = 0 // no role: lock and gateway credentials
	RoleOperator Role = 1 // operator kind: lock, unlock, status
	RoleAdmin    Role = 2 // operator kind: operator's plus user, bond and time management
	RoleRider    Role = 1 // user kind: the only user role defined so far
)

// Perm is a permission bitmask (private claim -65538). Each bit allows one
// command of the lock protocol.
type Perm uint32

// Permission bits. The bit positions are fixed by the spec.
const (
	PermLock       Perm = 1 << 0 // lock
	PermUnlock     Perm = 1 << 1 // unlock
	PermStatus     Perm = 1 << 2 // status
	PermAddUser    Perm = 1 << 3 // add-user
	PermRemoveUser Perm = 1 << 4 // remove-user
	PermListUsers  Perm = 1 << 5 // list-users
	PermAllowBond  Perm = 1 << 6 // allow-bond (open a bond window for oneself)
	PermClearBonds Perm = 1 << 7 // clear-bonds
	PermReadAudit  Perm = 1 << 8 // read-audit
	PermSetTime    Perm = 1 << 9 // set-time

	// PermAll is the union of all defined bits. A credential that claims a
	// bit outside PermAll is invalid.
	PermAll Perm = 1<<10 - 1
)

// Role → permission sets of the design brief (§3), which are also the caps.
const (
	// OperatorPerms is what the operator role may do.
	OperatorPerms = PermLock | PermUnlock | PermStatus
	// AdminPerms is what the admin role may do: an operator's permissions
	// plus user management, clear-bonds, set-time and read-audit.
	AdminPerms = OperatorPerms | PermAddUser | PermRemoveUser | PermListUsers |
		PermClearBonds | PermSetTime | PermReadAudit
	// GatewayPerms is what a gateway may do: status, read-audit, and open a
	// bond window for itself. A gateway can never lock or unlock on its own
	// authority.
	GatewayPerms = PermStatus | PermReadAudit | PermAllowBond
	// RiderPerms is what a user (rider) may do with a lock.
	RiderPerms = PermLock | PermUnlock | PermStatus
)

var permNames = [...]string{
	"lock", "unlock", "status", "add-user", "remove-user", "list-users",
	"allow-bond", "clear-bonds", "read-audit", "set-time",
}

// String lists the bits of p by command name, joined by "|"; unknown bits
// are shown in hex. The zero mask is "none".
func (p Perm) String() string {
	if p == 0 {
		return "none"
	}
	var parts []string
	for i, n := range permNames {
		if p&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	if rest := p &^ PermAll; rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint32(rest)))
	}
	return strings.Join(parts, "|")
}

// Cap returns the most a credential of kind k and role r may ever be
// allowed: the effective permissions of a credential are its claimed perms
// AND Cap(kind, role). Locks, invalid kinds and invalid roles get 0.
//
//	kind      role        cap
//	lock      -           none
//	gateway   -           status, read-audit, allow-bond
//	operator  operator    lock, unlock, status
//	operator  admin       lock, unlock, status, add-user, remove-user,
//	                      list-users, clear-bonds, read-audit, set-time
//	user      rider       lock, unlock, status
func Cap(k Kind, r Role) Perm {
	switch k {
	case KindGateway:
		if r == RoleNone {
			return GatewayPerms
		}
	case KindOperator:
		switch r {
		case RoleOperator:
			return OperatorPerms
		case RoleAdmin:
			return AdminPerms
		}
	case KindUser:
		if r == RoleRider {
			return RiderPerms
		}
	}
	return 0
}

// validRole reports whether role r is allowed (and required) for kind k.
func validRole(k Kind, r Role) bool {
	switch k {
	case KindLock, KindGateway:
		return r == RoleNone
	case KindOperator:
		return r == RoleOperator || r == RoleAdmin
	case KindUser:
		return r == RoleRider
	}
	return false
}

// Claims is the content of a credential.
type Claims struct {
	// Issuer is the optional iss claim (1), e.g. "fleet-root"; "" omits
	// it. At most 64 bytes of UTF-8.
	Issuer string
	// Subject is the sub claim (2), 1..64 bytes of UTF-8. For a lock it is
	// the 8-byte lock ID as exactly 16 lowercase hex digits.
	Subject string
	// Kind is the kind claim (-65537).
	Kind Kind
	// Role is the role claim (-65539): required for operators and users,
	// absent (RoleNone) for locks and gateways.
	Role Role
	// Perms is the perms claim (-65538): the permissions the issuer grants.
	// Only bits in PermAll may be set. Verifiers mask it with [Cap].
	Perms Perm
	// NotBefore (nbf, 5) and Expiry (exp, 4) are required; the credential
	// is valid for NotBefore <= t < Expiry. IssuedAt (iat, 6) is optional:
	// the zero time omits it. Times are whole seconds since the Unix epoch
	// in 0..2^32-1; [Issue] truncates sub-second parts, [Parse] returns UTC.
	NotBefore, Expiry, IssuedAt time.Time
	// PublicKey is the subject's Ed25519 key (the x of the COSE_Key in cnf).
	PublicKey ed25519.PublicKey
}

// Limits.
const (
	// MaxSize is the largest encoded credential (the CWT) accepted.
	MaxSize = 512
	// MaxSubjectLen and MaxIssuerLen bound sub and iss, in bytes.
	MaxSubjectLen = 64
	MaxIssuerLen  = 64
	// MaxRootKIDLen bounds the fleet root kid of the unprotected header.
	MaxRootKIDLen = 16
	// KIDLen is the length of every credential kid.
	KIDLen = 8
	// maxTime is the largest time value: times are uint32 seconds, so a C
	// verifier can hold them in a uint32_t (good until 2106-02-07).
	maxTime = 1<<32 - 1
)

// KID returns the kid of the credential of kind k for subject sub (the kid
// rule):
//
//   - for a lock, the 8-byte lock ID that sub spells in hex;
//   - for every other kind, the first 8 bytes of SHA-256(k || sub), where k
//     is the kind as one byte and sub the subject's UTF-8 bytes.
//
// It fails with ErrInvalidClaims if the kind is invalid or, for a lock, sub
// is not exactly 16 lowercase hex digits.
func KID(k Kind, sub string) ([]byte, error) {
	if !k.Valid() {
		return nil, fmt.Errorf("%w: kind %d", ErrInvalidClaims, uint8(k))
	}
	if k == KindLock {
		return lockID(sub)
	}
	h := sha256.New()
	h.Write([]byte{byte(k)})
	h.Write([]byte(sub))
	return h.Sum(nil)[:KIDLen], nil
}

func lockID(sub string) ([]byte, error) {
	if len(sub) != 2*KIDLen {
		return nil, fmt.Errorf("%w: lock subject %q is not 16 hex digits", ErrInvalidClaims, sub)
	}
	for i := 0; i < len(sub); i++ {
		c := sub[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return nil, fmt.Errorf("%w: lock subject %q is not lowercase hex", ErrInvalidClaims, sub)
		}
	}
	id, _ := hex.DecodeString(sub)
	return id, nil
}

// LockSubject returns the subject of the lock with ID id: 16 lowercase hex
// digits.
func LockSubject(id [8]byte) string { return hex.EncodeToString(id[:]) }

// unixSeconds converts t for encoding, checking the range.
func unixSeconds(name string, t time.Time) (uint64, error) {
	s := t.Unix()
	if s < 0 || s > maxTime {
		return 0, fmt.Errorf("%w: %s %v out of range", ErrInvalidClaims, name, t)
	}
	return uint64(s), nil
}

// validate checks every rule on claims that does not concern encoding. It is
// shared by Issue and Parse so that both accept exactly the same claims.
func (c *Claims) validate() error {
	if !c.Kind.Valid() {
		return fmt.Errorf("%w: kind %d", ErrInvalidClaims, uint8(c.Kind))
	}
	if !validRole(c.Kind, c.Role) {
		return fmt.Errorf("%w: role %d not allowed for kind %v", ErrInvalidClaims, uint8(c.Role), c.Kind)
	}
	if c.Perms&^PermAll != 0 {
		return fmt.Errorf("%w: unknown permission bits %#x", ErrInvalidClaims, uint32(c.Perms&^PermAll))
	}
	if len(c.Subject) == 0 || len(c.Subject) > MaxSubjectLen || !utf8.ValidString(c.Subject) {
		return fmt.Errorf("%w: subject must be 1..%d bytes of UTF-8", ErrInvalidClaims, MaxSubjectLen)
	}
	if len(c.Issuer) > MaxIssuerLen || !utf8.ValidString(c.Issuer) {
		return fmt.Errorf("%w: issuer must be 0..%d bytes of UTF-8", ErrInvalidClaims, MaxIssuerLen)
	}
	if c.Kind == KindLock {
		if _, err := lockID(c.Subject); err != nil {
			return err
		}
	}
	if c.NotBefore.IsZero() || c.Expiry.IsZero() {
		return fmt.Errorf("%w: nbf and exp are required", ErrInvalidClaims)
	}
	nbf, err := unixSeconds("nbf", c.NotBefore)
	if err != nil {
		return err
	}
	exp, err := unixSeconds("exp", c.Expiry)
	if err != nil {
		return err
	}
	if exp <= nbf {
		return fmt.Errorf("%w: exp %d not after nbf %d", ErrInvalidClaims, exp, nbf)
	}
	if !c.IssuedAt.IsZero() {
		if _, err := unixSeconds("iat", c.IssuedAt); err != nil {
			return err
		}
	}
	if len(c.PublicKey) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is %d bytes, want %d", ErrInvalidClaims, len(c.PublicKey), ed25519.PublicKeySize)
	}
	return nil
}
