package lock

import (
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

// Store is the lock's persistent storage as the lock uses it: small
// records by key. Put is atomic and durable when it returns: after a power
// cut, Get returns the old or the new value, never a mix.
// firmware/lock/flash implements it on a model of the nRF52832's flash.
type Store interface {
	Get(key uint16) ([]byte, bool, error)
	Put(key uint16, data []byte) error
	Delete(key uint16) error
}

// Record keys of the lock's own state (docs/protocol.md §13.4, §14).
const (
	keyState     uint16 = 0x0001 // counters, pending command, recent IDs, clock
	keyBonds     uint16 = 0x0002 // bonded peer addresses
	keySlotBase  uint16 = 0x0100 // + slot: one user per record
	maxSigners          = 32     // counters kept; see evictSigner
	recentIDs           = 32     // executed command IDs remembered
	DefaultSlots        = 16
)

// signerState is what the lock remembers of one signer.
type signerState struct {
	Counter uint64 `cbor:"1,keyasint"`
	// NotAfter is the latest not_after of the signer's commands seen: once
	// the lock's clock passes it, no command of this signer that the lock
	// has seen can be valid again, so its counter may be forgotten.
	NotAfter int64 `cbor:"2,keyasint"`
}

// commandRecord names an executed (or interrupted) signed command.
type commandRecord struct {
	ID     []byte         `cbor:"1,keyasint"`
	Status command.Status `cbor:"2,keyasint"`
	Op     command.Op     `cbor:"3,keyasint"`
}

// state is the record at keyState. It is written (one atomic Put) before a
// signed command takes effect, with the command as Pending, and again after,
// with the command moved to Recent.
type state struct {
	Counters map[string]signerState `cbor:"1,keyasint"`
	Pending  *commandRecord         `cbor:"2,keyasint,omitempty"`
	Recent   []commandRecord        `cbor:"3,keyasint"`
	// ClockFloor (unix s) is the lock's clock when last saved: the clock
	// never goes below it, across reboots, unless set-time says so.
	ClockFloor int64 `cbor:"4,keyasint"`
	// ClockOffset (s) is added to the hardware RTC.
	ClockOffset int64 `cbor:"5,keyasint"`
	// Bolt is the actuator's last known state.
	Bolt command.LockState `cbor:"6,keyasint"`
	// ForgetHorizon (unix s) is the latest not_after of every signer the
	// table has forgotten (makeRoom). It only grows, and set-time never
	// moves it: a command from a signer not in the table whose not_after
	// is not after it may be one the lock ran and forgot, so it is refused
	// as a replay (docs/protocol.md §13.4), whatever the clock says.
	ForgetHorizon int64 `cbor:"7,keyasint,omitempty"`
}

// user is one slot of the user table.
type user struct {
	UserID    string            `cbor:"1,keyasint"`
	PublicKey ed25519.PublicKey `cbor:"2,keyasint"`
	Role      cred.Role         `cbor:"3,keyasint"`
	NotBefore int64             `cbor:"4,keyasint"`
	NotAfter  int64             `cbor:"5,keyasint"`
}

func (u *user) validAt(t time.Time) bool {
	s := t.Unix()
	return u.NotBefore <= s && s < u.NotAfter
}

var (
	stateEnc, _ = cbor.CoreDetEncOptions().EncMode()
	stateDec, _ = cbor.DecOptions{DupMapKey: cbor.DupMapKeyEnforcedAPF, IndefLength: cbor.IndefLengthForbidden}.DecMode()
)

func (l *Lock) load() error {
	l.st = state{Counters: map[string]signerState{}}
	if err := l.getRecord(keyState, &l.st); err != nil {
		return err
	}
	if l.st.Counters == nil {
		l.st.Counters = map[string]signerState{}
	}
	var bonds []string
	if err := l.getRecord(keyBonds, &bonds); err != nil {
		return err
	}
	l.bonds = map[string]bool{}
	for _, b := range bonds {
		l.bonds[b] = true
	}
	l.users = make([]*user, l.slots)
	for i := range l.users {
		var u user
		raw, ok, err := l.store.Get(keySlotBase + uint16(i))
		if err != nil {
			return fmt.Errorf("lock: reading slot %d: %w", i, err)
		}
		if ok {
			if err := stateDec.Unmarshal(raw, &u); err != nil {
				return fmt.Errorf("lock: slot %d is corrupt: %w", i, err)
			}
			l.users[i] = &u
		}
	}
	return l.loadRevocations()
}

func (l *Lock) getRecord(key uint16, v any) error {
	raw, ok, err := l.store.Get(key)
	if err != nil {
		return fmt.Errorf("lock: reading record %#04x: %w", key, err)
	}
	if !ok {
		return nil
	}
	if err := stateDec.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("lock: record %#04x is corrupt: %w", key, err)
	}
	return nil
}

func (l *Lock) putRecord(key uint16, v any) error {
	b, err := stateEnc.Marshal(v)
	if err != nil {
		return err
	}
	if err := l.store.Put(key, b); err != nil {
		return fmt.Errorf("lock: writing record %#04x: %w", key, err)
	}
	return nil
}

// saveState writes the state record, with the clock floor brought up to
// now, so a reboot never turns the clock back.
func (l *Lock) saveState() error {
	if now := l.nowLocked().Unix(); now > l.st.ClockFloor {
		l.st.ClockFloor = now
	}
	return l.putRecord(keyState, &l.st)
}

func (l *Lock) saveBonds() error {
	bonds := make([]string, 0, len(l.bonds))
	for b := range l.bonds {
		bonds = append(bonds, b)
	}
	return l.putRecord(keyBonds, bonds)
}

// remember moves a finished command into Recent, keeping the newest.
func (st *state) remember(r commandRecord) {
	st.Recent = append(st.Recent, r)
	if len(st.Recent) > recentIDs {
		st.Recent = st.Recent[len(st.Recent)-recentIDs:]
	}
}

func (st *state) recent(id []byte) (commandRecord, bool) {
	for _, r := range st.Recent {
		if string(r.ID) == string(id) {
			return r, true
		}
	}
	return commandRecord{}, false
}

// makeRoom frees a counter slot for a new signer: only a signer whose every
// command seen has expired by the lock's clock may be forgotten, because
// any command of theirs that an attacker replays is then refused as
// expired — as long as the clock does not move back. Set-time may move it
// back, so the forgotten signer's latest not_after raises ForgetHorizon,
// and forgotten signers' commands are refused by it instead (forgotten).
func (st *state) makeRoom(now time.Time) bool {
	if len(st.Counters) < maxSigners {
		return true
	}
	for k, s := range st.Counters {
		if s.NotAfter < now.Unix() {
			delete(st.Counters, k)
			if s.NotAfter > st.ForgetHorizon {
				st.ForgetHorizon = s.NotAfter
			}
			return true
		}
	}
	return false
}

// forgotten reports whether a command of a signer not in the table, valid
// until notAfter, may be one of a forgotten signer: its not_after is not
// after the forget horizon.
func (st *state) forgotten(notAfter time.Time) bool {
	return notAfter.Unix() <= st.ForgetHorizon
}
