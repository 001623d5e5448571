package daemon

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultStallAfter is how long a main loop may have work waiting without
// making progress before the watchdog withholds systemd's ping: longer
// than the longest step a healthy loop takes (a connect with its
// handshake, a bonding and a request, 30 s each by default; a journal
// write's 30 s timeout).
const DefaultStallAfter = 2 * time.Minute

// progressor is a main loop's account of itself: the work it has waiting
// now, and a count of the work it has done so far (any unit, as long as
// it grows whenever the loop gets something done).
type progressor func() (waiting int, done uint64)

// loopProbe names a main loop's progressor.
type loopProbe struct {
	name     string
	progress progressor
}

// whileConnected counts p's waiting work only while connected() says so:
// results and presence wait for the broker by design.
func whileConnected(connected func() bool, p progressor) progressor {
	return func() (int, uint64) {
		w, d := p()
		if !connected() {
			w = 0
		}
		return w, d
	}
}

// progressWatch tells a main loop that has work waiting and makes no
// progress (stalled) from one that is merely alive: the systemd
// watchdog's ping depends on it (check), and gatewayd_watchdog_stalled_seconds
// shows it. A loop's stall is measured from the first sample that found
// it with work waiting and its done count unchanged since the sample
// before, so it is as fine as the samples: the watchdog's (every
// WatchdogSec/2) and the scrapes'.
type progressWatch struct {
	now    func() time.Time // time.Now; tests set a clock
	after  time.Duration
	probes []loopProbe
	desc   *prometheus.Desc

	mu    sync.Mutex
	state map[string]loopState
}

type loopState struct {
	done  uint64
	since time.Time // monotonic: last progress (or nothing waiting)
}

func newProgressWatch(after time.Duration, probes ...loopProbe) *progressWatch {
	return &progressWatch{now: time.Now, after: after, probes: probes, state: map[string]loopState{},
		desc: prometheus.NewDesc("gatewayd_watchdog_stalled_seconds",
			"Seconds a main loop (intake, journal, scheduler, outbox, presence) has had work waiting without making progress; 0 while it progresses or has nothing to do. Past 2 minutes gatewayd withholds the systemd watchdog ping, and systemd restarts it.",
			[]string{"loop"}, nil)}
}

// sample returns, per loop in probe order, how long it has been stalled.
func (w *progressWatch) sample() []time.Duration {
	now := w.now()
	out := make([]time.Duration, len(w.probes))
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, p := range w.probes {
		waiting, done := p.progress()
		st, ok := w.state[p.name]
		if !ok || waiting == 0 || done != st.done {
			w.state[p.name] = loopState{done: done, since: now}
			continue
		}
		out[i] = now.Sub(st.since)
	}
	return out
}

// check is the watchdog's health check: an error names the loops stalled
// for StallAfter or longer.
func (w *progressWatch) check() error {
	var stalled []string
	for i, d := range w.sample() {
		if d >= w.after {
			stalled = append(stalled, fmt.Sprintf("%s for %v", w.probes[i].name, d.Round(time.Second)))
		}
	}
	if len(stalled) > 0 {
		return fmt.Errorf("work waiting without progress: %s", strings.Join(stalled, ", "))
	}
	return nil
}

// Describe implements prometheus.Collector.
func (w *progressWatch) Describe(ch chan<- *prometheus.Desc) { ch <- w.desc }

// Collect implements prometheus.Collector.
func (w *progressWatch) Collect(ch chan<- prometheus.Metric) {
	for i, d := range w.sample() {
		ch <- prometheus.MustNewConstMetric(w.desc, prometheus.GaugeValue, d.Seconds(), w.probes[i].name)
	}
}
