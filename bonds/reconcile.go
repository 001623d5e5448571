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
	paired := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		paired[normAddr(a)] = true
	}
	type victim struct {
		id     LockID
		addr   string
		paired bool
	}
	// One streaming pass over the locks, decoding only what is compared
	// (issue 14: 100,000 locks decoded whole into a slice cost 100s of MB);
	// the few changes are written after it, as before in ID order.
	known := make(map[string]bool, len(addrs))
	var lost, adopted []LockID
	var victims []victim
	err = db.eachLockBond(ctx, evictAfter > 0, func(l *lockBond) error {
		bond, bondedAt := l.Bond, l.BondedAt
		if pol != nil && l.Address != "" {
			has := paired[l.Address]
			if has {
				known[l.Address] = true
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
		last := l.LastSeen
		if last.IsZero() {
			last = bondedAt
		}
		if last.IsZero() {
			last = l.CreatedAt
		}
		if last.Before(cutoff) {
			victims = append(victims, victim{l.ID, l.Address, paired[l.Address]})
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
	for _, a := range addrs {
		if pol == nil {
			break
		}
		a = normAddr(a)
		if known[a] {
			continue
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

// lockBond is what Reconcile and Evict read of a lock record.
type lockBond struct {
	ID        LockID    `json:"id"`
	Address   string    `json:"address,omitempty"`
	Bond      BondState `json:"bond"`
	BondedAt  time.Time `json:"bonded_at,omitzero"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	CreatedAt time.Time `json:"created_at"`
}

// eachLockBond streams the locks in ID order, each decoded only as far
// as lockBond (the credential, counters and the rest are skipped, not
// decoded) with the UpdateSeen value not yet written applied, to fn, in
// one read transaction: nothing is kept but what fn keeps. Without
// times, the times may be left zero (Reconcile does not read them). fn must not
// write. A record that is not a valid JSON object or whose lockBond
// fields do not decode is an error naming its key, as in Locks.
func (db *DB) eachLockBond(ctx context.Context, times bool, fn func(*lockBond) error) error {
	var l lockBond
	err := db.view(func(tx *bolt.Tx) error {
		return forEachResident(tx, tx.Bucket(bucketLocks), func(k, v []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !fastLockBond(v, &l, times) {
				l = lockBond{}
				if err := json.Unmarshal(v, &l); err != nil {
					return fmt.Errorf("lock %x: %w", k, err)
				}
			}
			db.seenMu.Lock()
			s, ok := db.seen[l.ID]
			db.seenMu.Unlock()
			if ok && s.hasSeen && !s.seen.Before(l.LastSeen) {
				l.LastSeen = s.seen // as seenUpdate.apply
			}
			return fn(&l)
		})
	})
	if err != nil {
		return fmt.Errorf("bonds: locks: %w", err)
	}
	return nil
}

var lockBondKeys = []string{"id", "address", "bond", "bonded_at", "last_seen", "created_at"}

// fastLockBond reads l from a lock record through topStrings; false if
// it cannot, and then the caller decodes with encoding/json.
func fastLockBond(v []byte, l *lockBond, times bool) bool {
	var vals [6]string
	if !topStrings(v, lockBondKeys, vals[:]) {
		return false
	}
	*l = lockBond{Address: vals[1], Bond: BondState(vals[2])}
	if l.ID.UnmarshalText([]byte(vals[0])) != nil {
		return false
	}
	for i, t := range []*time.Time{&l.BondedAt, &l.LastSeen, &l.CreatedAt} {
		if s := vals[3+i]; s != "" && times {
			var err error
			if *t, err = time.Parse(time.RFC3339Nano, s); err != nil {
				return false
			}
		}
	}
	return true
}
