package daemon

import (
	"context"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/config"
)

// reloadable are the keys a reload (SIGHUP) applies to the running
// daemon; a change of any other key is logged as needing a restart.
var reloadable = map[string]bool{"log.level": true}

// reloader applies a new configuration on each signal from Options.Reload
// (cmd/gatewayd sends SIGHUP there; systemd's ExecReload sends SIGHUP):
// what it can apply without dropping work, it applies; every other
// changed key is named in the log with "restart gatewayd to apply". A
// configuration that does not load is refused and the running one kept.
// Commands in flight are not touched: nothing is stopped or restarted.
type reloader struct {
	running *config.Config // the configuration the parts were built with
	load    func() (*config.Config, error)
	level   *slog.LevelVar
	log     *slog.Logger
	total   *prometheus.CounterVec
}

func newReloader(opts Options, log *slog.Logger) *reloader {
	r := &reloader{running: opts.Config, load: opts.LoadConfig, level: opts.LogLevel, log: log.With("subsystem", "reload"),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gatewayd_config_reloads_total",
			Help: "Configuration reloads (SIGHUP), by result: applied, or refused (the file does not load; the running configuration is kept)."},
			[]string{"result"})}
	r.total.WithLabelValues("applied")
	r.total.WithLabelValues("refused")
	return r
}

// run reloads on each signal until ctx ends.
func (r *reloader) run(ctx context.Context, sig <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-sig:
			r.reload(s)
		}
	}
}

func (r *reloader) reload(sig os.Signal) {
	r.log.Info("reloading the configuration", "signal", sig)
	if r.load == nil {
		r.total.WithLabelValues("refused").Inc()
		r.log.Warn("configuration reload not possible: this daemon was not started from a file")
		return
	}
	c, err := r.load()
	if err != nil {
		r.total.WithLabelValues("refused").Inc()
		r.log.Error("configuration reload refused, the running configuration is kept", "err", err)
		return
	}
	if r.level != nil {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(c.Log.Level)); err == nil && lvl != r.level.Level() {
			// Logged at the lower of the two levels, so the line shows.
			if lvl > r.level.Level() {
				r.log.Info("log level changed", "level", c.Log.Level)
				r.level.Set(lvl)
			} else {
				r.level.Set(lvl)
				r.log.Info("log level changed", "level", c.Log.Level)
			}
		}
	} else if c.Log.Level != r.running.Log.Level {
		r.log.Warn("log.level changed: restart gatewayd to apply")
	}
	var restart []string
	for _, key := range config.Changed(r.running, c) {
		if !reloadable[key] {
			restart = append(restart, key)
			r.log.Warn(key + " changed: restart gatewayd to apply")
		}
	}
	r.total.WithLabelValues("applied").Inc()
	if len(restart) > 0 {
		r.log.Warn("configuration reloaded; some changes need a restart", "restart_needed", strings.Join(restart, ","))
	} else {
		r.log.Info("configuration reloaded")
	}
}
