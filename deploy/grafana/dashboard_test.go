package grafana

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	gprom "github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

const file = "gatewayd-fleet.json"

// classic is Grafana's classic dashboard JSON model: what Grafana's
// import takes and every Grafana version reads. The SDK marks it
// deprecated in favour of its v2 schema, which only Grafana 12's new
// dashboard API takes.
//
//lint:ignore SA1019 the classic model is the one Grafana imports
type classic = dashboard.Dashboard

// load decodes the dashboard strictly with Grafana's dashboard schema:
// an unknown or mistyped field anywhere in the dashboard, in a panel's
// options or field config (timeseries, stat) or in a Prometheus query is
// an error, as is a required field left out; then the schema's own
// validation runs.
func load(t *testing.T) (*classic, []byte) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rt := cog.NewRuntime()
	rt.RegisterPanelcfgVariant(timeseries.VariantConfig())
	rt.RegisterPanelcfgVariant(stat.VariantConfig())
	rt.RegisterDataqueryVariant(gprom.VariantConfig())
	var strict classic
	if err := strict.UnmarshalJSONStrict(raw); !isNil(err) {
		t.Fatalf("%s does not load with Grafana's dashboard schema: %v", file, err)
	}
	// The strict decoder of v0.0.22 reports errors but leaves panels out
	// (it takes its own empty error list for an error); the plain one,
	// with the same types and plugin variants, fills them in.
	var d classic
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if err := d.Validate(); !isNil(err) {
		t.Fatalf("%s: %v", file, err)
	}
	return &d, raw
}

// panels are the dashboard's panels with the panels of collapsed rows.
func panels(d *classic) (out []*dashboard.Panel, rows []*dashboard.RowPanel) {
	for _, p := range d.Panels {
		switch {
		case p.Panel != nil:
			out = append(out, p.Panel)
		case p.RowPanel != nil:
			rows = append(rows, p.RowPanel)
			for i := range p.RowPanel.Panels {
				out = append(out, &p.RowPanel.Panels[i])
			}
		}
	}
	return out, rows
}

// TestDashboardSchema: the dashboard loads strictly with Grafana's schema,
// has a uid and title, a data source variable every panel and query uses
// (so it imports into any Grafana whatever its Prometheus is called), and
// a multi-value gateway variable every gatewayd selector filters on.
func TestDashboardSchema(t *testing.T) {
	d, _ := load(t)
	if d.Uid == nil || *d.Uid != "gatewayd-fleet" || d.Title == nil || *d.Title == "" {
		t.Errorf("uid %v, title %v", d.Uid, d.Title)
	}
	vars := map[string]dashboard.VariableModel{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	ds, ok := vars["datasource"]
	if !ok || ds.Type != dashboard.VariableTypeDatasource || ds.Query == nil || ds.Query.String == nil || *ds.Query.String != "prometheus" {
		t.Errorf("no datasource variable of type prometheus: %+v", ds)
	}
	inst, ok := vars["instance"]
	if !ok || inst.Type != dashboard.VariableTypeQuery || inst.Multi == nil || !*inst.Multi || inst.IncludeAll == nil || !*inst.IncludeAll {
		t.Errorf("no multi-value instance variable with All: %+v", inst)
	} else if inst.Datasource == nil || inst.Datasource.Uid == nil || *inst.Datasource.Uid != "${datasource}" {
		t.Errorf("the instance variable does not query ${datasource}: %+v", inst.Datasource)
	}
	ps, _ := panels(d)
	if len(ps) < 10 {
		t.Fatalf("%d panels", len(ps))
	}
	sel := regexp.MustCompile(`gatewayd_[a-z0-9_]+(\{[^}]*\})?`)
	for _, p := range ps {
		name := fmt.Sprintf("panel %v %q", deref(p.Id), deref(p.Title))
		if p.Datasource == nil || p.Datasource.Uid == nil || *p.Datasource.Uid != "${datasource}" {
			t.Errorf("%s: datasource is not ${datasource}", name)
		}
		if p.Description == nil || *p.Description == "" {
			t.Errorf("%s: no description", name)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no query", name)
		}
		for _, q := range p.Targets {
			pq, ok := q.(*gprom.Dataquery)
			if !ok {
				t.Errorf("%s: query %T is not a Prometheus query", name, q)
				continue
			}
			if pq.Datasource == nil || pq.Datasource.Uid == nil || *pq.Datasource.Uid != "${datasource}" {
				t.Errorf("%s: query %s: datasource is not ${datasource}", name, deref(pq.RefId))
			}
			for _, m := range sel.FindAllStringSubmatch(pq.Expr, -1) {
				if !strings.Contains(m[1], `instance=~"$instance"`) {
					t.Errorf("%s: %s does not filter on the instance variable", name, m[0])
				}
			}
		}
	}
}

// TestDashboardLayout: panel ids are unique (Grafana keys panel state and
// links on them), every panel fits the 24-column grid, and no two panels
// overlap.
func TestDashboardLayout(t *testing.T) {
	d, _ := load(t)
	ps, rows := panels(d)
	type box struct {
		name       string
		x, y, w, h int
	}
	var boxes []box
	ids := map[uint32]string{}
	add := func(id *uint32, title *string, g *dashboard.GridPos) {
		name := fmt.Sprintf("panel %v %q", deref(id), deref(title))
		if id == nil {
			t.Errorf("%s: no id", name)
		} else if other, dup := ids[*id]; dup {
			t.Errorf("%s: id %d already used by %s", name, *id, other)
		} else {
			ids[*id] = name
		}
		if g == nil {
			t.Errorf("%s: no gridPos", name)
			return
		}
		if g.W < 1 || g.H < 1 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", name, *g)
		}
		boxes = append(boxes, box{name, int(g.X), int(g.Y), int(g.W), int(g.H)})
	}
	for _, r := range rows {
		add(&r.Id, r.Title, r.GridPos)
	}
	for _, p := range ps {
		add(p.Id, p.Title, p.GridPos)
	}
	for i, a := range boxes {
		for _, b := range boxes[i+1:] {
			if a.x < b.x+b.w && b.x < a.x+a.w && a.y < b.y+b.h && b.y < a.y+a.h {
				t.Errorf("%s and %s overlap", a.name, b.name)
			}
		}
	}
}

// TestDashboardQueriesParse: promtool parses every query, with Grafana's
// variables replaced as Grafana does before it sends one (a rule file of
// one recording rule per query: promtool check rules runs Prometheus's
// PromQL parser on each).
func TestDashboardQueriesParse(t *testing.T) {
	d, _ := load(t)
	ps, _ := panels(d)
	vars := strings.NewReplacer(`$__rate_interval`, `1m`, `$__interval`, `15s`, `$__range`, `1h`, `$instance`, `.*`)
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	for _, p := range ps {
		for _, q := range p.Targets {
			if pq, ok := q.(*gprom.Dataquery); ok {
				rules = append(rules, rule{Record: fmt.Sprintf("dashboard:panel_%d:%s", deref(p.Id), deref(pq.RefId)), Expr: vars.Replace(pq.Expr)})
			}
		}
	}
	if len(rules) == 0 {
		t.Fatal("no queries")
	}
	// JSON is YAML: promtool reads it as a rule file.
	b, err := json.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "queries.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run scripts/deps.sh (apt-get install prometheus)")
	}
	if out, err := exec.Command(p, "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the dashboard's %d queries: %v\n%s", len(rules), err, out)
	}
}

// TestDashboardCoversTheFleet: the dashboard shows what issue 15 asks of
// it, each by the metric that carries it.
func TestDashboardCoversTheFleet(t *testing.T) {
	_, raw := load(t)
	for what, metric := range map[string]string{
		"commands by operation":  "gatewayd_fleet_commands_received_total",
		"results by operation":   "gatewayd_fleet_results_total",
		"latency":                "gatewayd_fleet_command_duration_seconds_bucket",
		"locks in range":         "gatewayd_bluez_locks_present",
		"bonds":                  "gatewayd_bonding_outcomes_total",
		"adapter resets":         "gatewayd_bluez_adapter_power_cycles_total",
		"MQTT state":             "gatewayd_mqtt_connected",
		"queue depth":            "gatewayd_fleet_commands_queued",
		"refusals":               "gatewayd_intake_rejected_total",
		"results for the broker": "gatewayd_outbox_pending",
	} {
		if !strings.Contains(string(raw), metric) {
			t.Errorf("the dashboard does not show %s (%s)", what, metric)
		}
	}
}

// isNil: the SDK's strict decoder returns its error list even when it is
// empty (a nil cog.BuildErrors in a non-nil error).
func isNil(err error) bool {
	var be cog.BuildErrors
	if errors.As(err, &be) {
		return len(be) == 0
	}
	return err == nil
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
