package bonds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Paired is what Reconcile and Evict need from BlueZ: the addresses of the
// adapter's bonded (paired) devices, and removing one's bond. It is defined
// here, at the consumer; the bluez client satisfies it through a small
// adapter in the daemon, so bonds/ does not import bluez/.
type Paired interface {
	PairedDevices(ctx context.Context) ([]string, error)
	RemoveBond(ctx context.Context, addr string) error
}

// Policy decides what Reconcile does with orphans.
type Policy struct {
	// KeepUnknown, if not nil, is asked about each bond BlueZ holds for an
	// address no lock in the database has; true keeps it (a phone or tool
	// bonded on purpose). By default such a bond is removed: it is a
	// stranger or a leftover.
	KeepUnknown func(addr string) bool
}

// Report says what Reconcile or Evict did.
type Report struct {
	Lost    []LockID // database said bonded, BlueZ had no bond: now lost
	Adopted []LockID // BlueZ had a bond for a known lock the database did not count as bonded: now bonded
	Removed []string // bonds removed from BlueZ (unknown addresses, or evicted locks)
	Kept    []string // unknown addresses kept by the policy
	Evicted []LockID // locks whose bond was evicted: now none
	Errors  []error  // per-device failures; the rest went on
}

// Reconcile makes the database's bonds and BlueZ's agree, once:
//   - a lock the database has as bonded with no bond in BlueZ becomes
//     lost: it needs re-bonding, and is never silently deleted (a lock in
//     bonding is left alone: its pairing may be under way, and the bonding
//     flow sets the outcome);
//   - a bond in BlueZ for a known lock's address that the database does
//     not have as bonded is adopted (bonded): the bond is real;
//   - a bond in BlueZ for an address no lock has is removed from BlueZ,
//     unless the policy keeps it.
//
// Failures to remove one bond are collected in the report; an error is
// returned only when BlueZ or the database could not be read or written.
func (db *DB) Reconcile(ctx context.Context, p Paired, pol Policy) (Report, error) {
	return db.reconcile(ctx, p, &pol, 0)
}

// Evict removes the bonds of locks not seen for olderThan (by last seen,
// else bonded_at, else created_at): first in BlueZ (if BlueZ has one),
// then, if that worked, the database's bond state becomes none. The lock's
// record stays.
func (db *DB) Evict(ctx context.Context, p Paired, olderThan time.Duration) (Report, error) {
	if olderThan <= 0 {
		return Report{}, fmt.Errorf("bonds: evict: age %v: %w", olderThan, ErrInvalid)
	}
	return db.reconcile(ctx, p, nil, olderThan)
}

// reconcile is Reconcile with pol (nil: none of it) followed by Evict with
// evictAfter (0: none of it), as the Reconciler runs them: with one
// PairedDevices call and one streaming pass over the locks (issue 14: two
// passes, each decoding all 100,000 locks, were most of the start-up
// reads), deciding on what Reconcile's changes make of each lock (an
// adopted bond counts as bonded now, a lost one as lost), and writing
// the few changes after it in the order the two would: lost, adopted,
// unknown bonds removed, then the evictions.
func (db *DB) reconcile(ctx context.Context, p Paired, pol *Policy, evictAfter time.Duration) (Report, error) {
	var rep Report
	what := "reconcile"
	if pol == nil {
		what = "evict"
	}
	now := db.now()
	cutoff := now.Add(-evictAfter)
	addrs, err := p.PairedDevices(ctx)
	if err != nil {
		return rep, fmt.Errorf("bonds: %s: paired devices: %w", what, err)
	}
	// paired indexes known: one map lookup per lock.
	paired := make(map[string]int, len(addrs))
	for i, a := range addrs {
		addrs[i] = normAddr(a)
		paired[addrs[i]] = i
	}
	known := make([]bool, len(addrs)) // an address some lock has
	type victim struct {
		id     LockID
		addr   string
		paired bool
	}
	// One streaming pass over the locks, decoding only what is compared
	// (issue 14: 100,000 locks decoded whole into a slice cost 100s of MB);
	// the few changes are written after it, as before in ID order.
	var lost, adopted []LockID
	var victims []victim
	err = db.eachLockBond(ctx, func(l *lockBond) error {
		bond, bondedAt := l.Bond, time.Time{}
		i, has := paired[string(l.Address)]
		if pol != nil && len(l.Address) > 0 {
			if has {
				known[i] = true
			}
			switch {
			case !has && bond == BondBonded:
				lost = append(lost, l.ID)
				bond = BondLost
			case has && bond != BondBonded:
				adopted = append(adopted, l.ID)
				bond, bondedAt = BondBonded, now // as SetBond
			}
		}
		if evictAfter <= 0 || bond == BondNone {
			return nil
		}
		last, ok := l.lastActive(bondedAt)
		if !ok {
			return errBadTime
		}
		if last.Before(cutoff) {
			victims = append(victims, victim{l.ID, string(l.Address), has})
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("bonds: %s: %w", what, err)
	}
	for _, id := range lost {
		if _, err := db.SetBond(ctx, id, BondLost, ""); err != nil {
			return rep, fmt.Errorf("bonds: reconcile: %w", err)
		}
		rep.Lost = append(rep.Lost, id)
	}
	for _, id := range adopted {
		if _, err := db.SetBond(ctx, id, BondBonded, ""); err != nil {
			return rep, fmt.Errorf("bonds: reconcile: %w", err)
		}
		rep.Adopted = append(rep.Adopted, id)
	}
	for i, a := range addrs {
		if pol == nil {
			break
		}
		if known[i] || paired[a] != i {
			continue // a lock's, or listed twice
		}
		if pol.KeepUnknown != nil && pol.KeepUnknown(a) {
			rep.Kept = append(rep.Kept, a)
			continue
		}
		if err := p.RemoveBond(ctx, a); err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("remove bond %s: %w", a, err))
			continue
		}
		rep.Removed = append(rep.Removed, a)
	}
	for _, l := range victims {
		if l.paired {
			if err := p.RemoveBond(ctx, l.addr); err != nil {
				rep.Errors = append(rep.Errors, fmt.Errorf("evict %s: remove bond %s: %w", l.id, l.addr, err))
				continue
			}
			rep.Removed = append(rep.Removed, l.addr)
		}
		if _, err := db.SetBond(ctx, l.id, BondNone, ""); err != nil {
			return rep, fmt.Errorf("bonds: evict: %w", err)
		}
		rep.Evicted = append(rep.Evicted, l.id)
	}
	return rep, nil
}

// ReconcilerOptions configures a Reconciler.
type ReconcilerOptions struct {
	Policy Policy
	// Interval between runs (default 10 min); each wait is jittered by up
	// to ±10% so a fleet of gateways does not run in step.
	Interval time.Duration
	// EvictAfter, if positive, runs Evict with it after each Reconcile.
	EvictAfter time.Duration
	Logger     *slog.Logger
	// OnRun, if not nil, gets each run's report and error (tests, metrics).
	OnRun func(Report, error)
}

// Reconciler runs Reconcile (and Evict) at start and then periodically.
type Reconciler struct {
	db   *DB
	p    Paired
	opts ReconcilerOptions
	log  *slog.Logger

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewReconciler returns a Reconciler; Start starts it.
func NewReconciler(db *DB, p Paired, opts ReconcilerOptions) *Reconciler {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{db: db, p: p, opts: opts, log: opts.Logger.With("subsystem", "bonds"), done: make(chan struct{})}
}

// Start runs the first reconciliation at once and then one per interval,
// in its own goroutine, until ctx ends or Close.
func (r *Reconciler) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.closed {
		return fmt.Errorf("bonds: reconciler start: %w", ErrClosed)
	}
	r.started = true
	ctx, r.cancel = context.WithCancel(ctx)
	go r.loop(ctx)
	return nil
}

// Close stops the reconciler and waits for a run in progress to end.
func (r *Reconciler) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	started := r.started
	if r.cancel != nil {
		r.cancel()
	}
	r.mu.Unlock()
	if started {
		<-r.done
	}
	return nil
}

func (r *Reconciler) loop(ctx context.Context) {
	defer close(r.done)
	for {
		r.runOnce(ctx)
		j := time.Duration((rand.Float64()*0.2 - 0.1) * float64(r.opts.Interval))
		t := time.NewTimer(r.opts.Interval + j)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (r *Reconciler) runOnce(ctx context.Context) {
	pol := r.opts.Policy
	rep, err := r.db.reconcile(ctx, r.p, &pol, max(r.opts.EvictAfter, 0))
	switch {
	case err != nil && ctx.Err() == nil && !errors.Is(err, ErrClosed):
		r.log.Warn("reconciling bonds", "err", err)
	case err == nil && (len(rep.Lost)+len(rep.Adopted)+len(rep.Removed)+len(rep.Evicted)+len(rep.Errors) > 0):
		r.log.Info("reconciled bonds", "lost", len(rep.Lost), "adopted", len(rep.Adopted),
			"removed", len(rep.Removed), "kept", len(rep.Kept), "evicted", len(rep.Evicted), "errors", errors.Join(rep.Errors...))
	}
	if r.opts.OnRun != nil {
		r.opts.OnRun(rep, err)
	}
}

// lockBond is what Reconcile and Evict read of a lock record. From the
// fast path (fastLockBond) address and times are slices of the record,
// valid only while fn of eachLockBond runs, and the times are parsed only
// when asked for (lastActive); from encoding/json (the fallback) they are
// decoded at once.
type lockBond struct {
	ID            LockID
	Address       []byte
	Bond          BondState
	HasCredential bool
	// bondedAt, lastSeen, createdAt: parsed, or raw (then parsed on
	// demand; nil raw is the zero time).
	times [3]time.Time
	raw   [3][]byte
	seen  time.Time // an UpdateSeen value newer than the record's, or zero
}

// lockBondJSON is lockBond for encoding/json.
type lockBondJSON struct {
	ID         LockID    `json:"id"`
	Credential []byte    `json:"credential,omitempty"`
	Address    string    `json:"address,omitempty"`
	Bond       BondState `json:"bond"`
	BondedAt   time.Time `json:"bonded_at,omitzero"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
	CreatedAt  time.Time `json:"created_at"`
}

// time returns time i (0 bonded_at, 1 last_seen, 2 created_at); false if
// its text does not parse.
func (l *lockBond) time(i int) (time.Time, bool) {
	if r := l.raw[i]; r != nil {
		t, err := time.Parse(time.RFC3339Nano, string(r))
		if err != nil {
			return time.Time{}, false
		}
		l.times[i], l.raw[i] = t, nil
	}
	return l.times[i], true
}

// lastActive is when the lock was last known about: last seen (the
// record's, or a newer UpdateSeen value not written yet), else bondedAt
// (if not zero, else the record's bonded_at), else created_at; false if
// a time it needed did not parse.
func (l *lockBond) lastActive(bondedAt time.Time) (time.Time, bool) {
	last, ok := l.time(1)
	if !ok {
		return time.Time{}, false
	}
	if !l.seen.IsZero() && !l.seen.Before(last) {
		last = l.seen // as seenUpdate.apply
	}
	if !last.IsZero() {
		return last, true
	}
	if bondedAt.IsZero() {
		if bondedAt, ok = l.time(0); !ok {
			return time.Time{}, false
		}
	}
	if !bondedAt.IsZero() {
		return bondedAt, true
	}
	return l.time(2)
}

// seenOrCreated is when the lock was last seen (as lastActive), else
// created; false if a time it needed did not parse.
func (l *lockBond) seenOrCreated() (time.Time, bool) {
	last, ok := l.time(1)
	if !ok {
		return time.Time{}, false
	}
	if !l.seen.IsZero() && !l.seen.Before(last) {
		last = l.seen
	}
	if !last.IsZero() {
		return last, true
	}
	return l.time(2)
}

// UnprovenLock is a lock record that no handshake proved: no credential
// and bond none (what older versions recorded for every advertised ID).
type UnprovenLock struct {
	ID LockID
	// HasAddress: the record holds an address (which nothing proved).
	HasAddress bool
	// Seen is when it was last seen, else created.
	Seen time.Time
}

// UnprovenLocks returns the records no handshake proved, in ID order. It
// streams the locks, reading each only as far as its credential's
// presence, bond, address and times: its memory is what it returns, not
// the database's locks (issue 14: the daemon's sweep of these decoded
// every lock whole at start).
func (db *DB) UnprovenLocks(ctx context.Context) ([]UnprovenLock, error) {
	var out []UnprovenLock
	err := db.eachLockBond(ctx, func(l *lockBond) error {
		if l.HasCredential || l.Bond != BondNone {
			return nil
		}
		seen, ok := l.seenOrCreated()
		if !ok {
			return errBadTime
		}
		out = append(out, UnprovenLock{ID: l.ID, HasAddress: len(l.Address) > 0, Seen: seen})
		return nil
	})
	return out, err
}

// eachLockBond streams the locks in ID order, each read only as far as
// lockBond (the credential, counters and the rest are skipped, not
// decoded), to fn, in one read transaction: nothing is kept but what fn
// keeps (it must copy Address to keep it). fn must not write. A record
// that is not a valid JSON object or whose lockBond fields do not decode
// is an error naming its key, as in Locks; so is a time that does not
// parse when fn asks for it (lastActive).
func (db *DB) eachLockBond(ctx context.Context, fn func(*lockBond) error) error {
	var l lockBond
	err := db.view(func(tx *bolt.Tx) error {
		return forEachResident(tx, tx.Bucket(bucketLocks), func(k, v []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !fastLockBond(v, &l) {
				var j lockBondJSON
				if err := json.Unmarshal(v, &j); err != nil {
					return fmt.Errorf("lock %x: %w", k, err)
				}
				l = lockBond{ID: j.ID, Address: []byte(j.Address), Bond: j.Bond, HasCredential: len(j.Credential) > 0,
					times: [3]time.Time{j.BondedAt, j.LastSeen, j.CreatedAt}}
			}
			db.seenMu.Lock()
			s, ok := db.seen[l.ID]
			db.seenMu.Unlock()
			if ok && s.hasSeen {
				l.seen = s.seen
			}
			if err := fn(&l); err != nil {
				return fmt.Errorf("lock %x: %w", k, err)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("bonds: locks: %w", err)
	}
	return nil
}

var lockBondKeys = []string{"id", "address", "bond", "bonded_at", "last_seen", "created_at", "credential"}

// errBadTime is a lock record's time that does not parse.
var errBadTime = errors.New("a time does not parse")

// fastLockBond reads l from a lock record through topStrings, without
// allocating; false if it cannot, and then the caller decodes with
// encoding/json.
func fastLockBond(v []byte, l *lockBond) bool {
	var vals [7][]byte
	if !topStrings(v, lockBondKeys, vals[:]) {
		return false
	}
	*l = lockBond{Address: vals[1], raw: [3][]byte{vals[3], vals[4], vals[5]}, HasCredential: len(vals[6]) > 0}
	switch string(vals[2]) {
	case string(BondNone):
		l.Bond = BondNone
	case string(BondBonding):
		l.Bond = BondBonding
	case string(BondBonded):
		l.Bond = BondBonded
	case string(BondLost):
		l.Bond = BondLost
	default:
		return false
	}
	return l.ID.UnmarshalText(vals[0]) == nil
}
