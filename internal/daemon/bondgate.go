package daemon

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/bonds"
)

// bondRetry is how long the daemon waits before trying again to bond with
// a lock whose last attempt failed: a lock whose window keeps failing is
// not hammered.
const bondRetry = 10 * time.Minute

// bondGate decides when the link bonds with a lock (bluelink's ShouldBond)
// and records the outcome in the database (OnBond): a lock whose bond is
// none or lost is bonded after a handshake, at most once per bondRetry.
type bondGate struct {
	db  *bonds.DB
	ctx context.Context
	now func() time.Time
	log *slog.Logger

	mu   sync.Mutex
	last map[bonds.LockID]time.Time       // last attempt allowed, this run
	prev map[bonds.LockID]bonds.BondState // the state then

	// outcomes counts what the link reported: bonded (a pairing done, or
	// a bond BlueZ already held) and failed.
	outcomes *prometheus.CounterVec
}

func newBondGate(ctx context.Context, db *bonds.DB, now func() time.Time, log *slog.Logger) *bondGate {
	g := &bondGate{db: db, ctx: ctx, now: now, log: log,
		last: map[bonds.LockID]time.Time{}, prev: map[bonds.LockID]bonds.BondState{},
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gatewayd_bonding_outcomes_total",
			Help: "Bluetooth bonds with locks reported by the link, by outcome: bonded (paired with the lock's one-time passkey, or BlueZ already held the bond), failed (retried after 10 minutes)."},
			[]string{"outcome"})}
	g.outcomes.WithLabelValues("bonded")
	g.outcomes.WithLabelValues("failed")
	return g
}

func (g *bondGate) shouldBond(id bonds.LockID, _ string) bool {
	l, err := g.db.Lock(g.ctx, id)
	if err != nil {
		return false // an unknown lock: SetBond could not record anything
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t, tried := g.last[id]
	switch {
	case tried && g.now().Sub(t) < bondRetry:
		return false // also: an attempt of this run still under way
	case l.Bond == bonds.BondNone, l.Bond == bonds.BondLost:
	case l.Bond == bonds.BondBonding && !tried:
		// Left over from a run that stopped mid-attempt: Reconcile leaves
		// bonding alone, so without this it would stay bonding forever.
	default:
		return false
	}
	g.last[id], g.prev[id] = g.now(), l.Bond
	return true
}

func (g *bondGate) onBond(id bonds.LockID, addr string, state bonds.BondState, err error) {
	switch {
	case err != nil:
		g.outcomes.WithLabelValues("failed").Inc()
	case state == bonds.BondBonded:
		g.outcomes.WithLabelValues("bonded").Inc()
	}
	if err != nil {
		g.mu.Lock()
		if g.prev[id] == bonds.BondLost {
			state = bonds.BondLost // a lost bond stays marked lost until bonded again
		}
		g.mu.Unlock()
		g.log.Info("bonding with a lock failed; will retry later", "lock", id.String(), "retry_in", bondRetry, "err", err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(g.ctx), 5*time.Second)
	defer cancel()
	if _, serr := g.db.SetBond(ctx, id, state, addr); serr != nil {
		g.log.Warn("recording a bond state failed", "lock", id.String(), "state", string(state), "err", serr)
	}
}
