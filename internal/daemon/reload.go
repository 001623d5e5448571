package daemon

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet/operator"
)

// reloadable are the keys a reload (SIGHUP) applies to the running
// daemon; a change of any other key is logged as needing a restart.
var reloadable = map[string]bool{"log.level": true, "keys.fleet_roots": true}

// trust holds the fleet roots the running parts verify with: the intake
// (operators' commands), the link (locks' credentials), bookkeeping and
// the revocation list. A reload swaps them; every verification reads them
// afresh, so a command verified after the swap sees the new roots and
// nothing in flight is stopped. Operators' credentials travel inside each
// command and are verified with it, so no cache of them outlives a reload.
type trust struct{ roots atomic.Pointer[cred.Roots] }

func newTrust(roots cred.Roots) *trust {
	t := &trust{}
	t.roots.Store(&roots)
	return t
}

// Roots returns the fleet roots trusted now; the map is never changed.
func (t *trust) Roots() cred.Roots { return *t.roots.Load() }

// reloader applies a new configuration on each signal from Options.Reload
// (cmd/gatewayd sends SIGHUP there; systemd's ExecReload sends SIGHUP):
// what it can apply without dropping work, it applies (the log level, the
// fleet roots, the revocation list file); every other
// changed key is named in the log with "restart gatewayd to apply". A
// configuration that does not load is refused and the running one kept.
// Commands in flight are not touched: nothing is stopped or restarted.
type reloader struct {
	running *config.Config // the configuration the parts were built with
	load    func() (*config.Config, error)
	level   *slog.LevelVar
	log     *slog.Logger
	total   *prometheus.CounterVec

	// With trust set, each reload reads the key files again (the fleet
	// roots, checked with the gateway's credential) and swaps the roots
	// of trust and revs; then revs reads its file again.
	trust *trust
	revs  *operator.Revocations
	now   func() time.Time
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
	if err := r.reloadRoots(c); err != nil {
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
	if r.revs != nil {
		// A list copied beside the database by hand (a dock cut off
		// from the broker), or one that only the new roots verify.
		if installed, err := r.revs.Reload(); err != nil {
			r.log.Warn("revocation list file not taken, the list held is kept", "err", err)
		} else if installed {
			serial, _ := r.revs.Revoked(nil)
			r.log.Info("revocation list reloaded from its file", "serial", serial)
		}
	}
	r.total.WithLabelValues("applied").Inc()
	if len(restart) > 0 {
		r.log.Warn("configuration reloaded; some changes need a restart", "restart_needed", strings.Join(restart, ","))
	} else {
		r.log.Info("configuration reloaded")
	}
}

// reloadRoots reads the key files c names, as at start (config.LoadKeys:
// the gateway's credential must verify under the new roots), and makes
// their fleet roots the trusted ones: first for the revocation list (the
// list held must verify under them, or nothing changes), then for every
// other part. The roots are read even when keys.fleet_roots did not
// change, since a file may have. The credential and the private key are
// not swapped (their change is named as needing a restart).
func (r *reloader) reloadRoots(c *config.Config) error {
	if r.trust == nil {
		return nil
	}
	keys, err := config.LoadKeys(c.Keys, c.GatewayID, r.now())
	if err != nil {
		return fmt.Errorf("reading the key files: %w", err)
	}
	old := r.trust.Roots()
	added, removed := rootsDiff(old, keys.Roots)
	if len(added) == 0 && len(removed) == 0 {
		return nil
	}
	if r.revs != nil {
		if err := r.revs.SetRoots(keys.Roots); err != nil {
			return fmt.Errorf("fleet roots %s: %w (publish a list signed by a root that stays, or restart after deleting the list)",
				strings.Join(c.Keys.FleetRoots, ", "), err)
		}
	}
	r.trust.roots.Store(&keys.Roots)
	r.log.Warn("fleet roots reloaded", "added", strings.Join(added, ","), "removed", strings.Join(removed, ","), "roots", len(keys.Roots))
	return nil
}

// rootsDiff names (by kid, in hex) the roots of b not in a, and of a not
// in b; a root whose key changed under the same kid is in both.
func rootsDiff(a, b cred.Roots) (added, removed []string) {
	for kid, pub := range b {
		if old, ok := a[kid]; !ok || !bytes.Equal(old, pub) {
			added = append(added, hex.EncodeToString([]byte(kid)))
		}
	}
	for kid, pub := range a {
		if nw, ok := b[kid]; !ok || !bytes.Equal(nw, pub) {
			removed = append(removed, hex.EncodeToString([]byte(kid)))
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed
}
