package daemon

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/fleet/operator"
)

// TestAttackImpostorPoisonsPresence (issue 11): a device holding lock B's
// genuine credential advertises lock A's ID beside the real A, louder
// and with a flat battery. Once A has proved its identity (a status
// command), the retained locks topic carries A's entry from the real
// lock's address, verified, with its battery, never the impostor's as
// verified. When A leaves range the impostor's entry is published marked
// unverified, and its advertisements never reach A's record: the
// database keeps the real lock's battery.
func TestAttackImpostorPoisonsPresence(t *testing.T) {
	d := newDock(t, 2, emulator.Options{})
	lockA, lockB := d.locks[0], d.locks[1]
	const impAddr, impBattery = "A0:00:00:00:00:01", 5
	lp := d.fleet.Lock(t, binary.BigEndian.Uint64(lockB.id[:]))
	imp, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: d.fleet.Roots, Store: locktest.NewStore(),
		Actuator: &locktest.Actuator{}, RTC: d.now})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.emu.AddLock(imp, impAddr, emulator.LockOptions{AdvertisedID: lockA.id, RSSI: -30,
		Battery: func() uint8 { return impBattery }}); err != nil {
		t.Fatal(err)
	}

	r := d.run()
	oc := d.client
	oc.until("retained status online", func() bool {
		return len(oc.status) > 0 && strings.Contains(oc.status[len(oc.status)-1], `"online"`)
	})
	b, s := d.sign(0, command.OpStatus, command.Args{})
	oc.publish(s)
	oc.until("the status result", func() bool { return len(oc.resultsFor(b.CommandID)) == 1 })
	oc.mu.Lock()
	res := oc.resultsFor(b.CommandID)[0]
	oc.mu.Unlock()
	if res.State != bonds.StateSucceeded {
		t.Fatalf("status of A: %+v", res)
	}

	entryA := func(m operator.LocksMessage) (operator.SeenLock, bool) {
		for _, l := range m.Locks {
			if l.LockID == lockA.id {
				return l, true
			}
		}
		return operator.SeenLock{}, false
	}
	latestA := func() (operator.SeenLock, bool) {
		if len(oc.locks) == 0 {
			return operator.SeenLock{}, false
		}
		return entryA(oc.locks[len(oc.locks)-1])
	}
	oc.until("A's entry from the real lock, verified", func() bool {
		e, ok := latestA()
		return ok && e.Verified && e.Address == lockA.addr && e.Battery == 100
	})

	// A leaves; the impostor alone advertises A's ID, and keeps going.
	must(t, d.emu.LeaveRange(lockA.addr))
	oc.until("A's entry from the impostor, unverified", func() bool {
		e, ok := latestA()
		return ok && !e.Verified && e.Address == impAddr && e.Battery == impBattery
	})
	// Advertisements keep coming for a few seconds more (RadioInterval
	// 50 ms): none may reach A's record.
	time.Sleep(2 * time.Second)
	oc.mu.Lock()
	for i, m := range oc.locks {
		if e, ok := entryA(m); ok && e.Verified && e.Address != lockA.addr {
			t.Errorf("snapshot %d shows %s verified for lock A: %+v", i, e.Address, e)
		}
	}
	oc.mu.Unlock()
	r.stop(t)

	db, err := bonds.Open(d.cfg.Database.Path, bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	la, err := db.Lock(t.Context(), lockA.id)
	if err != nil || la.Address != lockA.addr || la.Battery != 100 {
		t.Errorf("lock A's record: address %s, battery %d, %v: want the real lock's address %s and battery 100, not the impostor's %d",
			la.Address, la.Battery, err, lockA.addr, impBattery)
	}
}
