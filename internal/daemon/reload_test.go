package daemon

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
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
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet/operator"
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

// TestReloadTrust: SIGHUP swaps the fleet roots and takes a revocation
// list from its file, while commands are in flight. The locks trust a
// second fleet root ("beta") from the start; the gateway does not, so a
// command signed by beta's operator is refused at intake. After the
// root's file is added to keys.fleet_roots and a list revoking mallory is
// put beside the database, one SIGHUP later beta's operator's command
// runs on the lock and mallory's is refused as revoked; every command
// published before, during and after the reload gets exactly one result.
// A reload whose roots no longer verify the gateway's own credential is
// refused and the roots in use are kept.
func TestReloadTrust(t *testing.T) {
	beta := channeltest.NewFleet(t, "beta")
	d := newDock(t, 1, emulator.Options{}, func(d *dock) {
		// The locks trust both roots: what the gateway trusts decides.
		d.fleet.Roots.Add(beta.RootKID, beta.Root.Public().(ed25519.PublicKey))
	})
	bob := beta.Operator(t, "bob", cred.RoleAdmin)
	mallory := d.fleet.Operator(t, "mallory", cred.RoleOperator)
	path := filepath.Join(d.dir, "gatewayd.toml")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hup := make(chan os.Signal, 1)
	r := d.run(func(o *Options) {
		o.Reload = hup
		o.LoadConfig = func() (*config.Config, error) { return config.Load(path) }
	})
	oc := d.client
	oc.until("online", func() bool { return len(oc.status) > 0 && strings.Contains(oc.status[len(oc.status)-1], `"online"`) })

	ctrs := map[string]uint64{}
	n := byte(0)
	signBy := func(p channeltest.Party) [16]byte {
		ctrs[p.Cert.Subject]++
		n++
		b := command.Body{LockID: d.locks[0].id, Op: command.OpStatus, CommandID: [16]byte{0xab, n},
			NotAfter: d.now().Add(time.Hour).Truncate(time.Second), Counter: ctrs[p.Cert.Subject]}
		s, err := command.Sign(p.Key, p.Cert.Raw, b)
		if err != nil {
			t.Fatal(err)
		}
		oc.publish(s)
		return b.CommandID
	}
	noticeFor := func(id [16]byte) *operator.Rejected {
		for i := range oc.rejected {
			if oc.rejected[i].CommandID == hex.EncodeToString(id[:]) {
				return &oc.rejected[i]
			}
		}
		return nil
	}
	succeeded := func(id [16]byte) bool {
		res := oc.resultsFor(id)
		return len(res) == 1 && res[0].State == bonds.StateSucceeded
	}

	// Before: beta's operator is not trusted; mallory is.
	bob1, mal1 := signBy(bob), signBy(mallory)
	oc.until("bob refused, mallory's result", func() bool { return noticeFor(bob1) != nil && succeeded(mal1) })
	oc.mu.Lock()
	if nt := noticeFor(bob1); nt.Reason != operator.ReasonSignerRejected && nt.Reason != operator.ReasonBadSignature {
		t.Errorf("bob's notice before the reload: %+v", *nt)
	}
	oc.mu.Unlock()

	// Commands in flight across the reload.
	var otto [][16]byte
	for range 6 {
		otto = append(otto, signBy(d.op))
	}
	// The new trust: beta's root added, a list revoking mallory beside
	// the database (as if copied there from a USB stick).
	betaPEM := filepath.Join(d.dir, "beta-root.pem")
	must(t, config.WritePublicKey(betaPEM, beta.Root.Public().(ed25519.PublicKey)))
	changed := strings.Replace(string(orig), "fleet_roots = [", fmt.Sprintf("fleet_roots = [%q, ", betaPEM), 1)
	must(t, os.WriteFile(path, []byte(changed), 0o644))
	list, err := cred.IssueRevocations(d.fleet.Root, d.fleet.RootKID, 7, d.now(), [][]byte{mallory.Cert.KID})
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(d.dir, "state", "revocations.cbor"), list, 0o644))
	hup <- syscall.SIGHUP
	for range 4 {
		otto = append(otto, signBy(d.op))
	}
	oc.until("the reload logged", func() bool {
		return strings.Contains(r.logs.String(), "configuration reloaded")
	})
	logs := r.logs.String()
	for _, want := range []string{"fleet roots reloaded", "revocation list reloaded from its file"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Contains(logs, "keys.fleet_roots changed: restart") {
		t.Error("keys.fleet_roots named as needing a restart")
	}

	// After: beta's operator's command runs; mallory's is refused, revoked.
	bob2, mal2 := signBy(bob), signBy(mallory)
	oc.until("bob's result, mallory refused", func() bool { return succeeded(bob2) && noticeFor(mal2) != nil })
	oc.until("one result for each command in flight", func() bool {
		for _, id := range otto {
			if !succeeded(id) {
				return false
			}
		}
		return true
	})
	oc.mu.Lock()
	if nt := noticeFor(mal2); nt.Reason != operator.ReasonSignerRejected || !strings.Contains(nt.Detail, "revoked") {
		t.Errorf("mallory's notice after the reload: %+v", *nt)
	}
	if res := oc.resultsFor(mal2); len(res) != 0 {
		t.Errorf("mallory's revoked command got results %+v", res)
	}
	oc.mu.Unlock()

	// Roots that would not verify the gateway's own credential (only
	// beta's): refused, and the roots in use stay.
	onlyBeta := strings.Replace(string(orig), `fleet_roots = [`+fmt.Sprintf("%q", filepath.Join(d.dir, "fleet-root.pem"))+`]`,
		fmt.Sprintf("fleet_roots = [%q]", betaPEM), 1)
	if onlyBeta == string(orig) {
		t.Fatal("test configuration not changed")
	}
	must(t, os.WriteFile(path, []byte(onlyBeta), 0o644))
	hup <- syscall.SIGHUP
	oc.until("refusal logged", func() bool {
		return strings.Contains(r.logs.String(), "configuration reload refused, the running configuration is kept")
	})
	if logs := r.logs.String(); !strings.Contains(logs, "does not verify under the fleet roots") {
		t.Error("the refusal does not say the credential does not verify under the new roots")
	}
	otto3, bob3 := signBy(d.op), signBy(bob)
	oc.until("both still run", func() bool { return succeeded(otto3) && succeeded(bob3) })

	resp, err := http.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`gatewayd_config_reloads_total{result="applied"} 1`, `gatewayd_config_reloads_total{result="refused"} 1`,
		`gatewayd_revocations_serial 7`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	r.stop(t)
}
