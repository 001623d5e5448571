package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// rec is an accepted command of otto to lock 0 with one result.
func rec(id string, counter uint64, op, state string) cmdRec {
	c := cmdRec{ID: id, Lock: 0, Signer: "otto", Counter: counter, Op: op, Accepted: time.Now(), Sends: 1, Wire: 1}
	if state != "" {
		c.Results = []resultMsg{{CommandID: id, State: state}}
	}
	return c
}

const l0 = "4c4b000000000001"

// TestCheckCleanRun: a run where every command ran once, in order, with
// one move per lock/unlock, has no violation.
func TestCheckCleanRun(t *testing.T) {
	cmds := []cmdRec{rec("a", 1, "unlock", "succeeded"), rec("b", 2, "status", "succeeded"), rec("c", 3, "lock", "succeeded")}
	cmds[1].Wire = 2 // the same result twice on the wire is not a duplicate
	ledger := []ledgerEntry{
		{Lock: l0, Kind: "move", Target: "unlocked"}, {Lock: l0, Kind: "ok", Op: "unlock", CommandID: "a"},
		{Lock: l0, Kind: "ok", Op: "status", CommandID: "b"},
		{Lock: l0, Kind: "move", Target: "locked"}, {Lock: l0, Kind: "ok", Op: "lock", CommandID: "c"},
	}
	res := check(cmds, ledger)
	if len(res.Violations) != 0 {
		t.Fatalf("violations in a clean run: %q", res.Violations)
	}
	if res.Counts["result_succeeded"] != 3 || res.Counts["wire_redeliveries"] != 1 {
		t.Errorf("counts %v", res.Counts)
	}
}

// TestCheckFindsViolations: each invariant the campaign promises to check
// fails on a record that breaks it.
func TestCheckFindsViolations(t *testing.T) {
	for _, c := range []struct {
		name   string
		cmds   []cmdRec
		ledger []ledgerEntry
		want   string
	}{
		{"lost", []cmdRec{rec("a", 1, "status", "")}, nil, "lost: command a"},
		{"duplicate result", func() []cmdRec {
			c := rec("a", 1, "status", "succeeded")
			c.Results = append(c.Results, resultMsg{CommandID: "a", State: "failed"})
			return []cmdRec{c}
		}(), []ledgerEntry{{Lock: l0, Kind: "ok", Op: "status", CommandID: "a"}}, "duplicate result: command a"},
		{"ran twice", []cmdRec{rec("a", 1, "status", "succeeded")},
			[]ledgerEntry{{Lock: l0, Kind: "ok", Op: "status", CommandID: "a"}, {Lock: l0, Kind: "ok", Op: "status", CommandID: "a"}}, "ran twice: command a"},
		{"double actuation", []cmdRec{rec("a", 1, "unlock", "succeeded")},
			[]ledgerEntry{{Lock: l0, Kind: "move"}, {Lock: l0, Kind: "move"}, {Lock: l0, Kind: "ok", Op: "unlock", CommandID: "a"}}, "double actuation: lock " + l0},
		{"order", []cmdRec{rec("a", 2, "status", "succeeded"), rec("b", 1, "status", "succeeded")},
			[]ledgerEntry{{Lock: l0, Kind: "ok", Op: "status", CommandID: "a"}, {Lock: l0, Kind: "ok", Op: "status", CommandID: "b"}}, "order: otto's command b"},
		{"succeeded without running", []cmdRec{rec("a", 1, "status", "succeeded")}, nil, "succeeded without running: command a"},
		{"ran but failed", []cmdRec{rec("a", 1, "status", "failed")},
			[]ledgerEntry{{Lock: l0, Kind: "ok", Op: "status", CommandID: "a"}}, "result disagrees with the lock: command a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := check(c.cmds, c.ledger)
			if len(res.Violations) != 1 || !strings.HasPrefix(res.Violations[0], c.want) {
				t.Errorf("violations %q, want one starting %q", res.Violations, c.want)
			}
		})
	}
}

// TestCheckExcusesRefusalsAndBrokerLoss: a command the gateway refused
// before journaling it, and one whose result the broker lost (a resend
// reported it finished), are not lost; an interrupted unlock may have
// moved the bolt.
func TestCheckExcusesRefusalsAndBrokerLoss(t *testing.T) {
	refused := rec("a", 1, "status", "")
	refused.Refused = "unavailable"
	brokerLost := rec("b", 2, "status", "")
	brokerLost.DupState = "succeeded"
	interrupted := rec("c", 3, "unlock", "failed")
	ledger := []ledgerEntry{{Lock: l0, Kind: "ok", Op: "status", CommandID: "b"},
		{Lock: l0, Kind: "move"}, {Lock: l0, Kind: "refused", Op: "unlock", CommandID: "c", Status: "interrupted"}}
	res := check([]cmdRec{refused, brokerLost, interrupted}, ledger)
	if len(res.Violations) != 0 {
		t.Fatalf("violations %q", res.Violations)
	}
	if res.Counts["refused_unavailable"] != 1 || res.Counts["result_lost_by_broker"] != 1 {
		t.Errorf("counts %v", res.Counts)
	}
}

func TestReadLedgerRefusesGarbage(t *testing.T) {
	es, err := readLedger(strings.NewReader(`{"lock":"x","kind":"move","target":"locked"}` + "\n\n"))
	if err != nil || len(es) != 1 || es[0].Kind != "move" {
		t.Fatalf("readLedger = %v, %v", es, err)
	}
	if _, err := readLedger(strings.NewReader("{\"lock\":\n")); err == nil {
		t.Error("a torn line accepted")
	}
}

func samples(goroutines, fds, rules []int, rss []int64) []sample {
	var s []sample
	for i := range goroutines {
		s = append(s, sample{Pid: 7, Goroutines: goroutines[i], FDs: fds[i], MatchRules: rules[i], RSSKiB: rss[i]})
	}
	return s
}

// TestGrowth: flat series within tolerance pass; a goroutine leak of +3,
// an fd leak, RSS that grows by half, and a restart fail; warm-up (the
// first third) does not count.
func TestGrowth(t *testing.T) {
	flat := []int{40, 80, 30, 30, 31, 30, 32, 31, 30}
	fds := []int{20, 25, 12, 12, 12, 12, 13, 12, 12}
	rules := []int{9, 9, 9, 9, 9, 9, 9, 9, 9}
	rss := []int64{30000, 60000, 20000, 20000, 20400, 20200, 21000, 20800, 21000}
	if g := growth(samples(flat, fds, rules, rss)); len(g) != 0 {
		t.Errorf("flat series: %q", g)
	}
	leak := []int{30, 30, 30, 30, 30, 30, 33, 34, 35}
	if g := growth(samples(leak, fds, rules, rss)); len(g) != 1 || !strings.HasPrefix(g[0], "goroutines grew") {
		t.Errorf("goroutine leak: %q", g)
	}
	fdLeak := []int{12, 12, 12, 12, 13, 14, 16, 17, 18}
	if g := growth(samples(flat, fdLeak, rules, rss)); len(g) != 1 || !strings.HasPrefix(g[0], "fds grew") {
		t.Errorf("fd leak: %q", g)
	}
	bloat := []int64{20000, 20000, 20000, 20000, 20000, 20000, 30000, 31000, 32000}
	if g := growth(samples(flat, fds, rules, bloat)); len(g) != 1 || !strings.HasPrefix(g[0], "rss_kib grew") {
		t.Errorf("RSS growth: %q", g)
	}
	s := samples(flat, fds, rules, rss)
	s[5].Pid = 8
	if g := growth(s); len(g) != 1 || !strings.Contains(g[0], "restarted") {
		t.Errorf("restart: %q", g)
	}
	unreadable := []int{9, 9, 9, -1, -1, -1, -1, -1, -1}
	if g := growth(samples(flat, fds, unreadable, rss)); len(g) != 1 || !strings.Contains(g[0], "match_rules could not be measured") {
		t.Errorf("unreadable: %q", g)
	}
}

// TestUnitRules reads the repository's unit file: the supervisor applies
// what systemd would.
func TestUnitRules(t *testing.T) {
	u, err := readUnit("../../systemd/gatewayd.service")
	if err != nil {
		t.Fatal(err)
	}
	if u.restart != "on-failure" || u.restartDelay != 5*time.Second || u.watchdog != 30*time.Second ||
		u.startTimeout != time.Minute || len(u.prevent) != 1 || u.prevent[0] != 78 {
		t.Errorf("rules %v", u)
	}
	if _, err := parseUnit(bufio.NewScanner(strings.NewReader("[Service]\nRestart=no\n"))); err == nil {
		t.Error("Restart=no accepted")
	}
	if _, err := parseUnit(bufio.NewScanner(strings.NewReader("RestartSec=soon\nRestart=always\n"))); err == nil {
		t.Error("RestartSec=soon accepted")
	}
}

func TestTable(t *testing.T) {
	one, three, nine := 1.0, 3.0, 9.0
	rows := table([]*faultRec{
		{Kind: kindBroker, MQTTReconnect: &one}, {Kind: kindBroker, MQTTReconnect: &three}, {Kind: kindBroker},
		{Kind: kindDrop, FirstResult: &nine},
	})
	if len(rows) != 2 || rows[0].Measure != "mqtt_reconnect_s" || rows[0].N != 3 || rows[0].Missing != 1 ||
		rows[0].P50 != 1 || rows[0].Max != 3 || !rows[0].Over {
		t.Errorf("broker row %+v", rows[0])
	}
	if !rows[1].Over || rows[1].Bound != 5 {
		t.Errorf("drop row %+v: 9 s is over the 5 s goal", rows[1])
	}
	var b bytes.Buffer
	printTable(&b, rows)
	if !strings.Contains(b.String(), "OVER GOAL") || !strings.Contains(b.String(), "(1 never)") {
		t.Errorf("table:\n%s", b.String())
	}
}

func TestFlags(t *testing.T) {
	var out bytes.Buffer
	ctx := context.Background()
	if err := run(ctx, nil, &out, &out); err == nil || !strings.Contains(err.Error(), "-bin") {
		t.Errorf("no -bin: %v", err)
	}
	if err := run(ctx, []string{"-bin", t.TempDir()}, &out, &out); err == nil {
		t.Error("a -bin without the binaries accepted")
	}
	if err := run(ctx, []string{"-bin", os.TempDir(), "-soak", "1m"}, &out, &out); err == nil || !strings.Contains(err.Error(), "-soak") {
		t.Errorf("-soak 1m: %v", err)
	}
}

func TestCompact(t *testing.T) {
	got := compact([]string{"lost: a", "lost: b", "lost: c", "order: x"}, 2)
	want := []string{"lost: a", "lost: b", "order: x", "lost: 1 more (in the JSON report)"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("compact = %q, want %q", got, want)
	}
}
