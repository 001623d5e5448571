package fleet

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
)

// metrics are the scheduler's Prometheus metrics, named
// gatewayd_fleet_<name>_<unit>.
type metrics struct {
	queued     prometheus.GaugeFunc
	sessions   prometheus.GaugeFunc
	results    *prometheus.CounterVec
	received   *prometheus.CounterVec
	attempts   prometheus.Counter
	linkErrors *prometheus.CounterVec
	duration   prometheus.Histogram

	chainBreaks   *prometheus.CounterVec
	auditEntries  prometheus.Counter
	auditMissed   prometheus.Counter
	auditFailures *prometheus.CounterVec
	// journalErrors counts journal writes that failed as a whole (each
	// is retried: see Scheduler.write).
	journalErrors prometheus.Counter
	// yields counts sessions ended at a command boundary for more urgent
	// work (see Scheduler.yield).
	yields prometheus.Counter
}

func newMetrics(s *Scheduler) *metrics {
	m := &metrics{
		queued: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gatewayd_fleet_commands_queued",
			Help: "Commands waiting for their lock (received or queued, not running).",
		}, func() float64 { return float64(s.waiting()) }),
		sessions: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gatewayd_fleet_sessions_active",
			Help: "Sessions with locks open now.",
		}, func() float64 { return float64(s.active.Load()) }),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatewayd_fleet_results_total",
			Help: "Commands that reached a terminal state, by operation (lock, unlock, status, ...) and state.",
		}, []string{"operation", "state"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatewayd_fleet_commands_received_total",
			Help: "Commands journaled and handed to the scheduler to run, by operation (refusals and duplicates are gatewayd_intake_commands_total's).",
		}, []string{"operation"}),
		attempts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatewayd_fleet_attempts_total",
			Help: "Attempts to run a command (entries into running).",
		}),
		linkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatewayd_fleet_link_errors_total",
			Help: "Failed connects, handshakes and requests, by whether they were retried.",
		}, []string{"retryable"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gatewayd_fleet_command_duration_seconds",
			Help:    "Time from a command's receipt to its result.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900},
		}),
		journalErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatewayd_fleet_journal_write_failures_total",
			Help: "Journal writes of the scheduler that failed (a full or read-only disk, EIO); each is retried with a short backoff, the commands waiting in order.",
		}),
	}
	m.yields = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatewayd_fleet_session_yields_total",
		Help: "Sessions ended at a command boundary, their lock's remaining commands waiting again, because a lock with more urgent commands (lock, unlock before user management before status and audit reads) waited for a session slot.",
	})
	m.chainBreaks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatewayd_audit_chain_breaks_total",
		Help: "Audit pages from locks that did not extend the hash chain the gateway holds, by reason (altered, reordered, gap, rewound, malformed, signature); the cursor stays.",
	}, []string{"reason"})
	m.auditEntries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatewayd_audit_entries_read_total",
		Help: "Audit entries read from locks, verified and queued for the broker.",
	})
	m.auditMissed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatewayd_audit_entries_missed_total",
		Help: "Audit entries a lock overwrote before the gateway read them.",
	})
	m.auditFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatewayd_audit_read_failures_total",
		Help: "Audit reads that stopped early, by cause: link, refused (by the lock), store (database), backlog (entries wait for the broker).",
	}, []string{"cause"})
	for _, r := range breakReasons {
		m.chainBreaks.WithLabelValues(r)
	}
	for _, c := range []string{"link", "refused", "store", "backlog"} {
		m.auditFailures.WithLabelValues(c)
	}
	// The operators' operations start at zero, so that a rate or an
	// increase over them is 0, not absent, before the first result.
	for _, op := range []command.Op{command.OpLock, command.OpUnlock, command.OpStatus, command.OpAddUser, command.OpRemoveUser, command.OpListUsers} {
		m.received.WithLabelValues(op.String())
		for _, st := range []bonds.State{bonds.StateSucceeded, bonds.StateFailed, bonds.StateExpired, bonds.StateRejected} {
			m.results.WithLabelValues(op.String(), string(st))
		}
	}
	m.linkErrors.WithLabelValues("true")
	m.linkErrors.WithLabelValues("false")
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.queued, m.sessions, m.results, m.received, m.attempts, m.linkErrors, m.duration,
		m.chainBreaks, m.auditEntries, m.auditMissed, m.auditFailures, m.journalErrors, m.yields}
}

// Describe implements prometheus.Collector: register the Scheduler with a
// prometheus.Registerer to export gatewayd_fleet_commands_queued,
// sessions_active, results_total{operation,state},
// commands_received_total{operation}, attempts_total,
// link_errors_total{retryable}, command_duration_seconds,
// journal_write_failures_total, session_yields_total, and the audit reader's
// gatewayd_audit_chain_breaks_total{reason}, entries_read_total,
// entries_missed_total and read_failures_total{cause}.
func (s *Scheduler) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.met.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (s *Scheduler) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s.met.collectors() {
		c.Collect(ch)
	}
}

// opLabel is the operation label of a journal entry's operation: its name
// if this build knows it, else "unknown" (a label value never comes from
// arbitrary bytes).
func opLabel(op string) string {
	if _, ok := command.ParseOp(op); ok {
		return op
	}
	return "unknown"
}
