package prometheus

import (
	"os/exec"
	"testing"
)

func promtool(t *testing.T, args ...string) {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run scripts/deps.sh (apt-get install prometheus)")
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %v: %v\n%s", args, err, out)
	}
}

// TestRulesAreValid: promtool parses the rules and their templates.
func TestRulesAreValid(t *testing.T) { promtool(t, "check", "rules", "gatewayd-alerts.yml") }

// TestRulesFireAsDocumented: promtool's rule unit tests, with series that
// should and should not fire each alert tested.
func TestRulesFireAsDocumented(t *testing.T) {
	promtool(t, "test", "rules", "gatewayd-alerts_test.yml")
}
