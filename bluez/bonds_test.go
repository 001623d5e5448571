package bluez_test

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
)

// The adapter is what the bond reconciler talks to.
var _ bonds.Paired = (*bluez.Adapter)(nil)

// TestReconcileBondsWithBlueZ runs the database's bond reconciliation
// against the emulated bluetoothd through the client: a lock the database
// bonded keeps its bond; a bond BlueZ holds for an address the database
// does not know (a stranger) is removed from BlueZ; a lock the database
// counts as bonded but BlueZ lost is marked lost; and a bonded lock not
// seen for the eviction age loses its bond on both sides.
func TestReconcileBondsWithBlueZ(t *testing.T) {
	const ours, stranger, forgotten = "C0:00:00:00:06:01", "C0:00:00:00:06:02", "C0:00:00:00:06:03"
	w := newPairWorld(t, ours, stranger, forgotten)
	agent := newAgent(t, w.ctx, w.conn)
	bond := func(addr string) {
		t.Helper()
		dev, lc := w.dial(addr)
		r, err := lc.AllowBond(w.ctx, 30*time.Second)
		if err != nil || r.Status != command.StatusOK {
			t.Fatalf("allow-bond %s: %v %v", addr, r, err)
		}
		win, err := r.BondWindow()
		if err != nil {
			t.Fatal(err)
		}
		if err := bluez.Pair(w.ctx, w.conn, agent, w.emu.DevicePath(addr), win.Passkey); err != nil {
			t.Fatalf("pair %s: %v", addr, err)
		}
		_ = dev.Close()
	}
	bond(ours)
	bond(stranger)

	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	db, err := bonds.Open(filepath.Join(t.TempDir(), "gatewayd.db"), bonds.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	put := func(addr string, state bonds.BondState, seen time.Time) bonds.LockID {
		t.Helper()
		id := bonds.LockID(w.locks[addr].ID())
		if err := db.PutLock(w.ctx, bonds.Lock{ID: id, Address: addr, Bond: state, BondedAt: now.Add(-time.Hour), LastSeen: seen}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	oursID := put(ours, bonds.BondBonded, now)
	forgottenID := put(forgotten, bonds.BondBonded, now)

	paired, err := w.ad.PairedDevices(w.ctx)
	if err != nil || !slices.Equal(paired, []string{ours, stranger}) {
		t.Fatalf("BlueZ's bonds before: %v %v", paired, err)
	}
	rep, err := db.Reconcile(w.ctx, w.ad, bonds.Policy{})
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("reconcile: %+v %v", rep, err)
	}
	if !slices.Equal(rep.Removed, []string{stranger}) || !slices.Equal(rep.Lost, []bonds.LockID{forgottenID}) {
		t.Fatalf("reconcile report %+v", rep)
	}
	if paired, _ := w.ad.PairedDevices(w.ctx); !slices.Equal(paired, []string{ours}) {
		t.Fatalf("BlueZ's bonds after: %v", paired)
	}
	if l, err := db.Lock(w.ctx, forgottenID); err != nil || l.Bond != bonds.BondLost {
		t.Fatalf("forgotten lock: %+v %v", l, err)
	}
	if l, err := db.Lock(w.ctx, oursID); err != nil || l.Bond != bonds.BondBonded {
		t.Fatalf("our lock: %+v %v", l, err)
	}

	// Ten days later neither lock was seen again: both are evicted after
	// 7 (the lost one had no bond left in BlueZ to remove).
	now = now.Add(10 * 24 * time.Hour)
	rep, err = db.Evict(w.ctx, w.ad, 7*24*time.Hour)
	if err != nil || len(rep.Errors) > 0 || !slices.Equal(rep.Removed, []string{ours}) ||
		!slices.Equal(rep.Evicted, []bonds.LockID{oursID, forgottenID}) {
		t.Fatalf("evict: %+v %v", rep, err)
	}
	if paired, _ := w.ad.PairedDevices(w.ctx); len(paired) != 0 {
		t.Fatalf("BlueZ's bonds after eviction: %v", paired)
	}
	if l, err := db.Lock(w.ctx, oursID); err != nil || l.Bond != bonds.BondNone {
		t.Fatalf("evicted lock: %+v %v", l, err)
	}
	if err := db.Check(w.ctx); err != nil {
		t.Fatal(err)
	}
}
