package daemon

import (
	"bytes"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
	"github.com/gatewayd/gatewayd/fleet/operator"
)

// auditTrail checks the events received for lock i: deduplicated by seq
// (the contract: at least once), every entry from 0 to the last one
// received is there, once, in order, each identical to its repeats, each
// exactly the lock's own entry, chained from the lock's genesis. It
// returns the entries in order and how many messages were repeats.
func (d *dock) auditTrail(t *testing.T, i int, evs []operator.AuditMessage) (trail []operator.AuditMessage, repeats int) {
	t.Helper()
	l := d.locks[i]
	first := map[uint64]operator.AuditMessage{}
	next := uint64(0)
	for _, ev := range evs {
		if ev.LockID != l.id.String() {
			continue
		}
		if ev.Type != operator.EventAuditEntry || ev.GatewayID != "dock-1" {
			t.Errorf("event %+v: want audit_entry from dock-1 (nothing was overwritten)", ev)
			continue
		}
		if prev, seen := first[ev.Seq]; seen {
			repeats++
			if !bytes.Equal(prev.Entry, ev.Entry) {
				t.Errorf("entry %d repeated with other bytes", ev.Seq)
			}
			continue
		}
		if ev.Seq != next {
			t.Fatalf("entry %d received when %d was due: out of order or lost", ev.Seq, next)
		}
		first[ev.Seq] = ev
		trail = append(trail, ev)
		next++
	}
	prev := hex.EncodeToString(audit.Genesis(l.id[:]))
	for _, ev := range trail {
		p, err := l.audit.Page(ev.Seq, 1)
		if err != nil || len(p.Entries) != 1 {
			t.Fatalf("lock's entry %d: %v", ev.Seq, err)
		}
		want, _ := p.Entries[0].Encode()
		if !bytes.Equal(ev.Entry, want) {
			t.Errorf("entry %d on the wire differs from the lock's", ev.Seq)
		}
		if ev.PrevHash != prev {
			t.Errorf("entry %d: prev_hash %s, want %s", ev.Seq, ev.PrevHash, prev)
		}
		prev = ev.Hash
	}
	return trail, repeats
}

// hasCommand reports whether trail holds a command_ok entry for id.
func hasCommand(trail []operator.AuditMessage, id [16]byte) bool {
	for _, ev := range trail {
		if ev.Event == "command_ok" && ev.CommandID == hex.EncodeToString(id[:]) {
			return true
		}
	}
	return false
}

// TestAuditTrailEndToEnd: with real mosquitto, a real dbus-daemon and the
// BlueZ emulator hosting reference locks with audit logs, the commands an
// operator sends run, and then the lock's audit entries, theirs included,
// appear on the events topic in order, chained, each the lock's own
// bytes. Entries read while the broker is down wait in the database
// across a restart of the gateway and are published after it: none lost,
// none out of order, repeats only of identical entries.
func TestAuditTrailEndToEnd(t *testing.T) {
	d := newDock(t, 2, emulator.Options{}, withAudit)
	// Scheduled reads every second (the configuration's floor is 10s).
	d.cfg.Audit.Interval = config.Duration(time.Second)
	r := d.run()
	oc := d.client
	oc.until("retained status online", func() bool {
		return len(oc.status) > 0 && bytes.Contains([]byte(oc.status[len(oc.status)-1]), []byte(`"online"`))
	})

	b1, s1 := d.sign(0, command.OpUnlock, command.Args{})
	oc.publish(s1)
	b2, s2 := d.sign(0, command.OpStatus, command.Args{})
	oc.publish(s2)
	oc.until("two results", func() bool { return len(oc.resultsFor(b1.CommandID)) == 1 && len(oc.resultsFor(b2.CommandID)) == 1 })
	oc.until("the commands' audit entries", func() bool {
		trail, _ := d.auditTrail(t, 0, oc.events)
		return hasCommand(trail, b1.CommandID) && hasCommand(trail, b2.CommandID)
	})
	// Lock 1 had no command: its log is read on the schedule.
	oc.until("lock 1's entries, read on the schedule", func() bool {
		trail, _ := d.auditTrail(t, 1, oc.events)
		return len(trail) > 2
	})

	// The broker goes away; the scheduled reads go on and queue entries.
	d.broker.Stop()
	oc.mu.Lock()
	before, _ := d.auditTrail(t, 0, oc.events)
	oc.mu.Unlock()
	deadline := time.Now().Add(90 * time.Second)
	for metricOf(t, r.metrics, "gatewayd_audit_pending") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no audit entries pending with the broker down")
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.stop(t)
	d.broker.Restart(t)
	d.run()

	// A command after the restart; its entry comes after all the others.
	b3, s3 := d.sign(0, command.OpLock, command.Args{})
	oc.publish(s3)
	oc.until("the third result", func() bool { return len(oc.resultsFor(b3.CommandID)) == 1 })
	oc.until("the third command's audit entry", func() bool {
		trail, _ := d.auditTrail(t, 0, oc.events)
		return hasCommand(trail, b3.CommandID)
	})
	oc.mu.Lock()
	trail, repeats := d.auditTrail(t, 0, oc.events)
	trail1, repeats1 := d.auditTrail(t, 1, oc.events)
	oc.mu.Unlock()
	if len(trail) <= len(before)+1 {
		t.Errorf("lock 0: %d entries before the outage, %d after: the entries read meanwhile are missing", len(before), len(trail))
	}
	t.Logf("lock 0: %d entries in order (%d repeated on the wire), lock 1: %d (%d repeated)", len(trail), repeats, len(trail1), repeats1)
}

// metricOf scrapes the daemon's /metrics at addr and returns the value of
// the first sample of name (0 if absent).
func metricOf(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	return 0
}

// TestAuditSurvivesCrash: the audit trail's promise under SIGKILL: while
// commands run and their locks' logs are read, the daemon is killed at
// random moments and the broker goes away for a while; in the end every
// lock's entries, each command's among them, are on the events topic
// from entry 0 in order, none lost, and any repeat identical to its
// first copy (a crash between a PUBACK and its removal: the contract's
// at least once).
func TestAuditSurvivesCrash(t *testing.T) {
	const nLocks, perLock = 2, 6
	d := newDock(t, nLocks, emulator.Options{ExchangeLatency: 20 * time.Millisecond}, withAudit)
	oc := d.client
	c := d.spawn()
	oc.until("the gateway's first session", func() bool { return len(oc.status) > 0 })
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	var ids [nLocks][][16]byte
	for k := range perLock {
		for i := range nLocks {
			op := command.OpUnlock
			if k%2 == 1 {
				op = command.OpLock
			}
			b, s := d.sign(i, op, command.Args{})
			oc.publish(s)
			ids[i] = append(ids[i], b.CommandID)
		}
		if k%2 == 1 {
			time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
			c.kill()
			c = d.spawn()
		}
	}
	// Entries read while the broker is down wait in the database; the
	// daemon is killed with them there.
	time.Sleep(300 * time.Millisecond)
	d.broker.Stop()
	time.Sleep(time.Duration(300+rng.IntN(300)) * time.Millisecond)
	c.kill()
	d.broker.Restart(t)
	c = d.spawn()
	// One more command per lock, so each lock's log is read once more
	// after the last crash.
	for i := range nLocks {
		b, s := d.sign(i, command.OpStatus, command.Args{})
		oc.publish(s)
		ids[i] = append(ids[i], b.CommandID)
	}
	oc.until("every command's audit entry", func() bool {
		for i := range nLocks {
			trail, _ := d.auditTrail(t, i, oc.events)
			for _, id := range ids[i] {
				if !hasCommand(trail, id) {
					return false
				}
			}
		}
		return true
	})
	oc.mu.Lock()
	for i := range nLocks {
		trail, repeats := d.auditTrail(t, i, oc.events)
		t.Logf("lock %d: %d entries in order from 0, %d repeated on the wire", i, len(trail), repeats)
	}
	oc.mu.Unlock()
	c.kill()
	if err := bonds.CheckFile(t.Context(), d.cfg.Database.Path, bonds.Options{}); err != nil {
		t.Errorf("database after the crashes: %v", err)
	}
}
