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

// TestWatchdogWithheldWhileStalled: the systemd watchdog ping says the
// main loops make progress, not only that the process lives. With the
// database's disk full, a command arrives: the intake has it waiting and
// cannot journal it, so after StallAfter the daemon withholds WATCHDOG=1
// and says why in STATUS=; once the disk has room again, the pings come
// back and the command gets its result.
func TestWatchdogWithheldWhileStalled(t *testing.T) {
	d := newDock(t, 1, emulator.Options{})
	ln, n := notifySocketWatchdog(t, d.dir, "200000") // a ping every 100 ms
	var full atomic.Bool
	d.launch(func(o *Options) { o.Notifier, o.OpenDB, o.StallAfter = n, diskFull(&full, nil), time.Second })
	msgs := make(chan string, 1000)
	go func() {
		buf := make([]byte, 512)
		for {
			k, err := ln.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:k])
		}
	}()
	// next returns the next notification containing want (60 s at most).
	next := func(want string) string {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed waiting for %q", want)
				}
				if strings.Contains(m, want) {
					return m
				}
			case <-deadline:
				t.Fatalf("no notification %q within 60 s", want)
			}
		}
	}
	next("READY=1")
	next("WATCHDOG=1")
	// Subscribed: a command published before would have no subscriber.
	d.client.until("retained status online", func() bool {
		return len(d.client.status) > 0 && strings.Contains(d.client.status[len(d.client.status)-1], `"online"`)
	})

	full.Store(true)
	b, s := d.sign(0, command.OpUnlock, command.Args{})
	d.client.publish(s)
	status := next("STATUS=unhealthy")
	if !strings.Contains(status, "intake") {
		t.Errorf("unhealthy status %q does not name the intake", status)
	}
	// While the disk stays full: no ping.
	quiet := time.After(time.Second)
wait:
	for {
		select {
		case m := <-msgs:
			if strings.Contains(m, "WATCHDOG=1") {
				t.Fatal("watchdog pinged while the intake was stalled")
			}
		case <-quiet:
			break wait
		}
	}
	full.Store(false)
	next("WATCHDOG=1")
	oc := d.client
	oc.until("the result after the disk recovered", func() bool { return len(oc.resultsFor(b.CommandID)) == 1 })
	oc.mu.Lock()
	r := oc.resultsFor(b.CommandID)[0]
	oc.mu.Unlock()
	if r.State != bonds.StateSucceeded {
		t.Errorf("result %+v", r)
	}
}
