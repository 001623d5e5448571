package bonds

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

func getLock(tx *bolt.Tx, id LockID) (Lock, error) {
	v := tx.Bucket(bucketLocks).Get(id[:])
	if v == nil {
		return Lock{}, ErrNotFound
	}
	var l Lock
	if err := decode(v, &l); err != nil {
		return Lock{}, fmt.Errorf("lock record: %w", err)
	}
	return l, nil
}

func putLock(tx *bolt.Tx, l *Lock) error {
	v, err := encode(l)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketLocks).Put(l.ID[:], v)
}

func validLock(l *Lock) error {
	if l.ID.IsZero() {
		return fmt.Errorf("zero lock ID: %w", ErrInvalid)
	}
	if !l.Bond.Valid() {
		return fmt.Errorf("bond state %q: %w", l.Bond, ErrInvalid)
	}
	if (l.Bond == BondBonded || l.Bond == BondLost) && l.Address == "" {
		return fmt.Errorf("bond state %s without an address: %w", l.Bond, ErrInvalid)
	}
	return nil
}

// normAddr is the form addresses are stored and compared in.
func normAddr(a string) string { return strings.ToUpper(strings.TrimSpace(a)) }

// PutLock creates or replaces a lock's record. An empty Bond means none;
// CreatedAt is kept from an existing record, UpdatedAt is set.
func (db *DB) PutLock(ctx context.Context, l Lock) error {
	if l.Bond == "" {
		l.Bond = BondNone
	}
	l.Address = normAddr(l.Address)
	if err := validLock(&l); err != nil {
		return fmt.Errorf("bonds: put lock %s: %w", l.ID, err)
	}
	now := db.now()
	err := db.write(ctx, func(tx *bolt.Tx) error {
		rec := l
		rec.Counters = maps.Clone(l.Counters)
		rec.CreatedAt, rec.UpdatedAt = now, now
		if rec.Bond == BondBonded && rec.BondedAt.IsZero() {
			rec.BondedAt = now
		}
		if old, err := getLock(tx, l.ID); err == nil {
			rec.CreatedAt = old.CreatedAt
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		return putLock(tx, &rec)
	})
	if err != nil {
		return fmt.Errorf("bonds: put lock %s: %w", l.ID, err)
	}
	return nil
}

// UpdateLock reads a lock's record, lets fn change it and writes it back,
// in one transaction. fn may run more than once and must only modify the
// record; an error from fn aborts the update.
func (db *DB) UpdateLock(ctx context.Context, id LockID, fn func(*Lock) error) (Lock, error) {
	now := db.now()
	var out Lock
	err := db.write(ctx, func(tx *bolt.Tx) error {
		l, err := getLock(tx, id)
		if err != nil {
			return err
		}
		if err := fn(&l); err != nil {
			return err
		}
		l.ID, l.UpdatedAt, l.Address = id, now, normAddr(l.Address)
		if l.Bond == BondBonded && l.BondedAt.IsZero() {
			l.BondedAt = now
		}
		if err := validLock(&l); err != nil {
			return err
		}
		out = l
		return putLock(tx, &l)
	})
	if err != nil {
		return Lock{}, fmt.Errorf("bonds: update lock %s: %w", id, err)
	}
	return db.overlaySeen(out), nil
}

// DeleteLock removes a lock with its users and audit cursor. Its journal
// entries stay (they are history, pruned by age).
func (db *DB) DeleteLock(ctx context.Context, id LockID) error {
	err := db.write(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketLocks).Get(id[:]) == nil {
			return ErrNotFound
		}
		if err := tx.Bucket(bucketLocks).Delete(id[:]); err != nil {
			return err
		}
		if err := tx.Bucket(bucketAudit).Delete(id[:]); err != nil {
			return err
		}
		u := tx.Bucket(bucketUsers)
		var keys [][]byte
		c := u.Cursor()
		for k, _ := c.Seek(id[:]); k != nil && bytes.HasPrefix(k, id[:]); k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			if err := u.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bonds: delete lock %s: %w", id, err)
	}
	db.seenMu.Lock()
	delete(db.seen, id)
	db.seenMu.Unlock()
	return nil
}

// Lock returns a lock's record, with the UpdateSeen and UpdateLockFacts
// values not yet written applied.
func (db *DB) Lock(ctx context.Context, id LockID) (Lock, error) {
	var l Lock
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		l, err = getLock(tx, id)
		return err
	})
	if err != nil {
		return Lock{}, fmt.Errorf("bonds: lock %s: %w", id, err)
	}
	return db.overlaySeen(l), nil
}

// Locks returns every lock, ordered by ID, with the UpdateSeen and
// UpdateLockFacts values not yet written applied.
func (db *DB) Locks(ctx context.Context) ([]Lock, error) {
	var out []Lock
	err := db.view(func(tx *bolt.Tx) error {
		return eachRecord(ctx, tx, bucketLocks, "lock", nil, func(_ []byte, l *Lock) error {
			out = append(out, *l)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bonds: locks: %w", err)
	}
	db.seenMu.Lock()
	for i := range out {
		if s, ok := db.seen[out[i].ID]; ok {
			s.apply(&out[i])
		}
	}
	db.seenMu.Unlock()
	return out, nil
}

// SetBond records a bond state and, if not empty, the lock's BLE identity
// address. Entering bonded sets BondedAt; none clears it.
func (db *DB) SetBond(ctx context.Context, id LockID, state BondState, addr string) (Lock, error) {
	now := db.now()
	return db.UpdateLock(ctx, id, func(l *Lock) error {
		if addr != "" {
			l.Address = addr
		}
		if state == BondBonded && l.Bond != BondBonded {
			l.BondedAt = now
		}
		if state == BondNone {
			l.BondedAt = time.Time{}
		}
		l.Bond = state
		return nil
	})
}

// SetClockOffset records the lock's clock minus the gateway's.
func (db *DB) SetClockOffset(ctx context.Context, id LockID, offset time.Duration) (Lock, error) {
	return db.UpdateLock(ctx, id, func(l *Lock) error { l.ClockOffset = offset; return nil })
}

// RaiseCounter records that the lock accepted counter n from signer kid
// (hex key ID). Counters only go up: a lower n leaves the record as it is.
// It returns the counter now recorded.
func (db *DB) RaiseCounter(ctx context.Context, id LockID, kid string, n uint64) (uint64, error) {
	if kid == "" {
		return 0, fmt.Errorf("bonds: raise counter of %s: empty signer key ID: %w", id, ErrInvalid)
	}
	l, err := db.UpdateLock(ctx, id, func(l *Lock) error {
		l.Counters = maps.Clone(l.Counters)
		if l.Counters == nil {
			l.Counters = map[string]uint64{}
		}
		l.Counters[kid] = max(l.Counters[kid], n)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return l.Counters[kid], nil
}

// seenUpdate is what UpdateSeen and UpdateLockFacts learned of one lock
// and flushSeen has not written yet. It is replaced, never modified in
// place (counters included), so a snapshot of it stays valid.
type seenUpdate struct {
	gen uint64 // DB.seenGen when last changed: a flush keeps a changed value

	hasSeen bool // an advertisement: seen, rssi
	seen    time.Time
	rssi    int

	battery, firmware         bool // battery / firmware known
	batteryFact, firmwareFact bool // ... from an answer, not an advertisement
	batteryPct                int
	firmwareVer               string
	hasClock                  bool
	clock                     time.Duration
	counters                  map[string]uint64 // highest accepted, per signer
}

// apply overlays s on l. An advertisement older than the record's
// LastSeen (a record written since with a later one) is not applied, nor
// the battery and firmware it carried; what answers told (battery,
// firmware, clock offset) is newer than the record, and counters only go
// up.
func (s seenUpdate) apply(l *Lock) {
	stale := s.hasSeen && s.seen.Before(l.LastSeen)
	if s.hasSeen && !stale {
		l.LastSeen, l.RSSI = s.seen, s.rssi
	}
	if s.battery && (s.batteryFact || !stale) {
		l.Battery = s.batteryPct
	}
	if s.firmware && (s.firmwareFact || !stale) {
		l.Firmware = s.firmwareVer
	}
	if s.hasClock {
		l.ClockOffset = s.clock
	}
	if len(s.counters) > 0 {
		c := make(map[string]uint64, len(l.Counters)+len(s.counters))
		maps.Copy(c, l.Counters)
		for k, v := range s.counters {
			c[k] = max(c[k], v)
		}
		l.Counters = c
	}
}

func (db *DB) overlaySeen(l Lock) Lock {
	db.seenMu.Lock()
	if s, ok := db.seen[l.ID]; ok {
		s.apply(&l)
	}
	db.seenMu.Unlock()
	return l
}

// lockExists reports ErrNotFound for a lock without a record.
func (db *DB) lockExists(id LockID) error {
	return db.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketLocks).Get(id[:]) == nil {
			return ErrNotFound
		}
		return nil
	})
}

// UpdateSeen records that a lock was seen (an advertisement): when, its
// RSSI, and, if battery >= 0 and firmware is not empty, its battery level
// and firmware version. It is called for every advertisement, so it does
// not write: the values are kept in memory, newest wins, and written every
// Options.SeenFlushInterval and at Close. A power loss therefore loses at
// most SeenFlushInterval of last-seen data, which only delays eviction
// (measured in days) by as much. Lock and Locks see the values at once.
// An advertisement older than the last one recorded is ignored.
func (db *DB) UpdateSeen(id LockID, seen time.Time, rssi, battery int, firmware string) error {
	if err := db.lockExists(id); err != nil {
		return fmt.Errorf("bonds: update seen %s: %w", id, err)
	}
	seen = seen.Round(0).UTC()
	db.seenMu.Lock()
	defer db.seenMu.Unlock()
	u := db.seen[id]
	if u.hasSeen && seen.Before(u.seen) {
		return nil
	}
	u.hasSeen, u.seen, u.rssi = true, seen, rssi
	if battery >= 0 {
		u.battery, u.batteryFact, u.batteryPct = true, false, battery
	}
	if firmware != "" {
		u.firmware, u.firmwareFact, u.firmwareVer = true, false, firmware
	}
	db.seenGen++
	u.gen = db.seenGen
	db.seen[id] = u
	return nil
}

// LockFacts is what one answer of a lock told about it, for
// UpdateLockFacts.
type LockFacts struct {
	// Battery is the battery level in percent; negative: unknown.
	Battery int
	// Firmware is the firmware version; empty: unknown.
	Firmware string
	// ClockOffset is the lock's clock minus the gateway's, if HasClock.
	ClockOffset time.Duration
	HasClock    bool
	// Counters maps a signer's key ID (hex) to the per-signer counter the
	// lock accepted; a counter lower than the one recorded changes
	// nothing.
	Counters map[string]uint64
}

// UpdateLockFacts records what an answer of the lock told about it: its
// battery, firmware and clock offset (newest wins, also against
// UpdateSeen's battery and firmware) and the signers' counters it
// accepted (the highest wins). Like UpdateSeen it does not write: the
// values are kept in memory and written with UpdateSeen's, every
// Options.SeenFlushInterval and at Close, so a command's bookkeeping costs
// no fsync. Lock, Locks and UpdateLock's result include them at once, so
// the MQTT intake's counter check sees a counter as soon as the lock
// accepted it. A power loss loses at most SeenFlushInterval of these
// facts: the battery, firmware and clock offset are measured again by the
// next answer, and a lost counter only weakens the gateway's early replay
// check (a replayed command reaches the lock, which enforces its counters
// itself and refuses it). It returns ErrNotFound for an unknown lock.
func (db *DB) UpdateLockFacts(id LockID, f LockFacts) error {
	for kid := range f.Counters {
		if kid == "" {
			return fmt.Errorf("bonds: update lock facts %s: empty signer key ID: %w", id, ErrInvalid)
		}
	}
	if err := db.lockExists(id); err != nil {
		return fmt.Errorf("bonds: update lock facts %s: %w", id, err)
	}
	db.seenMu.Lock()
	defer db.seenMu.Unlock()
	u := db.seen[id]
	if f.Battery >= 0 {
		u.battery, u.batteryFact, u.batteryPct = true, true, f.Battery
	}
	if f.Firmware != "" {
		u.firmware, u.firmwareFact, u.firmwareVer = true, true, f.Firmware
	}
	if f.HasClock {
		u.hasClock, u.clock = true, f.ClockOffset
	}
	if len(f.Counters) > 0 {
		c := make(map[string]uint64, len(u.counters)+len(f.Counters))
		maps.Copy(c, u.counters)
		for k, v := range f.Counters {
			c[k] = max(c[k], v)
		}
		u.counters = c
	}
	db.seenGen++
	u.gen = db.seenGen
	db.seen[id] = u
	return nil
}

// FlushSeen writes the coalesced UpdateSeen and UpdateLockFacts values
// now, in one transaction.
func (db *DB) FlushSeen(ctx context.Context) error {
	if err := db.flushSeen(ctx); err != nil {
		return fmt.Errorf("bonds: flush seen: %w", err)
	}
	return nil
}

func (db *DB) flushSeen(ctx context.Context) error {
	db.seenMu.Lock()
	if len(db.seen) == 0 {
		db.seenMu.Unlock()
		return nil
	}
	snap := maps.Clone(db.seen)
	db.seenMu.Unlock()
	err := db.write(ctx, func(tx *bolt.Tx) error {
		for id, s := range snap {
			l, err := getLock(tx, id)
			if errors.Is(err, ErrNotFound) {
				continue // deleted since
			} else if err != nil {
				return err
			}
			s.apply(&l)
			if err := putLock(tx, &l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	db.seenFlushes.Add(1)
	db.seenMu.Lock()
	for id, s := range snap {
		if cur, ok := db.seen[id]; ok && cur.gen == s.gen {
			delete(db.seen, id) // not updated since the snapshot
		}
	}
	db.seenMu.Unlock()
	return nil
}

// SetDesiredUser records what an operator asked for a user of a lock:
// present (add-user) or absent (remove-user), by which command. A new
// record's confirmed state is unknown.
func (db *DB) SetDesiredUser(ctx context.Context, lock LockID, userID string, slot int, desired Presence, by CommandID) (User, error) {
	if userID == "" || len(userID) > MaxUserID || !desired.validDesired() {
		return User{}, fmt.Errorf("bonds: set desired user %q of %s: user ID of 1..%d bytes and present or absent: %w", userID, lock, MaxUserID, ErrInvalid)
	}
	now := db.now()
	var out User
	err := db.write(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketLocks).Get(lock[:]) == nil {
			return ErrNotFound
		}
		u := User{LockID: lock, UserID: userID, Confirmed: Unknown}
		if v := tx.Bucket(bucketUsers).Get(userKey(lock, userID)); v != nil {
			if err := decode(v, &u); err != nil {
				return fmt.Errorf("user record: %w", err)
			}
		}
		u.Slot, u.Desired, u.DesiredAt, u.DesiredBy = slot, desired, now, by
		out = u
		return putUser(tx, &u)
	})
	if err != nil {
		return User{}, fmt.Errorf("bonds: set desired user %q of %s: %w", userID, lock, err)
	}
	return out, nil
}

// ConfirmUser records what the lock confirmed for a user: present,
// absent, or unknown.
func (db *DB) ConfirmUser(ctx context.Context, lock LockID, userID string, confirmed Presence) (User, error) {
	if !confirmed.validConfirmed() {
		return User{}, fmt.Errorf("bonds: confirm user %q of %s: presence %q: %w", userID, lock, confirmed, ErrInvalid)
	}
	now := db.now()
	var out User
	err := db.write(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketUsers).Get(userKey(lock, userID))
		if v == nil {
			return ErrNotFound
		}
		var u User
		if err := decode(v, &u); err != nil {
			return fmt.Errorf("user record: %w", err)
		}
		u.Confirmed, u.ConfirmedAt = confirmed, now
		out = u
		return putUser(tx, &u)
	})
	if err != nil {
		return User{}, fmt.Errorf("bonds: confirm user %q of %s: %w", userID, lock, err)
	}
	return out, nil
}

func putUser(tx *bolt.Tx, u *User) error {
	v, err := encode(u)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketUsers).Put(userKey(u.LockID, u.UserID), v)
}

// Users returns a lock's users, ordered by user ID.
func (db *DB) Users(ctx context.Context, lock LockID) ([]User, error) {
	var out []User
	err := db.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketLocks).Get(lock[:]) == nil {
			return ErrNotFound
		}
		c := tx.Bucket(bucketUsers).Cursor()
		for k, v := c.Seek(lock[:]); k != nil && bytes.HasPrefix(k, lock[:]); k, v = c.Next() {
			var u User
			if err := decode(v, &u); err != nil {
				return fmt.Errorf("user %x: %w", k, err)
			}
			out = append(out, u)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bonds: users of %s: %w", lock, err)
	}
	return out, nil
}

// AuditCursor returns how far the gateway has read a lock's audit log.
func (db *DB) AuditCursor(ctx context.Context, lock LockID) (AuditCursor, error) {
	var c AuditCursor
	err := db.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAudit).Get(lock[:])
		if v == nil {
			return ErrNotFound
		}
		return decode(v, &c)
	})
	if err != nil {
		return AuditCursor{}, fmt.Errorf("bonds: audit cursor of %s: %w", lock, err)
	}
	return c, nil
}

// SetAuditCursor records how far the gateway has read a lock's audit log.
func (db *DB) SetAuditCursor(ctx context.Context, lock LockID, c AuditCursor) error {
	v, err := encode(c)
	if err == nil {
		err = db.write(ctx, func(tx *bolt.Tx) error {
			if tx.Bucket(bucketLocks).Get(lock[:]) == nil {
				return ErrNotFound
			}
			return tx.Bucket(bucketAudit).Put(lock[:], v)
		})
	}
	if err != nil {
		return fmt.Errorf("bonds: set audit cursor of %s: %w", lock, err)
	}
	return nil
}
