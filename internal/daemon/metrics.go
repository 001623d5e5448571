package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/internal/version"
)

// newBuildInfo is gatewayd_build_info: 1, labelled with what runs, so a
// dashboard or an alert can tell which docks run which build.
func newBuildInfo(in version.Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "gatewayd_build_info",
		Help:        "Always 1; its labels say which build of gatewayd runs (version, commit, Go version).",
		ConstLabels: prometheus.Labels{"version": in.Version, "commit": in.Commit, "goversion": in.GoVersion}})
	g.Set(1)
	return g
}

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
