package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
)

// addImpostor hosts, at addr, a reference lock holding a genuine
// credential and key of lock credOf (as if read out of that lock's flash
// through its debug port) that advertises lock ID as.
func (d *dock) addImpostor(as, credOf bonds.LockID, addr string) *locktest.Actuator {
	d.t.Helper()
	lp := d.fleet.Lock(d.t, binary.BigEndian.Uint64(credOf[:]))
	act := &locktest.Actuator{}
	l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: d.fleet.Roots, Store: locktest.NewStore(),
		Actuator: act, RTC: d.now})
	if err != nil {
		d.t.Fatal(err)
	}
	if err := d.emu.AddLock(l, addr, emulator.LockOptions{AdvertisedID: as}); err != nil {
		d.t.Fatal(err)
	}
	return act
}

// scrape returns the daemon's metrics.
func (r *running) scrape(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAttackImpostorLock (issue 11, items 1 and 5): devices holding lock
// B's genuine credential advertise lock A's ID (beside the real A, and
// first in the adapter's order) and lock C's ID (C is not in range).
// The unlock for A reaches the real A, never the impostor; the unlock for
// C fails with a reason naming the impostor, never succeeded; the
// database records A bonded at the real lock's address and no record for
// C; gatewayd_link_impostors_total counts both; the log names each
// impostor's address with both lock IDs.
func TestAttackImpostorLock(t *testing.T) {
	d := newDock(t, 2, emulator.Options{})
	lockA, lockB := d.locks[0], d.locks[1]
	lockC := &refLock{id: bonds.LockID{0x4c, 0x4b, 0, 0, 0, 0, 0, 0x0c}}
	d.locks = append(d.locks, lockC)
	const impAddrA, impAddrC = "A0:00:00:00:00:01", "A0:00:00:00:00:02"
	impA := d.addImpostor(lockA.id, lockB.id, impAddrA)
	impC := d.addImpostor(lockC.id, lockB.id, impAddrC)

	r := d.run()
	oc := d.client
	// The daemon's adapter hears the 4 devices (the locks topic has one
	// entry per lock ID: 3) before the commands go out.
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(grepLines(r.scrape(t), "gatewayd_bluez_locks_present{"), "} 4") {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon does not hear the 4 devices:\n%s", grepLines(r.scrape(t), "gatewayd_bluez_locks_present"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	bA, sA := d.sign(0, command.OpUnlock, command.Args{})
	oc.publish(sA)
	bC, sC := d.sign(2, command.OpUnlock, command.Args{})
	oc.publish(sC)
	oc.until("both results", func() bool { return len(oc.resultsFor(bA.CommandID)) == 1 && len(oc.resultsFor(bC.CommandID)) == 1 })
	oc.mu.Lock()
	uA, uC := oc.resultsFor(bA.CommandID)[0], oc.resultsFor(bC.CommandID)[0]
	oc.mu.Unlock()

	if uA.State != bonds.StateSucceeded || uA.Status != "ok" || lockA.act.Moves() != 1 || impA.Moves() != 0 {
		t.Errorf("unlock of A: %+v; moves: real A %d, impostor %d", uA, lockA.act.Moves(), impA.Moves())
	}
	if uC.State == bonds.StateSucceeded || uC.State != bonds.StateFailed || !strings.Contains(uC.Detail, "impostor") ||
		!strings.Contains(uC.Detail, lockB.id.String()) || !strings.Contains(uC.Detail, impAddrC) || impC.Moves() != 0 {
		t.Errorf("unlock of C (only an impostor in range): %+v; impostor moves %d", uC, impC.Moves())
	}
	if lockB.act.Moves() != 0 {
		t.Errorf("lock B moved")
	}

	body := r.scrape(t)
	if !strings.Contains(body, "\ngatewayd_link_impostors_total 2\n") {
		t.Errorf("metrics lack gatewayd_link_impostors_total 2:\n%s", grepLines(body, "gatewayd_link_"))
	}
	logs := r.logs.String()
	for _, imp := range []struct {
		addr string
		as   bonds.LockID
	}{{impAddrA, lockA.id}, {impAddrC, lockC.id}} {
		found := false
		for _, ln := range strings.Split(logs, "\n") {
			if strings.Contains(ln, "impostor refused") && strings.Contains(ln, "addr="+imp.addr) &&
				strings.Contains(ln, "lock="+imp.as.String()) && strings.Contains(ln, "presented_lock="+lockB.id.String()) {
				found = true
			}
		}
		if !found {
			t.Errorf("no log line names impostor %s posing as %s with lock B's credential:\n%s", imp.addr, imp.as, grepLines(logs, "impostor"))
		}
	}
	r.stop(t)

	db, err := bonds.Open(d.cfg.Database.Path, bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	la, err := db.Lock(t.Context(), lockA.id)
	if err != nil || la.Bond != bonds.BondBonded || la.Address != lockA.addr {
		t.Errorf("lock A record %+v %v: want bonded at the real lock's %s", la, err, lockA.addr)
	}
	if lc, err := db.Lock(t.Context(), lockC.id); !errors.Is(err, bonds.ErrNotFound) {
		t.Errorf("lock C, never verified, has a record: %+v %v", lc, err)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, ln := range strings.Split(s, "\n") {
		if strings.Contains(ln, sub) {
			out = append(out, ln)
		}
	}
	return strings.Join(out, "\n")
}

// TestAttackAdvertisementFlood (issue 11, item 4): 500 random lock IDs
// on the radio leave no record in the database and cost no commit: an
// advertisement only updates the last-seen values of locks that proved
// their identity. Records an older version left for advertised IDs
// expire (not seen for a day) and are capped (the most recently seen
// kept); records of verified locks, bonded locks and locks with users
// stay.
func TestAttackAdvertisementFlood(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	db, err := bonds.Open(filepath.Join(t.TempDir(), "gatewayd.db"), bonds.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	verified := bonds.LockID{0x4c, 0x4b, 0, 0, 0, 0, 0, 1}
	if err := db.PutLock(ctx, bonds.Lock{ID: verified, Address: "C0:00:00:00:00:01", Credential: []byte{0x84}}); err != nil {
		t.Fatal(err)
	}
	before := db.Stats().Commits

	events := make(chan bluez.Event, 501)
	for i := range 500 {
		var id [8]byte
		binary.BigEndian.PutUint64(id[:], 0x9000000000000000+uint64(i)*7919)
		events <- bluez.Event{Kind: bluez.Appeared, Lock: bluez.LockInfo{Address: fmt.Sprintf("D0:00:00:00:%02X:%02X", i>>8, i&0xff),
			LockID: id, RSSI: -70, Battery: 90, LastSeen: now}}
	}
	events <- bluez.Event{Kind: bluez.Updated, Lock: bluez.LockInfo{Address: "C0:00:00:00:00:01", LockID: verified, RSSI: -50, LastSeen: now}}
	close(events)
	woken := 0
	for ev := range events {
		recordSighting(ctx, db, ev, func(bonds.LockID) { woken++ }, nil)
	}
	locks, err := db.Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != 1 || locks[0].ID != verified || locks[0].RSSI != -50 {
		t.Errorf("%d records after 500 advertised IDs (want only the verified lock, its RSSI updated): %+v", len(locks), locks[:min(3, len(locks))])
	}
	if c := db.Stats().Commits; c != before {
		t.Errorf("%d commits (fsyncs) for advertisements", c-before)
	}
	if woken != 501 {
		t.Errorf("scheduler woken %d times for 501 advertisements (every one wakes it)", woken)
	}

	// Records an older version wrote for every advertised ID: 100 seen
	// now, 100 seen two days ago; and a bonded lock, a lock with a user,
	// both without a credential, seen long ago.
	for i := range 200 {
		id := bonds.LockID{0x77, byte(i)}
		if err := db.PutLock(ctx, bonds.Lock{ID: id, Address: "D0:00:00:00:00:01"}); err != nil {
			t.Fatal(err)
		}
		seen := now
		if i >= 100 {
			seen = now.Add(-48 * time.Hour)
		}
		if err := db.UpdateSeen(id, seen.Add(time.Duration(i)*time.Second), -80, 50, ""); err != nil {
			t.Fatal(err)
		}
	}
	bonded, withUser := bonds.LockID{0x55, 1}, bonds.LockID{0x55, 2}
	must(t, db.PutLock(ctx, bonds.Lock{ID: bonded, Address: "C0:00:00:00:00:02", Bond: bonds.BondBonded}))
	must(t, db.PutLock(ctx, bonds.Lock{ID: withUser}))
	if _, err := db.SetDesiredUser(ctx, withUser, "rider-1", -1, bonds.Present, bonds.CommandID{1}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	n, err := pruneUnverified(ctx, db, now, unverifiedMaxAge, unverifiedMax)
	if err != nil {
		t.Fatal(err)
	}
	locks, err = db.Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[bonds.LockID]bool{}
	legacy := 0
	for _, l := range locks {
		kept[l.ID] = true
		if l.ID[0] == 0x77 {
			legacy++
			if l.ID[1] >= 100 {
				t.Errorf("a record not seen for two days was kept: %s", l.ID)
			}
		}
	}
	if n != 200-unverifiedMax || legacy != unverifiedMax || !kept[verified] || !kept[bonded] || !kept[withUser] {
		t.Errorf("pruned %d; kept %d unverified (max %d); verified %v, bonded %v, with a user %v",
			n, legacy, unverifiedMax, kept[verified], kept[bonded], kept[withUser])
	}
	// The most recently seen are the ones kept.
	if !kept[bonds.LockID{0x77, 99}] || kept[bonds.LockID{0x77, 0}] {
		t.Errorf("kept the wrong unverified records")
	}
	// Their unproven addresses are gone: reconciliation adopts no bond
	// with them. The verified and bonded locks keep theirs.
	for _, l := range locks {
		switch {
		case l.ID[0] == 0x77 && l.Address != "":
			t.Errorf("unverified %s keeps the advertised address %s", l.ID, l.Address)
		case (l.ID == verified || l.ID == bonded) && l.Address == "":
			t.Errorf("%s lost its address", l.ID)
		}
	}
	rep, err := db.Reconcile(ctx, &pairedFake{addrs: []string{"D0:00:00:00:00:01"}}, bonds.Policy{})
	if err != nil || len(rep.Adopted) != 0 || len(rep.Removed) != 1 {
		t.Errorf("reconcile with a BlueZ bond at the advertised address: %+v %v", rep, err)
	}
}

// pairedFake is BlueZ's paired devices for bonds.Reconcile.
type pairedFake struct{ addrs, removed []string }

func (p *pairedFake) PairedDevices(context.Context) ([]string, error) { return p.addrs, nil }
func (p *pairedFake) RemoveBond(_ context.Context, addr string) error {
	p.removed = append(p.removed, addr)
	return nil
}

// TestAttackImpostorAtRecordedAddress: the database holds lock A bonded at
// an impostor's address (written by an older version, which recorded the
// advertiser's address and bonded after an unbound handshake). When that
// device fails to prove A's identity, the address and the bond are
// forgotten, so Dial no longer prefers it, the reconciler removes BlueZ's
// bond with it (no lock has that address any more), and the real lock's
// proof records its own address. A refusal at another address changes
// nothing.
func TestAttackImpostorAtRecordedAddress(t *testing.T) {
	ctx := t.Context()
	db, err := bonds.Open(filepath.Join(t.TempDir(), "gatewayd.db"), bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lockA, lockB := bonds.LockID{0x4c, 0x4b, 0, 0, 0, 0, 0, 1}, bonds.LockID{0x4c, 0x4b, 0, 0, 0, 0, 0, 2}
	const impostor, realAddr = "A0:00:00:00:00:01", "C0:00:00:00:00:01"
	must(t, db.PutLock(ctx, bonds.Lock{ID: lockA, Address: impostor, Bond: bonds.BondBonded, Credential: []byte{0x84}}))
	g := newBondGate(ctx, db, time.Now, slog.New(slog.DiscardHandler))
	addr := verifiedAddress(ctx, db)
	if a := addr(lockA); a != impostor {
		t.Fatalf("bonded address %q", a)
	}

	g.onRefused(lockA, "c0:00:00:00:00:09", lockB.String()) // another device: nothing
	if l, _ := db.Lock(ctx, lockA); l.Bond != bonds.BondBonded || l.Address != impostor {
		t.Errorf("a refusal at another address changed the record: %+v", l)
	}
	g.onRefused(lockA, strings.ToLower(impostor), lockB.String())
	l, err := db.Lock(ctx, lockA)
	if err != nil || l.Bond != bonds.BondNone || l.Address != "" || !l.BondedAt.IsZero() {
		t.Errorf("after the refusal at the recorded address: %+v %v", l, err)
	}
	if a := addr(lockA); a != "" {
		t.Errorf("Dial still prefers %q", a)
	}
	p := &pairedFake{addrs: []string{impostor}}
	rep, err := db.Reconcile(ctx, p, bonds.Policy{})
	if err != nil || len(p.removed) != 1 || p.removed[0] != impostor || len(rep.Adopted) != 0 {
		t.Errorf("reconcile: %+v %v, removed %v", rep, err, p.removed)
	}

	g.onVerified(lockA, realAddr, []byte{0x84})
	if l, _ := db.Lock(ctx, lockA); l.Address != realAddr || l.Bond != bonds.BondNone {
		t.Errorf("after the real lock's proof: %+v", l)
	}
}
