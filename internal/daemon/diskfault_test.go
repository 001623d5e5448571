package daemon

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
)

// TestDiskFullMidStream: the database's disk is full for a few seconds
// while commands for two locks arrive and run. Every command the broker
// accepted gets exactly one result, after the disk recovered and without
// a restart, and every one succeeds: none was dropped, left running, or
// run after a later command of its signer (which the lock would refuse as
// a replay).
func TestDiskFullMidStream(t *testing.T) {
	d := newDock(t, 2, emulator.Options{})
	var full atomic.Bool
	var failed atomic.Int64
	d.run(func(o *Options) { o.OpenDB = diskFull(&full, &failed) })
	oc := d.client
	// Subscribed: commands published before would have no subscriber.
	oc.until("retained status online", func() bool {
		return len(oc.status) > 0 && strings.Contains(oc.status[len(oc.status)-1], `"online"`)
	})
	var ids [][16]byte
	send := func(n int) {
		for k := range n {
			for i := range d.locks {
				op := []command.Op{command.OpUnlock, command.OpLock}[k%2]
				b, s := d.sign(i, op, command.Args{})
				oc.publish(s)
				ids = append(ids, b.CommandID)
			}
		}
	}
	send(2)
	oc.until("a first result", func() bool { return len(oc.results) > 0 })
	full.Store(true)
	send(2)
	for failed.Load() < 10 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	full.Store(false)
	send(1)
	oc.until("a result for every command", func() bool {
		for _, id := range ids {
			if len(oc.resultsFor(id)) == 0 {
				return false
			}
		}
		return true
	})
	oc.mu.Lock()
	for _, id := range ids {
		for _, r := range oc.resultsFor(id) {
			if r.State != bonds.StateSucceeded || r.Status != "ok" {
				t.Errorf("command %x: %s %q (%s)", id, r.State, r.Status, r.Detail)
			}
		}
	}
	oc.mu.Unlock()
	for i, l := range d.locks {
		if m := l.act.Moves(); m != len(ids)/len(d.locks) {
			t.Errorf("lock %d moved %d times for %d commands", i, m, len(ids)/len(d.locks))
		}
	}
	t.Logf("%d commits failed while the disk was full", failed.Load())
}
