package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gatewayd/gatewayd/bonds"
)

// readiness are the checks /readyz makes, each nil when ready.
type readiness struct {
	mqtt    func() bool
	adapter func() bool
	db      *dbHealth
}

// dbHealth says whether the database takes writes: ready when a write
// committed within the last minute; after a quiet minute, a probe write
// (bonds.DB.Probe, one fsync) decides, at most once a minute, so frequent
// scrapes do not wear the SD card.
type dbHealth struct {
	db  *bonds.DB
	now func() time.Time

	mu        sync.Mutex
	lastProbe time.Time
	probeErr  error
}

const dbQuiet = time.Minute

func (h *dbHealth) check(ctx context.Context) error {
	lastOK, err := h.db.WriteHealth()
	if err != nil {
		return fmt.Errorf("last write failed: %w", err)
	}
	now := h.now()
	if !lastOK.IsZero() && now.Sub(lastOK) < dbQuiet {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lastProbe.IsZero() && now.Sub(h.lastProbe) < dbQuiet {
		return h.probeErr
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	h.lastProbe, h.probeErr = now, h.db.Probe(pctx)
	if h.probeErr != nil {
		h.probeErr = fmt.Errorf("probe write: %w", h.probeErr)
	}
	return h.probeErr
}

const landing = `<!doctype html>
<html><head><title>gatewayd</title></head><body>
<h1>gatewayd %s</h1>
<ul>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="/healthz">/healthz</a>: the process is alive</li>
<li><a href="/readyz">/readyz</a>: MQTT connected, Bluetooth adapter ready, database writable</li>
</ul>
<p>docs/operations.md says what each means.</p>
</body></html>
`

// newMux serves the metrics listener: /metrics, /healthz (200 while the
// process serves HTTP), /readyz (200 when every check passes, else 503
// naming the failing ones) and a landing page at /.
func newMux(reg *prometheus.Registry, log *slog.Logger, ready readiness, version string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		var lines []string
		ok := true
		add := func(name string, err error) {
			if err != nil {
				ok = false
				lines = append(lines, name+": "+err.Error())
			} else {
				lines = append(lines, name+": ok")
			}
		}
		add("mqtt", boolErr(ready.mqtt(), "not connected to the broker"))
		add("bluetooth", boolErr(ready.adapter(), "adapter not present or not powered"))
		add("database", ready.db.check(r.Context()))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, strings.Join(lines, "\n"))
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, landing, version)
	})
	return mux
}

func boolErr(ok bool, msg string) error {
	if ok {
		return nil
	}
	return fmt.Errorf("%s", msg)
}
