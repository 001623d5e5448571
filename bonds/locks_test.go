package bonds

import (
	"errors"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestLockRecords: put, get, list in ID order, bond state with bonded_at,
// clock offset, counters that only go up, and delete cascading to users
// and the audit cursor.
func TestLockRecords(t *testing.T) {
	clk := newClock()
	db, _ := openTest(t, Options{Now: clk.Now})
	for _, n := range []uint64{3, 1, 2} {
		if err := db.PutLock(bg, Lock{ID: lid(n), Credential: []byte("cwt"), Address: "c0:00:00:00:00:0" + string(rune('0'+n))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.PutLock(bg, Lock{ID: lid(4), Bond: BondBonded}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bonded without an address = %v, want ErrInvalid", err)
	}
	if err := db.PutLock(bg, Lock{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero ID = %v, want ErrInvalid", err)
	}
	ls, err := db.Locks(bg)
	if err != nil || len(ls) != 3 || ls[0].ID != lid(1) || ls[2].ID != lid(3) || ls[0].Bond != BondNone {
		t.Fatalf("Locks = %+v, %v", ls, err)
	}
	clk.Add(time.Minute)
	l, err := db.SetBond(bg, lid(1), BondBonded, "")
	if err != nil || l.Bond != BondBonded || !l.BondedAt.Equal(clk.Now()) || !l.CreatedAt.Equal(clk.Now().Add(-time.Minute)) {
		t.Errorf("SetBond bonded = %+v, %v", l, err)
	}
	if l, err = db.SetBond(bg, lid(1), BondNone, ""); err != nil || !l.BondedAt.IsZero() {
		t.Errorf("SetBond none = %+v, %v", l, err)
	}
	if _, err := db.SetBond(bg, lid(1), "married", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("bogus bond state = %v", err)
	}
	if l, err = db.SetClockOffset(bg, lid(1), -1500*time.Millisecond); err != nil || l.ClockOffset != -1500*time.Millisecond {
		t.Errorf("SetClockOffset = %+v, %v", l, err)
	}
	for _, c := range []struct{ n, want uint64 }{{5, 5}, {3, 5}, {9, 9}} {
		if got, err := db.RaiseCounter(bg, lid(1), "a1b2", c.n); err != nil || got != c.want {
			t.Errorf("RaiseCounter(%d) = %d, %v; want %d", c.n, got, err, c.want)
		}
	}
	if _, err := db.RaiseCounter(bg, lid(9), "a1b2", 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("RaiseCounter on an unknown lock = %v", err)
	}
	if _, err := db.SetDesiredUser(bg, lid(2), "rider-1", 3, Present, cid(1)); err != nil {
		t.Fatal(err)
	}
	if err := db.SetAuditCursor(bg, lid(2), AuditCursor{Seq: 7, Head: []byte{1, 2}}); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteLock(bg, lid(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Users(bg, lid(2)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Users of a deleted lock = %v", err)
	}
	if _, err := db.AuditCursor(bg, lid(2)); !errors.Is(err, ErrNotFound) {
		t.Errorf("AuditCursor of a deleted lock = %v", err)
	}
	db = reopen(t, db, Options{Now: clk.Now})
	l, err = db.Lock(bg, lid(1))
	if err != nil || l.Counters["a1b2"] != 9 || l.ClockOffset != -1500*time.Millisecond || string(l.Credential) != "cwt" {
		t.Errorf("Lock after reopen = %+v, %v", l, err)
	}
}

// TestUpdateSeenCoalesces: a thousand advertisements cost no commit; the
// values show at once, one flush writes them all, and Close writes the
// rest.
func TestUpdateSeenCoalesces(t *testing.T) {
	clk := newClock()
	db, _ := openTest(t, Options{Now: clk.Now})
	for n := uint64(1); n <= 2; n++ {
		if err := db.PutLock(bg, Lock{ID: lid(n)}); err != nil {
			t.Fatal(err)
		}
	}
	before := db.Stats().Commits
	seen := clk.Now()
	for i := range 1000 {
		seen = clk.Now().Add(time.Duration(i) * time.Second)
		if err := db.UpdateSeen(lid(1+uint64(i%2)), seen, -40-i%30, 80, "1.2.3"); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.UpdateSeen(lid(1), seen.Add(-time.Hour), -99, 5, "0.0.1"); err != nil { // older: ignored
		t.Fatal(err)
	}
	if err := db.UpdateSeen(lid(9), seen, -40, 80, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateSeen of an unknown lock = %v", err)
	}
	if st := db.Stats(); st.Commits != before || st.SeenPending != 2 {
		t.Errorf("after 1000 UpdateSeen: %+v (commits before %d)", st, before)
	}
	l, err := db.Lock(bg, lid(2))
	if err != nil || !l.LastSeen.Equal(seen) || l.Battery != 80 || l.Firmware != "1.2.3" {
		t.Errorf("Lock = %+v, %v; want last seen %v", l, err, seen)
	}
	if err := db.FlushSeen(bg); err != nil {
		t.Fatal(err)
	}
	if st := db.Stats(); st.Commits != before+1 || st.SeenPending != 0 {
		t.Errorf("after FlushSeen: %+v", st)
	}
	later := seen.Add(time.Minute)
	if err := db.UpdateSeen(lid(1), later, -50, -1, ""); err != nil { // battery and firmware unknown: kept
		t.Fatal(err)
	}
	db = reopen(t, db, Options{Now: clk.Now})
	l, err = db.Lock(bg, lid(1))
	if err != nil || !l.LastSeen.Equal(later) || l.RSSI != -50 || l.Battery != 80 || l.Firmware != "1.2.3" {
		t.Errorf("after Close and reopen: %+v, %v", l, err)
	}
}

// TestUsersDesiredAgainstConfirmed: desired state with its command and
// time, then what the lock confirmed.
func TestUsersDesiredAgainstConfirmed(t *testing.T) {
	clk := newClock()
	db, _ := openTest(t, Options{Now: clk.Now})
	if err := db.PutLock(bg, Lock{ID: lid(1)}); err != nil {
		t.Fatal(err)
	}
	u, err := db.SetDesiredUser(bg, lid(1), "rider-7", 2, Present, cid(5))
	if err != nil || u.Confirmed != Unknown || u.DesiredBy != cid(5) || !u.DesiredAt.Equal(clk.Now()) {
		t.Fatalf("SetDesiredUser = %+v, %v", u, err)
	}
	clk.Add(time.Second)
	if u, err = db.ConfirmUser(bg, lid(1), "rider-7", Present); err != nil || !u.ConfirmedAt.Equal(clk.Now()) || u.Desired != Present {
		t.Errorf("ConfirmUser = %+v, %v", u, err)
	}
	if _, err = db.SetDesiredUser(bg, lid(1), "rider-7", 2, Absent, cid(6)); err != nil {
		t.Fatal(err)
	}
	us, err := db.Users(bg, lid(1))
	if err != nil || len(us) != 1 || us[0].Desired != Absent || us[0].Confirmed != Present || us[0].DesiredBy != cid(6) {
		t.Errorf("Users = %+v, %v", us, err)
	}
	for _, c := range []struct {
		lock LockID
		user string
		p    Presence
		want error
	}{
		{lid(9), "x", Present, ErrNotFound},
		{lid(1), "", Present, ErrInvalid},
		{lid(1), "x", Unknown, ErrInvalid},
	} {
		if _, err := db.SetDesiredUser(bg, c.lock, c.user, 0, c.p, cid(1)); !errors.Is(err, c.want) {
			t.Errorf("SetDesiredUser(%s, %q, %s) = %v, want %v", c.lock, c.user, c.p, err, c.want)
		}
	}
	if _, err := db.ConfirmUser(bg, lid(1), "nobody", Present); !errors.Is(err, ErrNotFound) {
		t.Errorf("ConfirmUser of an unknown user = %v", err)
	}
}

// TestAuditCursor: one per lock, only for known locks.
func TestAuditCursor(t *testing.T) {
	db, _ := openTest(t, Options{})
	if err := db.PutLock(bg, Lock{ID: lid(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AuditCursor(bg, lid(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("AuditCursor before any = %v", err)
	}
	if err := db.SetAuditCursor(bg, lid(1), AuditCursor{Seq: 42, Head: []byte{0xab, 0xcd}}); err != nil {
		t.Fatal(err)
	}
	if c, err := db.AuditCursor(bg, lid(1)); err != nil || c.Seq != 42 || string(c.Head) != "\xab\xcd" {
		t.Errorf("AuditCursor = %+v, %v", c, err)
	}
	if err := db.SetAuditCursor(bg, lid(2), AuditCursor{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetAuditCursor of an unknown lock = %v", err)
	}
}

// TestIDText: IDs print and parse as hex, and reject anything else.
func TestIDText(t *testing.T) {
	openTest(t, Options{})
	id, err := ParseLockID(lid(1).String())
	if err != nil || id != lid(1) {
		t.Errorf("ParseLockID round trip = %v, %v", id, err)
	}
	c, err := ParseCommandID(cid(1).String())
	if err != nil || c != cid(1) {
		t.Errorf("ParseCommandID round trip = %v, %v", c, err)
	}
	for _, s := range []string{"", "zz", "4c4b00000000000", "4c4b0000000000011"} {
		if _, err := ParseLockID(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseLockID(%q) = %v", s, err)
		}
	}
}

// TestSeenFlushedInBackground: without FlushSeen or Close, the background
// loop writes coalesced values every SeenFlushInterval.
func TestSeenFlushedInBackground(t *testing.T) {
	db, _ := openTest(t, Options{SeenFlushInterval: time.Millisecond})
	if err := db.PutLock(bg, Lock{ID: lid(1)}); err != nil {
		t.Fatal(err)
	}
	seen := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := db.UpdateSeen(lid(1), seen, -70, 50, "2.0.0"); err != nil {
		t.Fatal(err)
	}
	for db.Stats().SeenFlushes == 0 {
		time.Sleep(time.Millisecond)
	}
	var l Lock
	if err := db.view(func(tx *bolt.Tx) (err error) { l, err = getLock(tx, lid(1)); return }); err != nil || !l.LastSeen.Equal(seen) {
		t.Errorf("record on disk = %+v, %v; want last seen %v", l, err, seen)
	}
}
