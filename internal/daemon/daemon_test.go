package daemon

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet/operator"
	"github.com/gatewayd/gatewayd/internal/admin"
)

// TestDaemonEndToEnd runs gatewayd with real parts (mosquitto, a
// dbus-daemon with the BlueZ emulator and reference locks) and drives it
// as an operator does, over MQTT: signed commands get exactly one result
// each; a replay, a forged signature and garbage are refused with a
// notice and never reach a lock; the metrics pass the Prometheus linter;
// a backup is taken online; the stop publishes the retained offline
// status.
func TestDaemonEndToEnd(t *testing.T) {
	d := newDock(t, 3, emulator.Options{})
	r := d.run()
	oc := d.client
	oc.until("retained status online", func() bool {
		return len(oc.status) > 0 && strings.Contains(oc.status[len(oc.status)-1], `"online"`)
	})

	// The retained locks snapshot tells the backend where the locks are.
	oc.until("a snapshot of the 3 locks heard", func() bool {
		return len(oc.locks) > 0 && len(oc.locks[len(oc.locks)-1].Locks) == 3
	})
	oc.mu.Lock()
	snap := oc.locks[len(oc.locks)-1]
	oc.mu.Unlock()
	if snap.GatewayID != "dock-1" || snap.Locks[0].LockID != d.locks[0].id || snap.Locks[0].Address != d.locks[0].addr {
		t.Errorf("locks snapshot %+v", snap)
	}

	// Unlock lock 1, then ask lock 2 for its status: one result each.
	b1, s1 := d.sign(1, command.OpUnlock, command.Args{})
	oc.publish(s1)
	b2, s2 := d.sign(2, command.OpStatus, command.Args{})
	oc.publish(s2)
	oc.until("two results", func() bool { return len(oc.resultsFor(b1.CommandID)) == 1 && len(oc.resultsFor(b2.CommandID)) == 1 })
	oc.mu.Lock()
	u, st := oc.resultsFor(b1.CommandID)[0], oc.resultsFor(b2.CommandID)[0]
	oc.mu.Unlock()
	if u.State != bonds.StateSucceeded || u.Status != "ok" || u.LockState != "unlocked" || u.Operation != "unlock" {
		t.Errorf("unlock result %+v", u)
	}
	if st.State != bonds.StateSucceeded || st.LockStatus == nil || st.Battery == nil {
		t.Errorf("status result %+v", st)
	}
	if d.locks[1].act.Moves() != 1 || d.locks[0].act.Moves() != 0 || d.locks[2].act.Moves() != 0 {
		t.Errorf("bolt moves %d %d %d", d.locks[0].act.Moves(), d.locks[1].act.Moves(), d.locks[2].act.Moves())
	}

	// A replay of the same bytes, a flipped signature bit and garbage:
	// three notices, no result, no movement.
	oc.publish(s1)
	forged := bytes.Clone(s2)
	forged[len(forged)-1] ^= 1
	oc.publish(forged)
	oc.publish([]byte("unlock lock 1 please"))
	oc.until("three notices", func() bool { return len(oc.rejected) == 3 })
	oc.mu.Lock()
	// Notices are published as each message is decided, which runs
	// concurrently; the acknowledgements are in order.
	reasons := map[operator.Reason]bool{}
	for _, n := range oc.rejected {
		reasons[n.Reason] = true
	}
	oc.mu.Unlock()
	if !reasons[operator.ReasonDuplicate] || !reasons[operator.ReasonBadSignature] || !reasons[operator.ReasonMalformed] {
		t.Errorf("notices %v", reasons)
	}

	// A third command's result comes after any spurious second result of
	// the first would have: there is none.
	rider, _, _ := ed25519.GenerateKey(nil)
	b4, s4 := d.sign(2, command.OpAddUser, command.Args{UserID: "rider-7", PublicKey: rider, Role: cred.RoleRider,
		NotAfter: d.now().Add(24 * time.Hour).Truncate(time.Second)})
	oc.publish(s4)
	oc.until("add-user result", func() bool { return len(oc.resultsFor(b4.CommandID)) == 1 })
	b3, s3 := d.sign(0, command.OpLock, command.Args{})
	oc.publish(s3)
	oc.until("third result", func() bool { return len(oc.resultsFor(b3.CommandID)) == 1 })
	oc.mu.Lock()
	if n := len(oc.results); n != 4 {
		t.Errorf("%d results for 4 commands: %+v", n, oc.results)
	}
	oc.mu.Unlock()
	if d.locks[1].act.Moves() != 1 {
		t.Errorf("the replay moved the bolt: %d", d.locks[1].act.Moves())
	}

	// Metrics: served, linted, and counting what happened.
	resp, err := http.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	probs, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		if strings.HasPrefix(p.Metric, "gatewayd_") {
			t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
		}
	}
	checkMetricsWithPromtool(t, body)
	checkRulesNameExportedMetrics(t, body)
	checkLabelsConsistent(t, body)
	for _, want := range []string{
		`gatewayd_fleet_results_total{operation="unlock",state="succeeded"} 1`,
		`gatewayd_fleet_results_total{operation="add-user",state="succeeded"} 1`,
		`gatewayd_fleet_commands_received_total{operation="lock"} 1`,
		`gatewayd_intake_rejected_total{reason="bad_signature"} 1`,
		`gatewayd_mqtt_connected 1`,
		`gatewayd_bluez_adapter_up 1`,
		`gatewayd_bonds_commits_total`,
		`gatewayd_build_info{commit="`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	if strings.Contains(string(body), `gatewayd_bonding_outcomes_total{outcome="bonded"} 0`) ||
		!strings.Contains(string(body), `gatewayd_bonding_outcomes_total{outcome="bonded"} `) {
		t.Errorf("no bond counted:\n%s", grepLines(string(body), "bonding"))
	}

	// An online backup through the admin socket, with the daemon running.
	dst := filepath.Join(t.TempDir(), "backup.db")
	if _, err := admin.Backup(t.Context(), d.cfg.Admin.Socket, dst); err != nil {
		t.Fatal(err)
	}
	bk, err := bonds.Open(dst, bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e, err := bk.Entry(t.Context(), bonds.CommandID(b3.CommandID)); err != nil || e.State != bonds.StateSucceeded {
		t.Errorf("backup entry %+v %v", e, err)
	}
	// The lock records kept from the answers: battery, firmware, clock
	// offset, the operator's counter (which the intake checks), the user.
	l1, err := bk.Lock(t.Context(), d.locks[1].id)
	if err != nil {
		t.Fatal(err)
	}
	// Bonded after its first handshake, by the one-time passkey of the
	// bond window it opened for this gateway (design brief §6).
	if l1.Bond != bonds.BondBonded || l1.BondedAt.IsZero() {
		t.Errorf("lock 1 not bonded after its first session: %s", l1.Bond)
	}
	if l1.Firmware == "" || l1.Battery == 0 || len(l1.Counters) != 1 || len(l1.Credential) == 0 {
		t.Errorf("lock record not kept from the answers: %+v", l1)
	}
	for _, c := range l1.Counters {
		if c != b1.Counter {
			t.Errorf("counter %d recorded, the unlock's was %d", c, b1.Counter)
		}
	}
	users, err := bk.Users(t.Context(), d.locks[2].id)
	if err != nil || len(users) != 1 || users[0].UserID != "rider-7" || users[0].Desired != bonds.Present || users[0].Confirmed != bonds.Present {
		t.Errorf("users of lock 2: %+v %v", users, err)
	}
	bk.Close()

	r.stop(t)
	oc.until("retained status offline", func() bool {
		return strings.Contains(oc.status[len(oc.status)-1], `"offline"`)
	})
	// The status says which build runs; the clean stop's says when it went
	// offline, after the start it was online since.
	oc.mu.Lock()
	online, offline := oc.status[0], oc.status[len(oc.status)-1]
	oc.mu.Unlock()
	var on, off struct {
		State, Version, Commit string
		SinceS                 string `json:"since"`
		OnlineSinceS           string `json:"online_since"`
	}
	if err := json.Unmarshal([]byte(online), &on); err != nil || on.State != "online" || on.Version == "" || on.Commit == "" || on.OnlineSinceS == "" {
		t.Errorf("online status %s: %v", online, err)
	}
	if err := json.Unmarshal([]byte(offline), &off); err != nil || off.SinceS == "" || off.OnlineSinceS != on.OnlineSinceS {
		t.Errorf("offline status %s: %v", offline, err)
	}
	if a, b := parseTime(t, off.SinceS), parseTime(t, off.OnlineSinceS); !a.After(b) {
		t.Errorf("offline since %v, not after online since %v", a, b)
	}
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Errorf("time %q: %v", s, err)
	}
	return v
}

// TestRefusesToStart: a configuration the daemon cannot run with stops it
// at once with ErrConfig (exit 78 under systemd), naming the problem.
func TestRefusesToStart(t *testing.T) {
	d := newDock(t, 1, emulator.Options{})
	cfg := *d.cfg
	cfg.GatewayID = "dock-2" // the credential is dock-1's
	err := Run(t.Context(), Options{Config: &cfg, Now: d.now})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), `"dock-1"`) {
		t.Errorf("wrong gateway ID: %v", err)
	}
	cfg = *d.cfg
	cfg.Keys.PrivateKey = filepath.Join(t.TempDir(), "missing.key")
	if err := Run(t.Context(), Options{Config: &cfg, Now: d.now}); !errors.Is(err, ErrConfig) {
		t.Errorf("missing key: %v", err)
	}
}

// checkMetricsWithPromtool runs `promtool check metrics` (the linter
// Prometheus itself ships) on a scrape.
func checkMetricsWithPromtool(t *testing.T, scrape []byte) {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run scripts/deps.sh (apt-get install prometheus)")
	}
	cmd := exec.Command(p, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "gatewayd_") {
			t.Errorf("promtool check metrics: %s", line)
		}
	}
	if err != nil && !strings.Contains(string(out), "gatewayd_") {
		// Problems only in the Go runtime's or the process collector's
		// metrics are not ours; anything else is.
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" && !strings.HasPrefix(line, "go_") && !strings.HasPrefix(line, "process_") {
				t.Errorf("promtool check metrics: %s", line)
			}
		}
	}
}

// checkRulesNameExportedMetrics: every gatewayd metric the shipped alert
// rules and the Grafana dashboard use is one the daemon exports, so an
// alert never silently watches, nor a panel shows, a metric that was
// renamed.
func checkRulesNameExportedMetrics(t *testing.T, scrape []byte) {
	t.Helper()
	checkFileNamesExportedMetrics(t, scrape, "../../deploy/prometheus/gatewayd-alerts.yml")
	checkFileNamesExportedMetrics(t, scrape, "../../deploy/grafana/gatewayd-fleet.json")
}

func checkFileNamesExportedMetrics(t *testing.T, scrape []byte, file string) {
	t.Helper()
	rules, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`gatewayd_[a-z0-9_]+`)
	exported := map[string]bool{}
	for _, line := range strings.Split(string(scrape), "\n") {
		if m := re.FindString(line); m != "" && (strings.HasPrefix(line, m) || strings.HasPrefix(line, "# HELP "+m+" ")) {
			exported[m] = true // a sample's name, or a family's (a histogram's)
		}
	}
	for _, name := range re.FindAllString(string(rules), -1) {
		if !exported[name] {
			t.Errorf("%s uses %s, which the daemon does not export", strings.TrimPrefix(file, "../../"), name)
		}
	}
}

// checkLabelsConsistent: no gatewayd metric carries a label naming the
// gateway (the scrape target names the dock: docs/operations.md,
// "Monitoring"), and the adapter label is the adapter's name (hci0), not
// its D-Bus path.
func checkLabelsConsistent(t *testing.T, scrape []byte) {
	t.Helper()
	adapter := regexp.MustCompile(`adapter="([^"]*)"`)
	seen := 0
	for _, line := range strings.Split(string(scrape), "\n") {
		if !strings.HasPrefix(line, "gatewayd_") {
			continue
		}
		if strings.Contains(line, `gateway="`) || strings.Contains(line, `gateway_id="`) {
			t.Errorf("metric labelled with the gateway: %s", line)
		}
		if m := adapter.FindStringSubmatch(line); m != nil {
			seen++
			if !regexp.MustCompile(`^hci[0-9]+$`).MatchString(m[1]) {
				t.Errorf("adapter label %q, want the adapter's name (hci0): %s", m[1], line)
			}
		}
	}
	if seen == 0 {
		t.Error("no metric with an adapter label")
	}
}
