package broker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	connected         prometheus.Gauge
	connects          prometheus.Counter
	connectionLost    prometheus.Counter
	received          prometheus.Counter
	acked             prometheus.Counter
	dropped           prometheus.Counter
	publishes         prometheus.Counter
	publishFailures   prometheus.Counter
	subscribeFailures prometheus.Counter
	unacked           prometheus.GaugeFunc
	oldestUnacked     prometheus.GaugeFunc
	takeovers         prometheus.Counter
	oversized         prometheus.Counter
}

// newMetrics returns the session's metrics; unacked reports the QoS 1
// messages waiting for their PUBACK and the age of the oldest.
func newMetrics(unacked func() (int, time.Duration)) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "gatewayd", Subsystem: "mqtt", Name: name, Help: help})
	}
	return &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "gatewayd", Subsystem: "mqtt", Name: "connected",
			Help: "1 while the MQTT session is connected and subscribed, else 0."}),
		connects:          c("connects_total", "MQTT connections established (first connect and every reconnect)."),
		connectionLost:    c("connection_lost_total", "MQTT connections lost without Close (network, broker or keepalive failures)."),
		received:          c("messages_received_total", "MQTT messages received from the broker (redeliveries included)."),
		acked:             c("messages_acked_total", "PUBACKs released to the broker for received QoS 1 messages."),
		dropped:           c("messages_dropped_total", "QoS 0 messages dropped because MaxQueued QoS 0 messages were already waiting for delivery (QoS 1 messages are never dropped: the broker's in-flight window bounds them)."),
		publishes:         c("publishes_total", "QoS 1 publishes the broker acknowledged."),
		publishFailures:   c("publish_failures_total", "Publishes that returned an error (context ended before the PUBACK, refused by the client, or session closed)."),
		subscribeFailures: c("subscribe_failures_total", "Subscriptions the broker refused (SUBACK 0x80) or that failed."),
		takeovers:         c("takeovers_suspected_total", "Connections the broker closed and accepted again at the very next attempt: what it does when another client connects with this gateway's client ID (session takeover)."),
		oversized:         c("messages_oversized_total", "Messages received larger than MaxPacketSize (64 KiB): the broker enforces no packet size limit (max_packet_size), so paho buffered them whole."),
		unacked: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "gatewayd", Subsystem: "mqtt", Name: "unacked_messages",
			Help: "QoS 1 messages of the current connection delivered and not yet acknowledged (PUBACKs are released in delivery order)."},
			func() float64 { n, _ := unacked(); return float64(n) }),
		oldestUnacked: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "gatewayd", Subsystem: "mqtt", Name: "oldest_unacked_age_seconds",
			Help: "Age of the oldest QoS 1 message of the current connection still waiting for its PUBACK (0 when none); growing means acknowledgements stall and the broker sends nothing new."},
			func() float64 { _, d := unacked(); return d.Seconds() }),
	}
}

func (m *metrics) all() []prometheus.Collector {
	return []prometheus.Collector{m.connected, m.connects, m.connectionLost, m.received, m.acked, m.dropped,
		m.publishes, m.publishFailures, m.subscribeFailures, m.unacked, m.oldestUnacked, m.takeovers, m.oversized}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.all() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.all() {
		c.Collect(ch)
	}
}
