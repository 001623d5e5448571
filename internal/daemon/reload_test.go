package daemon

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/command"
)

// TestReloadMidTraffic: SIGHUP, delivered on the channel cmd/gatewayd's
// signal handler feeds, while commands are in flight: every command gets
// exactly one result, the new log level takes effect at once (no debug
// line after it), a change that needs a restart is named
// ("mqtt.brokers changed: restart gatewayd to apply") and the running
// session is kept; a configuration that does not load is refused, the
// daemon keeps running, and both are counted.
func TestReloadMidTraffic(t *testing.T) {
	d := newDock(t, 2, emulator.Options{})
	path := filepath.Join(d.dir, "gatewayd.toml")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hup := make(chan os.Signal, 1)
	level := new(slog.LevelVar)
	level.Set(slog.LevelDebug)
	r := d.run(func(o *Options) {
		o.Reload, o.LogLevel = hup, level
		o.LoadConfig = func() (*config.Config, error) { return config.Load(path) }
	})
	oc := d.client
	oc.until("online", func() bool { return len(oc.status) > 0 && strings.Contains(oc.status[len(oc.status)-1], `"online"`) })

	var ids [][16]byte
	send := func(n int) {
		for i := range n {
			b, s := d.sign(i%2, command.OpStatus, command.Args{})
			ids = append(ids, b.CommandID)
			oc.publish(s)
		}
	}
	send(4)
	// The new file: log level warn, and a broker URL that needs a restart.
	changed := strings.Replace(string(orig), `level = "debug"`, `level = "warn"`, 1)
	changed = strings.Replace(changed, "brokers = [", `brokers = ["tcp://127.0.0.1:1", `, 1)
	if changed == string(orig) || !strings.Contains(changed, `level = "warn"`) {
		t.Fatal("test configuration not changed")
	}
	must(t, os.WriteFile(path, []byte(changed), 0o644))
	hup <- syscall.SIGHUP
	send(4)
	oc.until("a result for each of 8 commands", func() bool {
		for _, id := range ids {
			if len(oc.resultsFor(id)) != 1 {
				return false
			}
		}
		return true
	})
	logs := r.logs.String()
	marker := "configuration reloaded; some changes need a restart"
	for _, want := range []string{"mqtt.brokers changed: restart gatewayd to apply", "log level changed", marker} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Contains(logs, "log.level changed: restart") {
		t.Error("log.level named as needing a restart")
	}
	if level.Level() != slog.LevelWarn {
		t.Errorf("level %v after the reload", level.Level())
	}
	// No debug line stamped after the reload took effect (a line whose
	// level was checked before is stamped before).
	var reloadedAt time.Time
	timeRE := regexp.MustCompile(`^time=(\S+) level=(\S+)`)
	debugBefore, debugAfter := 0, 0
	for _, line := range strings.Split(logs, "\n") {
		m := timeRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatalf("log time %q: %v", m[1], err)
		}
		if strings.Contains(line, marker) {
			reloadedAt = ts
		}
		if m[2] == "DEBUG" {
			if reloadedAt.IsZero() {
				debugBefore++
			} else if ts.After(reloadedAt) {
				debugAfter++
				t.Errorf("debug line after the reload: %s", line)
			}
		}
	}
	if reloadedAt.IsZero() || debugBefore == 0 {
		t.Errorf("reload at %v, %d debug lines before it (the test needs some)", reloadedAt, debugBefore)
	}
	// The session on the broker it started with is kept: still online.
	oc.mu.Lock()
	last := oc.status[len(oc.status)-1]
	oc.mu.Unlock()
	if !strings.Contains(last, `"online"`) {
		t.Errorf("status %s after the reload", last)
	}

	// A file that does not load is refused; the daemon runs on.
	must(t, os.WriteFile(path, []byte("gateway_id = \n"), 0o644))
	hup <- syscall.SIGHUP
	oc.until("refusal logged", func() bool {
		return strings.Contains(r.logs.String(), "configuration reload refused, the running configuration is kept")
	})
	send(1)
	oc.until("a result after the refused reload", func() bool { return len(oc.resultsFor(ids[len(ids)-1])) == 1 })
	resp, err := http.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`gatewayd_config_reloads_total{result="applied"} 1`, `gatewayd_config_reloads_total{result="refused"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
