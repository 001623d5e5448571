package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestDockDemo runs the README's main command in-process, so it cannot
// rot: run fails if any step does not behave (discovery, bonding, the
// journal, the replay refusals, the crash without a second bolt move, the
// power cycle, reconciliation), and the output must show each step.
func TestDockDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, []string{"-locks", "4", "-first", "15"}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	checkSteps(t, out.String(), 15, Steps)
	for _, want := range []string{
		"lock 4c4b000000000004",
		"bonded",
		"journaled and fsynced",
		"refused by the journal",
		"duplicate_command",
		"bolt moves: 1",
		"recovered without restarting",
		"power-cycled the adapter",
		`gatewayd_bluez_adapter_power_cycles_total{adapter="hci0"} `,
		"all steps passed",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestDockDemoFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-locks", "1"}, &out); err == nil {
		t.Fatal("-locks 1 accepted")
	}
}

// checkSteps: the output numbers its steps first, first+1, ... with
// exactly n of them, as scripts/demo.sh expects from -first and -steps.
func checkSteps(t *testing.T, out string, first, n int) {
	t.Helper()
	var got []int
	for _, line := range strings.Split(out, "\n") {
		var k int
		if _, err := fmt.Sscanf(line, "== %d.", &k); err == nil {
			got = append(got, k)
		}
	}
	if len(got) != n {
		t.Errorf("%d numbered steps %v, Steps says %d", len(got), got, n)
	}
	for i, k := range got {
		if k != first+i {
			t.Errorf("steps numbered %v, want %d on", got, first)
			break
		}
	}
}
