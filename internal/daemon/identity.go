package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bonds"
)

// A lock's record in the database stands for a lock that proved its
// identity: it is created by the first handshake in which the device
// proved a credential whose subject is the lock's ID (bluelink's
// OnVerified), with the address it proved it from. An advertisement alone
// (anyone can advertise any lock ID) writes nothing: it updates the
// last-seen values of a lock already recorded (coalesced in memory, no
// fsync), and wakes the scheduler. See docs/bluez.md, "Impostors".

// Records of locks that never completed a handshake (left by earlier
// versions, which recorded every advertised ID) expire: those not seen
// for unverifiedMaxAge are deleted, and of the rest at most
// unverifiedMax are kept, the most recently seen.
const (
	unverifiedMaxAge = 24 * time.Hour
	unverifiedMax    = 64
	unverifiedSweep  = time.Hour
)

// verifiedAddress is bluelink's Options.Address: the address a bonded
// lock proved its identity from, which Dial tries first.
func verifiedAddress(ctx context.Context, db *bonds.DB) func(bonds.LockID) string {
	return func(id bonds.LockID) string {
		l, err := db.Lock(ctx, id)
		if err != nil || (l.Bond != bonds.BondBonded && l.Bond != bonds.BondLost) {
			return ""
		}
		return l.Address
	}
}

// onVerified is bluelink's OnVerified: a lock proved its identity from
// addr. A lock without a record gets one (one write, on first contact),
// so the bond gate can record its bond; a record without a credential or
// address (an older version's, from an advertisement) gets them.
func (g *bondGate) onVerified(id bonds.LockID, addr string, credential []byte) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(g.ctx), 5*time.Second)
	defer cancel()
	l, err := g.db.Lock(ctx, id)
	switch {
	case errors.Is(err, bonds.ErrNotFound):
		err = g.db.PutLock(ctx, bonds.Lock{ID: id, Address: addr, Credential: bytes.Clone(credential), Bond: bonds.BondNone})
		if err == nil {
			g.log.Info("lock proved its identity: recorded", "lock", id.String(), "addr", addr)
		}
	case err == nil && (len(l.Credential) == 0 || (l.Bond == bonds.BondNone && l.Address != normAddr(addr))):
		_, err = g.db.UpdateLock(ctx, id, func(l *bonds.Lock) error {
			if len(l.Credential) == 0 {
				l.Credential = bytes.Clone(credential)
			}
			if l.Bond == bonds.BondNone {
				l.Address = addr
			}
			return nil
		})
	}
	if err != nil {
		g.log.Warn("recording a lock that proved its identity", "lock", id.String(), "err", err)
	}
}

// onRefused is bluelink's OnRefused: the device at addr did not prove
// lock id's identity. If the database holds addr as the lock's address
// (written by an older version from an advertisement, or adopted from
// BlueZ), the address and any bond with it are forgotten: the lock's bond
// state becomes none, so the lock is bonded again at its real address,
// and the reconciler removes BlueZ's bond with addr, which no lock has
// any more.
func (g *bondGate) onRefused(id bonds.LockID, addr, presented string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(g.ctx), 5*time.Second)
	defer cancel()
	l, err := g.db.Lock(ctx, id)
	if err != nil || l.Address == "" || l.Address != normAddr(addr) {
		return
	}
	if _, err := g.db.UpdateLock(ctx, id, func(l *bonds.Lock) error {
		if l.Address == normAddr(addr) {
			l.Address, l.Bond, l.BondedAt = "", bonds.BondNone, time.Time{}
		}
		return nil
	}); err != nil {
		g.log.Warn("forgetting a refused device's address", "lock", id.String(), "addr", addr, "err", err)
		return
	}
	g.log.Warn("the lock's recorded address did not prove its identity: address and bond forgotten",
		"lock", id.String(), "addr", addr, "presented_lock", presented, "bond_was", string(l.Bond))
}

// normAddr is the form bonds stores addresses in.
func normAddr(a string) string { return string(bytes.ToUpper(bytes.TrimSpace([]byte(a)))) }

// pruneUnverified deletes the records of locks that never completed a
// handshake: no credential, no bond, no users, and not seen for maxAge;
// of those left, all but the max most recently seen. The ones it keeps
// lose the address an advertisement gave them, which nothing proved, so
// that bond reconciliation never adopts a bond with it. It returns how
// many it deleted.
func pruneUnverified(ctx context.Context, db *bonds.DB, now time.Time, maxAge time.Duration, max int) (int, error) {
	// Streamed: only the unproven records are kept (issue 14: with
	// 100,000 locks, decoding them all at start cost 100s of MB).
	locks, err := db.UnprovenLocks(ctx)
	if err != nil {
		return 0, err
	}
	type cand struct {
		id      bonds.LockID
		seen    time.Time
		address bool
	}
	var unverified []cand
	for _, l := range locks {
		users, err := db.Users(ctx, l.ID)
		if err != nil {
			return 0, err
		}
		if len(users) > 0 {
			continue // an operator asked for users: keep it
		}
		unverified = append(unverified, cand{l.ID, l.Seen, l.HasAddress})
	}
	// Most recently seen first: beyond max, or too old, goes.
	slices.SortFunc(unverified, func(a, b cand) int { return b.seen.Compare(a.seen) })
	n := 0
	for i, c := range unverified {
		if i < max && now.Sub(c.seen) < maxAge {
			if c.address {
				_, err := db.UpdateLock(ctx, c.id, func(l *bonds.Lock) error {
					if len(l.Credential) == 0 && l.Bond == bonds.BondNone {
						l.Address = ""
					}
					return nil
				})
				if err != nil && !errors.Is(err, bonds.ErrNotFound) {
					return n, err
				}
			}
			continue
		}
		if err := db.DeleteLock(ctx, c.id); err != nil && !errors.Is(err, bonds.ErrNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}

// sweepUnverified runs pruneUnverified at start and every
// unverifiedSweep until ctx ends.
func sweepUnverified(ctx context.Context, db *bonds.DB, now func() time.Time, log *slog.Logger) {
	t := time.NewTicker(unverifiedSweep)
	defer t.Stop()
	for {
		n, err := pruneUnverified(ctx, db, now(), unverifiedMaxAge, unverifiedMax)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("deleting records of locks that never proved their identity", "err", err)
		case n > 0:
			log.Info("deleted records of locks that never proved their identity", "deleted", n,
				"max_age", unverifiedMaxAge, "max", unverifiedMax)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// provenAddress returns the address lock id last proved its identity
// from (its record's address, which onVerified sets from the handshake and
// onRefused clears), or "" when nothing proved one: no record, a record
// without the lock's credential (an older version's, from an
// advertisement), or an address forgotten. The presence marks the entries
// from this address verified.
func provenAddress(ctx context.Context, db *bonds.DB, id bonds.LockID) string {
	l, err := db.Lock(ctx, id)
	if err != nil || len(l.Credential) == 0 {
		return ""
	}
	return normAddr(l.Address)
}

// recordSighting handles one of the adapter's events: the last-seen
// values of a recorded lock are updated (in memory, coalesced: no fsync),
// an advertised ID without a record writes nothing, and a lock coming
// into range wakes the scheduler (wake), which may hold commands for it.
// Once the lock proved its identity from an address, only advertisements
// from that address update its last-seen values: another device
// advertising its ID (an impostor) cannot set its battery, signal or
// last-seen time.
func recordSighting(ctx context.Context, db *bonds.DB, ev bluez.Event, wake func(bonds.LockID), log *slog.Logger) {
	li := ev.Lock
	if li.Err != nil || li.LockID == ([8]byte{}) || ev.Kind == bluez.Gone {
		return
	}
	id := bonds.LockID(li.LockID)
	if p := provenAddress(ctx, db, id); p == "" || p == normAddr(li.Address) {
		err := db.UpdateSeen(id, li.LastSeen, int(li.RSSI), int(li.Battery), "")
		if err != nil && !errors.Is(err, bonds.ErrNotFound) && ctx.Err() == nil && log != nil {
			log.Warn("recording a lock's presence", "lock", id, "err", err)
		}
	}
	// Appeared or Updated: heard now. A lock that stays in range never
	// appears again, however long its backoff (the scheduler retries a
	// lock heard since its last failure soon).
	wake(id)
}
