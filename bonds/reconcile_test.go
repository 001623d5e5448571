package bonds

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakePaired is BlueZ's paired devices.
type fakePaired struct {
	mu      sync.Mutex
	addrs   []string
	fail    map[string]bool // RemoveBond fails for these
	removed []string
	listErr error
}

func (f *fakePaired) PairedDevices(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.addrs), f.listErr
}

func (f *fakePaired) RemoveBond(_ context.Context, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[addr] {
		return errors.New("org.bluez.Error.Failed")
	}
	f.removed = append(f.removed, addr)
	f.addrs = slices.DeleteFunc(f.addrs, func(a string) bool { return a == addr })
	return nil
}

func addr(n uint64) string { return "C0:00:00:00:00:0" + string(rune('0'+n)) }

// TestReconcile: bonded in the database but not in BlueZ → lost (kept);
// in BlueZ for a known lock → adopted; in BlueZ for nobody → removed,
// unless the policy keeps it; a failed removal is reported.
func TestReconcile(t *testing.T) {
	db, _ := openTest(t, Options{})
	put := func(n uint64, b BondState) {
		t.Helper()
		if err := db.PutLock(bg, Lock{ID: lid(n), Address: addr(n), Bond: b}); err != nil {
			t.Fatal(err)
		}
	}
	put(1, BondBonded) // BlueZ lost it
	put(2, BondBonded) // fine
	put(3, BondNone)   // BlueZ has it
	put(4, BondLost)   // still lost
	put(5, BondNone)
	if _, err := db.SetBond(bg, lid(5), BondBonding, ""); err != nil { // pairing under way
		t.Fatal(err)
	}
	f := &fakePaired{addrs: []string{"c0:00:00:00:00:02", addr(3), "AA:00:00:00:00:01", "AA:00:00:00:00:02", "AA:00:00:00:00:03"},
		fail: map[string]bool{"AA:00:00:00:00:03": true}}
	rep, err := db.Reconcile(bg, f, Policy{KeepUnknown: func(a string) bool { return a == "AA:00:00:00:00:02" }})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Lost, []LockID{lid(1)}) || !slices.Equal(rep.Adopted, []LockID{lid(3)}) ||
		!slices.Equal(rep.Removed, []string{"AA:00:00:00:00:01"}) || !slices.Equal(rep.Kept, []string{"AA:00:00:00:00:02"}) ||
		len(rep.Errors) != 1 {
		t.Errorf("report = %+v", rep)
	}
	want := map[uint64]BondState{1: BondLost, 2: BondBonded, 3: BondBonded, 4: BondLost, 5: BondBonding}
	for n, b := range want {
		if l, err := db.Lock(bg, lid(n)); err != nil || l.Bond != b {
			t.Errorf("lock %d: %s, %v; want %s", n, l.Bond, err, b)
		}
	}
	f.listErr = errors.New("bluetoothd gone")
	if _, err := db.Reconcile(bg, f, Policy{}); err == nil {
		t.Error("Reconcile with BlueZ unreachable succeeded")
	}
}

// TestEvict: bonds of locks not seen for longer than the age are removed
// from BlueZ and set to none; a failed removal leaves the lock bonded.
func TestEvict(t *testing.T) {
	clk := newClock()
	db, _ := openTest(t, Options{Now: clk.Now})
	for n := uint64(1); n <= 4; n++ {
		if err := db.PutLock(bg, Lock{ID: lid(n), Address: addr(n), Bond: BondBonded}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.SetBond(bg, lid(4), BondLost, ""); err != nil { // BlueZ has no bond to remove
		t.Fatal(err)
	}
	clk.Add(10 * 24 * time.Hour)
	if err := db.UpdateSeen(lid(2), clk.Now().Add(-time.Hour), -60, -1, ""); err != nil {
		t.Fatal(err)
	}
	f := &fakePaired{addrs: []string{addr(1), addr(2), addr(3)}, fail: map[string]bool{addr(3): true}}
	rep, err := db.Evict(bg, f, 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Evicted, []LockID{lid(1), lid(4)}) || !slices.Equal(f.removed, []string{addr(1)}) || len(rep.Errors) != 1 {
		t.Errorf("report = %+v, removed %v", rep, f.removed)
	}
	for n, b := range map[uint64]BondState{1: BondNone, 2: BondBonded, 3: BondBonded, 4: BondNone} {
		if l, _ := db.Lock(bg, lid(n)); l.Bond != b {
			t.Errorf("lock %d: %s, want %s", n, l.Bond, b)
		}
	}
	if _, err := db.Evict(bg, f, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("Evict(0) = %v", err)
	}
}

// TestReconcilerRunsAtStartAndStops: the first run happens at Start,
// Close waits for the goroutine, and a closed reconciler does not start.
func TestReconcilerRunsAtStartAndStops(t *testing.T) {
	db, _ := openTest(t, Options{})
	if err := db.PutLock(bg, Lock{ID: lid(1), Address: addr(1), Bond: BondBonded}); err != nil {
		t.Fatal(err)
	}
	runs := make(chan Report, 10)
	r := NewReconciler(db, &fakePaired{}, ReconcilerOptions{Interval: time.Hour, EvictAfter: time.Hour,
		OnRun: func(rep Report, err error) {
			if err != nil {
				t.Error(err)
			}
			runs <- rep
		}})
	if err := r.Start(bg); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(bg); !errors.Is(err, ErrClosed) {
		t.Errorf("second Start = %v", err)
	}
	rep := <-runs
	if !slices.Equal(rep.Lost, []LockID{lid(1)}) {
		t.Errorf("first run = %+v", rep)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(bg); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v", err)
	}
}

// TestReconcilerRunsPeriodically: after the first run, more follow every
// interval until Close.
func TestReconcilerRunsPeriodically(t *testing.T) {
	db, _ := openTest(t, Options{})
	runs := make(chan struct{}, 100)
	r := NewReconciler(db, &fakePaired{}, ReconcilerOptions{Interval: time.Millisecond,
		OnRun: func(Report, error) {
			select {
			case runs <- struct{}{}:
			default:
			}
		}})
	if err := r.Start(bg); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		<-runs
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestReconcilerPassAsTwoCalls: the Reconciler's single pass (reconcile
// with a policy and an age) changes the same locks and reports the same
// as Reconcile followed by Evict, on every combination of bond state,
// BlueZ bond and age, including a bond adopted and evicted in one run (it
// counts as bonded now, as SetBond makes it, so it is not old yet) and a
// bonded lock lost and evicted in one run.
func TestReconcilerPassAsTwoCalls(t *testing.T) {
	const age = 30 * 24 * time.Hour
	run := func(onePass bool) (Report, map[LockID]Lock, []string) {
		clk := newClock()
		db, _ := openTest(t, Options{Now: clk.Now})
		f := &fakePaired{addrs: []string{"AA:00:00:00:00:01"}}
		n := uint64(0)
		// Two generations of every combination of bond state, BlueZ bond
		// and last seen: the first made old by the clock, the second new.
		for range 2 {
			for _, b := range []BondState{BondNone, BondBonding, BondBonded, BondLost} {
				for _, inBlueZ := range []bool{false, true} {
					for _, seen := range []bool{false, true} {
						n++
						l := Lock{ID: lid(n), Address: fmt.Sprintf("C0:00:00:00:01:%02X", n), Bond: b}
						if b == BondBonded {
							l.BondedAt = clk.Now()
						}
						if err := db.PutLock(bg, l); err != nil {
							t.Fatal(err)
						}
						if seen {
							if err := db.UpdateSeen(l.ID, clk.Now(), -50, 0, ""); err != nil {
								t.Fatal(err)
							}
						}
						if inBlueZ {
							f.addrs = append(f.addrs, l.Address)
						}
					}
				}
			}
			clk.Add(age + time.Hour)
		}
		var rep Report
		var err error
		if onePass {
			rep, err = db.reconcile(bg, f, &Policy{}, age)
		} else {
			rep, err = db.Reconcile(bg, f, Policy{})
			if err == nil {
				var ev Report
				ev, err = db.Evict(bg, f, age)
				rep.Evicted, rep.Removed = ev.Evicted, append(rep.Removed, ev.Removed...)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		locks, err := db.Locks(bg)
		if err != nil {
			t.Fatal(err)
		}
		m := map[LockID]Lock{}
		for _, l := range locks {
			l.UpdatedAt = time.Time{}
			m[l.ID] = l
		}
		return rep, m, f.addrs
	}
	rep1, locks1, bluez1 := run(true)
	rep2, locks2, bluez2 := run(false)
	if !slices.Equal(rep1.Lost, rep2.Lost) || !slices.Equal(rep1.Adopted, rep2.Adopted) || !slices.Equal(rep1.Removed, rep2.Removed) ||
		!slices.Equal(rep1.Evicted, rep2.Evicted) || len(rep1.Errors)+len(rep2.Errors) != 0 {
		t.Errorf("one pass: %+v\ntwo calls: %+v", rep1, rep2)
	}
	if len(rep1.Lost) == 0 || len(rep1.Adopted) == 0 || len(rep1.Evicted) == 0 || len(rep1.Removed) == 0 {
		t.Errorf("the fixture exercises too little: %+v", rep1)
	}
	for id, l := range locks2 {
		if got := locks1[id]; got.Bond != l.Bond || !got.BondedAt.Equal(l.BondedAt) {
			t.Errorf("lock %s: one pass %s (bonded at %v), two calls %s (%v)", id, got.Bond, got.BondedAt, l.Bond, l.BondedAt)
		}
	}
	if !slices.Equal(bluez1, bluez2) {
		t.Errorf("BlueZ's bonds: one pass %v, two calls %v", bluez1, bluez2)
	}
}

// TestUnprovenLocks: exactly the records with no credential and bond
// none, each with whether it holds an address and when it was last seen
// (an UpdateSeen value not written yet counts), else created; the same
// as reading Locks whole.
func TestUnprovenLocks(t *testing.T) {
	clk := newClock()
	db, _ := openTest(t, Options{Now: clk.Now})
	put := func(n uint64, cred []byte, addr string, b BondState) {
		t.Helper()
		if err := db.PutLock(bg, Lock{ID: lid(n), Credential: cred, Address: addr, Bond: b}); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Minute)
	}
	put(1, nil, "", BondNone)                           // unproven, no address
	put(2, nil, "D0:00:00:00:00:02", BondNone)          // unproven, an advertisement's address
	put(3, []byte{0x84}, "C0:00:00:00:00:03", BondNone) // proved
	put(4, nil, "C0:00:00:00:00:04", BondLost)          // bonded once
	put(5, nil, "", BondNone)
	if err := db.UpdateSeen(lid(5), clk.Now().Add(time.Hour), -60, 0, ""); err != nil {
		t.Fatal(err)
	}
	got, err := db.UnprovenLocks(bg)
	if err != nil {
		t.Fatal(err)
	}
	locks, err := db.Locks(bg)
	if err != nil {
		t.Fatal(err)
	}
	var want []UnprovenLock
	for _, l := range locks {
		if len(l.Credential) == 0 && l.Bond == BondNone {
			seen := l.LastSeen
			if seen.IsZero() {
				seen = l.CreatedAt
			}
			want = append(want, UnprovenLock{ID: l.ID, HasAddress: l.Address != "", Seen: seen})
		}
	}
	if len(want) != 3 || !slices.EqualFunc(got, want, func(a, b UnprovenLock) bool {
		return a.ID == b.ID && a.HasAddress == b.HasAddress && a.Seen.Equal(b.Seen)
	}) {
		t.Errorf("UnprovenLocks = %+v, want %+v", got, want)
	}
}
