package realbluez_test

import (
	"testing"

	"github.com/gatewayd/gatewayd/bluez/internal/realbluez"
)

// TestTimings: the timing table takes p50 and max over ok results only,
// tells a scenario's first connect from its second (per run), and counts
// each mode's run separately.
func TestTimings(t *testing.T) {
	var rs []realbluez.Result
	for _, mode := range []string{"a", "b"} {
		rs = append(rs,
			realbluez.Result{Mode: mode, Scenario: "handshake", Step: "connect", OK: true, Millis: 100},
			realbluez.Result{Mode: mode, Scenario: "bond", Step: "connect", OK: true, Millis: 300},
			realbluez.Result{Mode: mode, Scenario: "bond", Step: "pair", OK: false, Millis: 9999},
			realbluez.Result{Mode: mode, Scenario: "bond", Step: "connect", OK: true, Millis: 50},
		)
	}
	rs[0].Millis = 200 // mode a's handshake connect
	got := map[string]realbluez.Timing{}
	for _, tm := range realbluez.Timings(rs) {
		got[tm.Step] = tm
	}
	// connect: handshake/connect (200, 100) and bond/connect#1 (300, 300).
	if c := got["connect"]; c.N != 4 || c.P50ms != 200 || c.MaxMs != 300 {
		t.Errorf("connect: %+v", c)
	}
	if c := got["bonded-reconnect"]; c.N != 2 || c.P50ms != 50 || c.MaxMs != 50 {
		t.Errorf("bonded-reconnect: %+v", c)
	}
	if c := got["pairing"]; c.N != 0 {
		t.Errorf("a failed step counted: %+v", c)
	}
}
