package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

// ledgerEntry is one line of bluezemu's ledger.jsonl (cmd/bluezemu
// LedgerEntry): the locks' own record of bolt moves and commands.
type ledgerEntry struct {
	Lock      string `json:"lock"`
	Kind      string `json:"kind"` // move, ok, refused, boot
	Target    string `json:"target"`
	Op        string `json:"op"`
	CommandID string `json:"command_id"`
	Status    string `json:"status"`
}

func readLedger(r io.Reader) ([]ledgerEntry, error) {
	var out []ledgerEntry
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var e ledgerEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// A SIGKILL cannot tear a line (one write each), so this is
			// a real fault of the ledger.
			return out, fmt.Errorf("ledger line %q: %w", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// checkResult is what check finds.
type checkResult struct {
	Violations []string       `json:"violations"`
	Notes      []string       `json:"notes"`
	Counts     map[string]int `json:"counts"`
}

// check verifies the invariants over the backend's records and the
// locks' ledger:
//   - every accepted command has exactly one result (distinct results; the
//     same result redelivered on the wire is fine), or a refusal before
//     journaling; none is lost;
//   - no command ran twice at a lock, and no lock moved its bolt more
//     often than it ran lock and unlock commands (double actuation);
//   - a succeeded result is backed by the lock's record of running it, and
//     a command the lock ran has a succeeded result;
//   - each signer's commands ran at each lock in counter order.
func check(cmds []cmdRec, ledger []ledgerEntry) checkResult {
	res := checkResult{Counts: map[string]int{}}
	bad := func(format string, a ...any) { res.Violations = append(res.Violations, fmt.Sprintf(format, a...)) }
	byID := map[string]*cmdRec{}
	for i := range cmds {
		byID[cmds[i].ID] = &cmds[i]
	}
	oks := map[string]int{}
	moves := map[string]int{}
	actuations := map[string]int{} // lock/unlock run, or interrupted (the bolt may have moved)
	lastCounter := map[string]uint64{}
	lockSawTwice := 0
	for _, e := range ledger {
		switch e.Kind {
		case "move":
			moves[e.Lock]++
		case "ok":
			oks[e.CommandID]++
			if e.Op == "lock" || e.Op == "unlock" {
				actuations[e.Lock]++
			}
		case "refused":
			if e.Status == "interrupted" && (e.Op == "lock" || e.Op == "unlock") {
				actuations[e.Lock]++
			}
			if oks[e.CommandID] > 0 {
				lockSawTwice++
			}
		}
		c := byID[e.CommandID]
		if c == nil || (e.Kind != "ok" && e.Kind != "refused") {
			continue
		}
		if e.Kind == "ok" && oks[e.CommandID] == 1 {
			k := c.Signer + "@" + e.Lock
			if c.Counter <= lastCounter[k] {
				bad("order: %s's command %s (counter %d) ran at lock %s after counter %d", c.Signer, c.ID, c.Counter, e.Lock, lastCounter[k])
			}
			lastCounter[k] = c.Counter
		}
	}
	for id, n := range oks {
		if n > 1 {
			bad("ran twice: command %s ran %d times at its lock", id, n)
		}
	}
	for l, n := range moves {
		if n > actuations[l] {
			bad("double actuation: lock %s moved its bolt %d times for %d lock/unlock commands run or interrupted", l, n, actuations[l])
		}
	}
	for i := range cmds {
		c := &cmds[i]
		if c.Accepted.IsZero() {
			res.Counts["not_accepted"]++
			continue
		}
		res.Counts["accepted"]++
		res.Counts["wire_redeliveries"] += max(0, c.Wire-len(c.Results))
		switch {
		case len(c.Results) > 1:
			bad("duplicate result: command %s has %d different results (%s)", c.ID, len(c.Results), resultStates(c.Results))
		case len(c.Results) == 0 && c.Refused != "":
			res.Counts["refused_"+c.Refused]++
		case len(c.Results) == 0 && c.DupState != "" && terminal(c.DupState):
			// The gateway journaled and finished it (a resend was a
			// duplicate with this state) but its result never reached
			// the subscriber: the broker lost it.
			res.Counts["result_lost_by_broker"]++
			res.Notes = append(res.Notes, fmt.Sprintf("command %s finished (%s) but its result never arrived: lost by the broker after a SIGKILL?", c.ID, c.DupState))
		case len(c.Results) == 0:
			bad("lost: command %s (%s of lock %s by %s, accepted %s) has no result", c.ID, c.Op, lockID(c.Lock), c.Signer, c.Accepted.Format(time.TimeOnly))
		default:
			r := c.Results[0]
			res.Counts["result_"+r.State]++
			if c.Sends > 1 {
				res.Counts["resent"]++
			}
			if r.State != "succeeded" && !(c.Sends > 1 && r.State == "rejected" && r.Status == "replay") {
				// Not a violation by itself (the checks below compare it
				// with the lock's record), but the operator would ask why.
				res.Notes = append(res.Notes, fmt.Sprintf("command %s (%s of lock %s) ended %s/%s after %d attempts: %s",
					c.ID, c.Op, lockID(c.Lock), r.State, r.Status, r.Attempts, r.Detail))
			}
			if c.Sends > 1 && r.State == "rejected" && r.Status == "replay" {
				// The broker lost the first copy (a SIGKILL within its
				// autosave interval) and the resend came after later
				// counters of the signer had run: refused, not run.
				res.Counts["resent_refused_as_replay"]++
				res.Notes = append(res.Notes, fmt.Sprintf("command %s: the broker lost it, and its resend was refused as a replay (a later counter had run)", c.ID))
			}
			switch {
			case r.State == "succeeded" && oks[c.ID] == 0:
				bad("succeeded without running: command %s has a succeeded result but its lock has no record of running it", c.ID)
			case r.State != "succeeded" && oks[c.ID] > 0:
				bad("result disagrees with the lock: command %s ran at its lock but its result is %s (%s)", c.ID, r.State, r.Status)
			}
		}
	}
	if lockSawTwice > 0 {
		res.Counts["lock_saw_again"] = lockSawTwice
	}
	sort.Strings(res.Violations)
	return res
}

// compact keeps the first n violations of each kind (the text before the
// first colon) and says how many more there are; the JSON has them all.
func compact(vs []string, n int) []string {
	seen := map[string]int{}
	var out []string
	var kinds []string
	for _, v := range vs {
		k, _, _ := strings.Cut(v, ":")
		if seen[k] == 0 {
			kinds = append(kinds, k)
		}
		seen[k]++
		if seen[k] <= n {
			out = append(out, v)
		}
	}
	for _, k := range kinds {
		if seen[k] > n {
			out = append(out, fmt.Sprintf("%s: %d more (in the JSON report)", k, seen[k]-n))
		}
	}
	return out
}

func terminal(state string) bool {
	return state == "succeeded" || state == "failed" || state == "expired" || state == "rejected"
}

func resultStates(rs []resultMsg) string {
	var s []string
	for _, r := range rs {
		s = append(s, fmt.Sprintf("%s/%s attempts %d", r.State, r.Status, r.Attempts))
	}
	return strings.Join(s, "; ")
}

// goal is the goal for a kind of fault: which measure, and its
// bound (0: no number, only that it recovers).
type goal struct {
	measure string
	bound   float64
	text    string
}

var goals = map[string]goal{
	kindBroker:   {"mqtt_reconnect_s", 2, "broker back → connected ≤ 2 s (p99)"},
	kindBluez:    {"first_result_s", 0, "recovers by itself"},
	kindDaemon:   {"ready_s", 0, "READY and resume (RestartSec counts)"},
	kindDrop:     {"first_result_s", 5, "lock's next result ≤ 5 s"},
	kindAbort:    {"first_result_s", 5, "lock's next result ≤ 5 s"},
	kindRange:    {"first_result_s", 5, "≤ 5 s after back in range"},
	kindDiskFull: {"all_results_s", 5, "every accepted command's result ≤ 5 s"},
	kindEPERM:    {"all_results_s", 5, "every accepted command's result ≤ 5 s"},
	kindReadOnly: {"first_result_s", 0, "READY once writable, and resume"},
}

// row is one line of the recovery table.
type row struct {
	Kind    string  `json:"kind"`
	Measure string  `json:"measure"`
	N       int     `json:"n"`
	Missing int     `json:"missing"` // faults after which it was never reached
	P50     float64 `json:"-"`
	P99     float64 `json:"-"`
	Max     float64 `json:"-"`
	// The same for JSON, absent when no fault of the kind reached it.
	P50s  *float64 `json:"p50_s,omitempty"`
	P99s  *float64 `json:"p99_s,omitempty"`
	Maxs  *float64 `json:"max_s,omitempty"`
	Goal  string   `json:"goal"`
	Bound float64  `json:"bound_s,omitempty"`
	Over  bool     `json:"over_goal"`
}

func measureOf(f *faultRec, m string) *float64 {
	switch m {
	case "mqtt_reconnect_s":
		return f.MQTTReconnect
	case "ready_s":
		return f.Ready
	case "first_result_s":
		return f.FirstResult
	case "all_results_s":
		return f.AllResults
	}
	return nil
}

// quantile is the q-quantile (nearest rank) of sorted xs.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[max(0, min(i, len(xs)-1))]
}

// table summarises the faults: per kind, every measure taken, the goal's
// measure first.
func table(faults []*faultRec) []row {
	var kinds []string
	for _, f := range faults {
		if !slices.Contains(kinds, f.Kind) {
			kinds = append(kinds, f.Kind)
		}
	}
	var rows []row
	for _, k := range kinds {
		g := goals[k]
		measures := []string{g.measure}
		for _, m := range []string{"mqtt_reconnect_s", "ready_s", "first_result_s", "all_results_s"} {
			if m != g.measure {
				measures = append(measures, m)
			}
		}
		for _, m := range measures {
			var xs []float64
			n, missing := 0, 0
			for _, f := range faults {
				if f.Kind != k {
					continue
				}
				n++
				if v := measureOf(f, m); v != nil {
					xs = append(xs, *v)
				} else {
					missing++
				}
			}
			if len(xs) == 0 && m != g.measure {
				continue
			}
			slices.Sort(xs)
			rw := row{Kind: k, Measure: m, N: n, Missing: missing, P50: quantile(xs, .5), P99: quantile(xs, .99),
				Max: quantile(xs, 1)}
			if len(xs) > 0 {
				rw.P50s, rw.P99s, rw.Maxs = &rw.P50, &rw.P99, &rw.Max
			}
			if m == g.measure {
				rw.Goal, rw.Bound = g.text, g.bound
				rw.Over = missing > 0 || (g.bound > 0 && rw.P99 > g.bound)
			}
			rows = append(rows, rw)
		}
	}
	return rows
}

func printTable(w io.Writer, rows []row) {
	fmt.Fprintf(w, "%-20s %-18s %3s %8s %8s %8s  %s\n", "fault", "measure", "n", "p50", "p99", "max", "goal")
	for _, r := range rows {
		f := func(x float64) string {
			if math.IsNaN(x) {
				return "—"
			}
			return fmt.Sprintf("%.2fs", x)
		}
		g := r.Goal
		if r.Over {
			g += "  OVER GOAL"
		}
		if r.Missing > 0 {
			g += fmt.Sprintf("  (%d never)", r.Missing)
		}
		fmt.Fprintf(w, "%-20s %-18s %3d %8s %8s %8s  %s\n", r.Kind, r.Measure, r.N, f(r.P50), f(r.P99), f(r.Max), g)
	}
}

// report is the campaign's outcome, also its JSON output.
type report struct {
	Mode       string         `json:"mode"`
	Faults     []*faultRec    `json:"faults"`
	Skipped    []string       `json:"skipped,omitempty"`
	Table      []row          `json:"table"`
	Counts     map[string]int `json:"counts"`
	Violations []string       `json:"violations"`
	Notes      []string       `json:"notes,omitempty"`
	Supervisor []supEvent     `json:"supervisor"`
	Soak       *soakReport    `json:"soak,omitempty"`
	OverGoal   bool           `json:"over_goal"`
	Passed     bool           `json:"passed"`
}

// finish stops the daemon and bluezemu, checks the database and the
// invariants, and builds the report.
func (r *rig) finish(faults []*faultRec, skipped []string, o options) *report {
	rep := &report{Mode: "campaign", Faults: faults, Skipped: skipped}
	if o.soak > 0 {
		rep.Mode = "soak"
	}
	for _, c := range r.back.snapshot() {
		if !c.Accepted.IsZero() && len(c.Results) == 0 && c.Refused == "" && !(c.DupState != "" && terminal(c.DupState)) {
			rep.Violations = append(rep.Violations, fmt.Sprintf("wedge: command %s (%s of lock %s) accepted at %s has no result 60 s after the last fault",
				c.ID, c.Op, lockID(c.Lock), c.Accepted.Format(time.TimeOnly)))
		}
	}
	r.sup.stop()
	rep.Supervisor = r.sup.history()
	r.mu.Lock()
	emu := r.emu
	r.mu.Unlock()
	_ = emu.Stop(syscall.SIGTERM, 20*time.Second)
	if r.tmpfs {
		_ = remount(r.stateDir, false)
		_ = chattr("-i", r.dbPath())
	}
	if out, err := r.runBin(2*time.Minute, "gatewayd", "db", "check", "-db", r.dbPath()); err != nil {
		rep.Violations = append(rep.Violations, "gatewayd db check: "+strings.TrimSpace(err.Error()))
	} else {
		r.say("\n$ gatewayd db check -db %s\n%s", r.dbPath(), strings.TrimSpace(out))
	}
	var ledger []ledgerEntry
	f, err := os.Open(r.path("locks/ledger.jsonl"))
	if err == nil {
		ledger, err = readLedger(f)
		f.Close()
	}
	if err != nil {
		rep.Violations = append(rep.Violations, "the locks' ledger: "+err.Error())
	}
	cr := check(r.back.snapshot(), ledger)
	rep.Violations = append(rep.Violations, cr.Violations...)
	rep.Notes = cr.Notes
	rep.Counts = cr.Counts
	rep.Counts["ledger_entries"] = len(ledger)
	rep.Table = table(faults)
	for _, rw := range rep.Table {
		rep.OverGoal = rep.OverGoal || rw.Over
	}
	return rep
}

// conclude prints the report, writes its JSON, and returns the verdict.
func (rep *report) conclude(r *rig, o options) error {
	rep.Passed = len(rep.Violations) == 0 && !(o.strict && rep.OverGoal)
	if len(rep.Table) > 0 {
		r.say("\n== recovery times (from the fault's end; goals from issue 12)")
		printTable(r.out, rep.Table)
	}
	r.say("\n== counts")
	keys := make([]string, 0, len(rep.Counts))
	for k := range rep.Counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r.say("   %-24s %d", k, rep.Counts[k])
	}
	for _, n := range rep.Notes {
		r.say("   note: %s", n)
	}
	for _, k := range rep.Skipped {
		r.say("   NOT RUN: %s (%v)", k, r.tmpfsErr)
	}
	if o.json != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(o.json, b, 0o644)
		}
		if err != nil {
			return fmt.Errorf("-json: %w", err)
		}
		r.say("   report written to %s", o.json)
	}
	r.say("\n== invariants (lost, duplicate, double actuation, order, db check, wedge)")
	if len(rep.Violations) == 0 {
		r.say("   all hold")
	}
	for _, v := range compact(rep.Violations, 5) {
		r.say("   VIOLATION: %s", v)
	}
	switch {
	case len(rep.Violations) > 0:
		return fmt.Errorf("%d invariant violations", len(rep.Violations))
	case o.strict && rep.OverGoal:
		return errors.New("recovery times over goal (-strict)")
	}
	if rep.OverGoal {
		r.say("   some recovery times are over goal (reported; -strict fails on them)")
	}
	r.say("\nPASS")
	return nil
}
