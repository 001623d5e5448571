package daemon

import (
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls cond (safety net of a minute; never a timing assertion).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within a minute: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHealthEndpoints: on the metrics listener, / lists the endpoints,
// /healthz answers while the process runs, and /readyz is 200 when MQTT,
// the adapter and the database are all well, 503 naming MQTT while the
// broker is down, and 200 again once the session is back.
func TestHealthEndpoints(t *testing.T) {
	d := newDock(t, 1, emulator.Options{})
	r := d.run()
	base := "http://" + r.metrics
	code, body := get(t, base+"/")
	if code != 200 || !strings.Contains(body, `href="/metrics"`) || !strings.Contains(body, `href="/healthz"`) || !strings.Contains(body, `href="/readyz"`) {
		t.Errorf("landing page %d %q", code, body)
	}
	if code, _ := get(t, base+"/nothing"); code != 404 {
		t.Errorf("/nothing: %d", code)
	}
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz %d %q", code, body)
	}
	var last string
	eventually(t, "ready", func() bool {
		code, body := get(t, base+"/readyz")
		last = body
		return code == 200
	})
	for _, want := range []string{"mqtt: ok", "bluetooth: ok", "database: ok"} {
		if !strings.Contains(last, want) {
			t.Errorf("/readyz %q lacks %q", last, want)
		}
	}

	d.broker.Stop()
	eventually(t, "not ready without the broker", func() bool {
		code, body := get(t, base+"/readyz")
		last = body
		return code == 503
	})
	if !strings.Contains(last, "mqtt: not connected") || !strings.Contains(last, "database: ok") {
		t.Errorf("/readyz without broker: %q", last)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz without broker: %d", code)
	}
	d.broker.Restart(t)
	eventually(t, "ready again", func() bool {
		code, _ := get(t, base+"/readyz")
		return code == 200
	})
}

// TestDBHealth: a database with a recent write is ready without a probe;
// after a quiet minute one probe write decides, and is not repeated
// within the minute; a closed database is not ready.
func TestDBHealth(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	db, err := bonds.Open(filepath.Join(t.TempDir(), "g.db"), bonds.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	h := &dbHealth{db: db, now: clock}
	commits := db.Stats().Commits
	if err := h.check(t.Context()); err != nil || db.Stats().Commits != commits+1 {
		t.Fatalf("first check: %v, commits %d -> %d (want one probe)", err, commits, db.Stats().Commits)
	}
	now = now.Add(30 * time.Second)
	if err := h.check(t.Context()); err != nil || db.Stats().Commits != commits+1 {
		t.Errorf("within the minute: %v, commits %d (want no probe)", err, db.Stats().Commits)
	}
	now = now.Add(2 * time.Minute)
	if err := h.check(t.Context()); err != nil || db.Stats().Commits != commits+2 {
		t.Errorf("after a quiet minute: %v, commits %d (want a probe)", err, db.Stats().Commits)
	}
	db.Close()
	if err := h.check(t.Context()); !errors.Is(err, bonds.ErrClosed) {
		t.Errorf("closed: %v", err)
	}
}
