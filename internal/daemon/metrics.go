package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/bonds"
)

// bondsCollector exports the database's counters (bonds.Stats).
type bondsCollector struct {
	db                              *bonds.DB
	commits, writes, flushes, seenQ *prometheus.Desc
}

func newBondsCollector(db *bonds.DB) *bondsCollector {
	return &bondsCollector{
		db:      db,
		commits: prometheus.NewDesc("gatewayd_bonds_commits_total", "Write transactions committed to the database, each one fsync (group commit puts several writes in one).", nil, nil),
		writes:  prometheus.NewDesc("gatewayd_bonds_writes_total", "Write requests committed (journal appends and transitions, acks, lock and user updates); commits/writes is fsyncs per write.", nil, nil),
		flushes: prometheus.NewDesc("gatewayd_bonds_seen_flushes_total", "Writes of the coalesced last-seen values of locks.", nil, nil),
		seenQ:   prometheus.NewDesc("gatewayd_bonds_seen_pending", "Locks whose last-seen values wait for the next flush.", nil, nil),
	}
}

func (c *bondsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.commits
	ch <- c.writes
	ch <- c.flushes
	ch <- c.seenQ
}

func (c *bondsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.db.Stats()
	ch <- prometheus.MustNewConstMetric(c.commits, prometheus.CounterValue, float64(s.Commits))
	ch <- prometheus.MustNewConstMetric(c.writes, prometheus.CounterValue, float64(s.Writes))
	ch <- prometheus.MustNewConstMetric(c.flushes, prometheus.CounterValue, float64(s.SeenFlushes))
	ch <- prometheus.MustNewConstMetric(c.seenQ, prometheus.GaugeValue, float64(s.SeenPending))
}
