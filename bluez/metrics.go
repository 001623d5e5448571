package bluez

import (
	"path"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports an Adapter's counters and state to Prometheus, named
// gatewayd_bluez_<name>_<unit> with an "adapter" label (the adapter's
// name, hci0, as hciconfig and btmgmt say it; not its D-Bus path). It reads the adapter's atomics at scrape time; it starts
// no goroutine.
type Collector struct {
	a *Adapter

	up, locks, powerCycles, removals, restarts, resyncs, dropped, connectFailures, decoded *prometheus.Desc
}

// NewCollector returns a Collector for a; register it with a
// prometheus.Registerer.
func NewCollector(a *Adapter) *Collector {
	l := prometheus.Labels{"adapter": path.Base(string(a.Path()))}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("gatewayd_bluez_"+name, help, nil, l)
	}
	return &Collector{
		a:               a,
		up:              d("adapter_up", "1 when the Bluetooth adapter is present and powered, else 0."),
		locks:           d("locks_present", "Locks currently seen advertising (not away)."),
		powerCycles:     d("adapter_power_cycles_total", "Power cycles of a wedged adapter (discovery stuck or connects failing in a row)."),
		removals:        d("adapter_removals_total", "Times the adapter was removed from the system (it is picked up again when it returns)."),
		restarts:        d("bluetoothd_restarts_total", "bluetoothd restarts recovered from without restarting gatewayd."),
		resyncs:         d("resyncs_total", "Resynchronisations of the device list from GetManagedObjects after dropped D-Bus signals."),
		dropped:         d("events_dropped_total", "Lock events dropped because the consumer was slow."),
		connectFailures: d("connect_failures_total", "Connection attempts to locks that failed with a link error."),
		decoded:         d("adverts_decoded_total", "Advertisements decoded by gatewayd's own D-Bus reader (bluez.DialBus) instead of godbus."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.locks, c.powerCycles, c.removals, c.restarts, c.resyncs, c.dropped, c.connectFailures, c.decoded} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	up := 0.0
	if a.Ready() {
		up = 1
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(c.up, up)
	gauge(c.locks, float64(a.presentLocks()))
	counter(c.powerCycles, a.PowerCycles())
	counter(c.removals, a.Removals())
	counter(c.restarts, a.Restarts())
	counter(c.resyncs, a.Resyncs())
	counter(c.dropped, a.DroppedEvents())
	counter(c.connectFailures, a.ConnectFailures())
	counter(c.decoded, a.DecodedAdverts())
}
