package fleet_test

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gatewayd/gatewayd/firmware/command"
)

// The priority and throughput benchmarks run the real scheduler, with a
// real journal, over the link model of issue 14 (4 session slots, connect
// 100 ms, exchange 30 ms: fleettest.Model) in testing/synctest bubbles:
// every delay passes in virtual time, so the ratios they report do not
// depend on the machine's speed or load. What can still vary is which
// goroutine goes first at one virtual instant, and how the commands
// submitted at once fall into the intake's batches (a background lock
// admitted before the urgent ones begins a session, then yields): the
// throughput varies by under 1% from run to run, the unlock's waits not
// at all so far. (synctest takes a *testing.T: inBubble runs the bubble
// as a test of its own.) Their ns/op is the real time a simulation
// takes, and means nothing.

// inBubble runs f in a synctest bubble, as a test, inside a benchmark.
func inBubble(b *testing.B, f func(t *testing.T)) {
	b.Helper()
	all := func(string, string) (bool, error) { return true, nil }
	ran := false
	sim := func(t *testing.T) { ran = true; synctest.Test(t, f) }
	if !testing.RunTests(all, []testing.InternalTest{{Name: b.Name() + "/virtual", F: sim}}) {
		b.Fatal("the simulation failed (its log is above)")
	}
	if !ran {
		b.Fatal("the simulation did not run (-test.skip?)")
	}
}

// unlockWait submits an unlock for a lock of its own after a backlog of
// statuses for backlog locks (3 each), after delay, and returns how long
// it waited for its answer, in virtual time.
func unlockWait(b *testing.B, backlog int, delay time.Duration) time.Duration {
	var wait time.Duration
	inBubble(b, func(t *testing.T) {
		sm := newSim(t)
		for range 3 {
			for l := range backlog {
				sm.submit(uint64(1+l), command.OpStatus)
			}
		}
		time.Sleep(delay)
		from := time.Now()
		id := sm.submit(1000, command.OpUnlock)
		wait = sm.waitDone(id).Sub(from)
	})
	return wait
}

// BenchmarkPriorityUnlock: an unlock that arrives behind 600 status
// commands on 200 other locks, at 100 moments spread over the backlog's
// first 2 s (different phases of the sessions under way), against an
// unloaded unlock. Reports p50/unloaded and p99/unloaded (goal p99 <= 2;
// the old FIFO scheduler: 56x and 66x).
func BenchmarkPriorityUnlock(b *testing.B) {
	const trials = 100
	var p50, p99 float64
	for b.Loop() {
		unloaded := unlockWait(b, 0, 0)
		waits := make([]time.Duration, trials)
		for i := range waits {
			// 200 ms .. 2.18 s in steps of 20 ms, a step no multiple
			// of the model's delays (phases vary).
			waits[i] = unlockWait(b, 200, 200*time.Millisecond+time.Duration(i)*20*time.Millisecond+time.Duration(i%7)*time.Millisecond)
		}
		slices.Sort(waits)
		p50 = float64(waits[trials/2-1]+waits[trials/2]) / 2 / float64(unloaded)
		p99 = float64(waits[trials*99/100-1]) / float64(unloaded)
		b.Logf("unloaded unlock %v; behind 600 statuses: p50 %v, p99 %v, max %v",
			unloaded, waits[trials/2], waits[trials*99/100-1], waits[trials-1])
	}
	b.ReportMetric(p50, "p50/unloaded")
	b.ReportMetric(p99, "p99/unloaded")
}

// BenchmarkPriorityThroughput: 1,000 commands over 200 locks (5 each; half
// the locks get lock, unlock and user management among statuses, half
// statuses only) submitted at once, against the bound set by the slots
// and delays: every lock needs one connect, and connects are serial (one
// connect slot), so the last lock's answers come at least
// 200 x connect + 5 x exchange after the start; and the 4 slots carry
// 200 connects and 1,000 exchanges. Reports bound/makespan (goal >= 0.97).
func BenchmarkPriorityThroughput(b *testing.B) {
	const locks, per, slots = 200, 5, 4
	mixed := []command.Op{command.OpUnlock, command.OpStatus, command.OpAddUser, command.OpLock, command.OpStatus}
	var ratio float64
	for b.Loop() {
		var makespan time.Duration
		inBubble(b, func(t *testing.T) {
			sm := newSim(t)
			from := time.Now()
			for l := range locks {
				for i := range per {
					op := command.OpStatus
					if l%2 == 1 {
						op = mixed[i]
					}
					sm.submit(uint64(1+l), op)
				}
			}
			sm.wait("every answer", func() bool { return sm.model.Answered() == locks*per })
			for _, e := range sm.model.Events() {
				makespan = max(makespan, e.At.Sub(from))
			}
		})
		serial := locks*modelConnect + per*modelExchange
		work := (locks*modelConnect + locks*per*modelExchange) / slots
		bound := max(serial, work)
		ratio = float64(bound) / float64(makespan)
		b.Logf("1000 commands over 200 locks in %v; bound %v", makespan, bound)
	}
	b.ReportMetric(ratio, "bound/makespan")
}
