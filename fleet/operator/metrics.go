package operator

import "github.com/prometheus/client_golang/prometheus"

// Metrics. Both Intake and Outbox are prometheus.Collectors: they read
// their atomics at scrape time and start no goroutine. Names are
// gatewayd_intake_* and gatewayd_outbox_*, without a label naming the
// gateway: like every gatewayd metric, the scrape target names the dock
// (docs/operations.md, "Monitoring").

func (in *Intake) initMetrics() {
	var l prometheus.Labels // none: the scrape target names the dock
	in.descCommands = prometheus.NewDesc("gatewayd_intake_commands_total",
		"Messages of the command topic decided, by outcome: journaled (new command ID, durable), duplicate (command ID already journaled), rejected (refused before the journal, with a notice).",
		[]string{"outcome"}, l)
	in.descRejected = prometheus.NewDesc("gatewayd_intake_rejected_total",
		"Messages refused before the journal, and duplicates, by reason; each gets a notice on the rejected topic (refusals of redeliveries count again).",
		[]string{"reason"}, l)
	in.descDepth = prometheus.NewDesc("gatewayd_intake_queue_depth",
		"Messages of the command topic received and not yet released (acknowledged or left for redelivery).",
		nil, l)
	in.descUnacked = prometheus.NewDesc("gatewayd_intake_unacked_total",
		"Messages left unacknowledged for the broker to redeliver, by cause: closed, notice_unpublished; and journal_error: failed attempts to journal a batch, whose messages (and all after them) wait unacknowledged until a retry succeeds.",
		[]string{"cause"}, l)
	in.descDropped = prometheus.NewDesc("gatewayd_intake_qos0_dropped_total",
		"QoS 0 messages of the command topic dropped because MaxQueued QoS 0 messages were waiting (QoS 0 has no redelivery: commands are sent with QoS 1).",
		nil, l)
	in.descSuppressed = prometheus.NewDesc("gatewayd_intake_notices_suppressed_total",
		"Refusals acknowledged without a rejection notice because notices were rate-limited (a flood of invalid messages); counted by reason in gatewayd_intake_rejected_total.",
		nil, l)
}

// Describe implements prometheus.Collector.
func (in *Intake) Describe(ch chan<- *prometheus.Desc) {
	ch <- in.descCommands
	ch <- in.descRejected
	ch <- in.descDepth
	ch <- in.descUnacked
	ch <- in.descDropped
	ch <- in.descSuppressed
}

// Collect implements prometheus.Collector.
func (in *Intake) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), label)
	}
	counter(in.descCommands, in.journaled.Load(), "journaled")
	counter(in.descCommands, in.duplicates.Load(), "duplicate")
	counter(in.descCommands, in.refused.Load(), "rejected")
	for _, r := range reasons {
		counter(in.descRejected, in.byReason[r].Load(), string(r))
	}
	ch <- prometheus.MustNewConstMetric(in.descDepth, prometheus.GaugeValue, float64(in.depth.Load()))
	for c := range nCauses {
		counter(in.descUnacked, in.unacked[c].Load(), causeNames[c])
	}
	ch <- prometheus.MustNewConstMetric(in.descDropped, prometheus.CounterValue, float64(in.qos0Dropped.Load()))
	ch <- prometheus.MustNewConstMetric(in.descSuppressed, prometheus.CounterValue, float64(in.suppressed.Load()))
}

func (o *Outbox) initMetrics() {
	var l prometheus.Labels // none: the scrape target names the dock
	o.descPending = prometheus.NewDesc("gatewayd_outbox_pending",
		"Results in the outbox not yet acknowledged by the broker, as of the last pass.", nil, l)
	o.descPublished = prometheus.NewDesc("gatewayd_outbox_published_total",
		"Results published on the result topic and acknowledged by the broker (republications after a restart included).", nil, l)
	o.descFailures = prometheus.NewDesc("gatewayd_outbox_publish_failures_total",
		"Failed publications of results (or of their removal from the outbox); each is retried after a backoff.", nil, l)
	o.descDuplicates = prometheus.NewDesc("gatewayd_outbox_duplicates_total",
		"Results published again after the broker had acknowledged them, because removing them from the outbox failed (a disk fault): subscribers receive them twice. Republications after a restart are not counted.", nil, l)
}

// Describe implements prometheus.Collector.
func (o *Outbox) Describe(ch chan<- *prometheus.Desc) {
	ch <- o.descPending
	ch <- o.descPublished
	ch <- o.descFailures
	ch <- o.descDuplicates
}

// Collect implements prometheus.Collector.
func (o *Outbox) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(o.descPending, prometheus.GaugeValue, float64(o.pending.Load()))
	ch <- prometheus.MustNewConstMetric(o.descPublished, prometheus.CounterValue, float64(o.published.Load()))
	ch <- prometheus.MustNewConstMetric(o.descFailures, prometheus.CounterValue, float64(o.failures.Load()))
	ch <- prometheus.MustNewConstMetric(o.descDuplicates, prometheus.CounterValue, float64(o.duplicates.Load()))
}
