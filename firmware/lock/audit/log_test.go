package audit

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/lock/flash"
)

func TestAppendAndRead(t *testing.T) {
	l := openLog(t, flash.NewMem(), 0, lockA)
	if l.Next() != 0 || l.Oldest() != 0 || !bytes.Equal(l.Head(), Genesis(lockA)) {
		t.Fatalf("empty log: next %d oldest %d head %x", l.Next(), l.Oldest(), l.Head())
	}
	hs := appendN(t, l, 0, 40)
	c := NewCursor(lockA)
	all, missed := readAll(t, l, &c, 7)
	if len(all) != 40 || missed != 0 || c.Next != 40 || !bytes.Equal(c.Hash, hs[39]) {
		t.Fatalf("read %d entries, missed %d, cursor %d %x", len(all), missed, c.Next, c.Hash)
	}
	for i, e := range all {
		want := sample(i)
		if e.Seq != uint64(i) || e.Event != want.Event || e.Time != want.Time || !bytes.Equal(e.Actor, want.Actor) ||
			e.Op != want.Op || !bytes.Equal(e.CommandID, want.CommandID) || e.Status != want.Status {
			t.Fatalf("entry %d = %+v, want %+v", i, e, want)
		}
	}
	// Zero Time means the lock's clock.
	seq, err := l.Append(Entry{Event: EventBoot})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := l.Page(seq, 1)
	if p.Entries[0].Time != uint64(t0.Unix()) {
		t.Fatalf("time = %d", p.Entries[0].Time)
	}
}

func TestAppendBadEntry(t *testing.T) {
	l := openLog(t, flash.NewMem(), 0, lockA)
	for _, e := range []Entry{
		{Event: EventBoot, Actor: make([]byte, 17)},
		{Event: EventBoot, CommandID: make([]byte, 8)},
		{Event: EventBoot, CommandID: make([]byte, 17)},
	} {
		if _, err := l.Append(e); !errors.Is(err, ErrBadEntry) {
			t.Errorf("Append(%+v) = %v, want ErrBadEntry", e, err)
		}
	}
	if l.Next() != 0 {
		t.Fatal("a refused entry took a seq")
	}
	if _, err := l.Append(Entry{Event: EventBoot, Actor: make([]byte, 16), CommandID: make([]byte, 16)}); err != nil {
		t.Fatal(err)
	}
}

// TestRingWraps: appending beyond the ring size overwrites the oldest
// entries; the chain still verifies from the oldest retained one; a reader
// that fell behind is told how many entries it missed.
func TestRingWraps(t *testing.T) {
	st := flash.NewMem()
	l := openLog(t, st, 16, lockA)
	appendN(t, l, 0, 50)
	if l.Next() != 50 || l.Oldest() != 34 {
		t.Fatalf("next %d oldest %d, want 50 34", l.Next(), l.Oldest())
	}
	if n := len(st.Keys()); n != 17 {
		t.Fatalf("%d records, want 16 slots + meta", n)
	}
	c := NewCursor(lockA)
	all, missed := readAll(t, l, &c, 5)
	if missed != 34 || len(all) != 16 || all[0].Seq != 34 || c.Next != 50 {
		t.Fatalf("missed %d, read %d from %d, cursor %d", missed, len(all), all[0].Seq, c.Next)
	}
	// Page from an overwritten seq: starts at oldest, Gap set.
	p, err := l.Page(3, 4)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Gap || p.Entries[0].Seq != 34 || len(p.Entries) != 4 || p.Oldest != 34 || p.Next != 50 {
		t.Fatalf("Page(3) = gap %v first %d len %d oldest %d next %d", p.Gap, p.Entries[0].Seq, len(p.Entries), p.Oldest, p.Next)
	}
	// Page from the future: no entries, not a gap.
	p, _ = l.Page(99, 4)
	if p.Gap || len(p.Entries) != 0 {
		t.Fatalf("Page(99) = %+v", p)
	}
	// max out of range means MaxPageEntries.
	p, _ = l.Page(34, 0)
	if len(p.Entries) != MaxPageEntries {
		t.Fatalf("Page(34, 0) has %d entries", len(p.Entries))
	}
}

// TestReopenRecovers: after a reboot the log continues where it was: same
// next seq, same head, chain intact across the reboot, nothing to repair.
func TestReopenRecovers(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 17, 100} {
		st := flash.NewMem()
		l := openLog(t, st, 16, lockA)
		appendN(t, l, 0, n)
		c := NewCursor(lockA)
		readAll(t, l, &c, 16)
		next, oldest, head := l.Next(), l.Oldest(), l.Head()

		l2 := openLog(t, st, 16, lockA)
		if l2.Next() != next || l2.Oldest() != oldest || !bytes.Equal(l2.Head(), head) {
			t.Fatalf("n=%d: reopened next %d oldest %d, want %d %d", n, l2.Next(), l2.Oldest(), next, oldest)
		}
		appendN(t, l2, n, 5)
		if _, m := readAll(t, l2, &c, 3); m != 0 {
			t.Fatalf("n=%d: missed %d after reboot", n, m)
		}
		if c.Next != uint64(n+5) {
			t.Fatalf("n=%d: cursor at %d", n, c.Next)
		}
	}
}

func TestOpenLayout(t *testing.T) {
	st := flash.NewMem()
	openLog(t, st, 16, lockA)
	if _, err := Open(st, Options{Size: 32}); !errors.Is(err, ErrLayout) {
		t.Fatalf("Open with another size = %v, want ErrLayout", err)
	}
	if err := st.Put(KeyMeta, []byte{0xa0}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(st, Options{Size: 16}); !errors.Is(err, ErrLayout) {
		t.Fatalf("Open with a bad meta record = %v, want ErrLayout", err)
	}
	for _, size := range []int{-1, MaxSize + 1} {
		if _, err := Open(flash.NewMem(), Options{Size: size}); !errors.Is(err, ErrBadOptions) {
			t.Fatalf("Open(Size %d) = %v, want ErrBadOptions", size, err)
		}
	}
}

func TestSignedPages(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	pub := priv.Public().(ed25519.PublicKey)
	l, err := Open(flash.NewMem(), Options{LockID: lockA, Signer: priv, Now: clock()})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 0, 20)
	p, err := l.Page(4, 16)
	if err != nil {
		t.Fatal(err)
	}
	b, err := EncodePage(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 2035-64 {
		t.Fatalf("a full signed page is %d bytes: no room left in a result frame", len(b))
	}
	q, err := DecodePage(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(pub, q); err != nil {
		t.Fatal(err)
	}
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, 32)).Public().(ed25519.PublicKey)
	if err := VerifySignature(other, q); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("wrong key: %v", err)
	}
	q.Next--
	if err := VerifySignature(pub, q); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("next_seq changed: %v", err)
	}
	unsigned, _ := openLog(t, flash.NewMem(), 0, lockA).Page(0, 1)
	if err := VerifySignature(pub, unsigned); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("unsigned page: %v", err)
	}
}

// TestOpenRepairs: damage in the stored ring is found at Open, recorded as
// a log_repaired entry once, and the chain served stays verifiable.
func TestOpenRepairs(t *testing.T) {
	t.Run("altered stored entry", func(t *testing.T) {
		st := flash.NewMem()
		l := openLog(t, st, 16, lockA)
		appendN(t, l, 0, 30) // retained: 14..29
		b, _, _ := st.Get(KeySlot + 20%16)
		e, _ := DecodeEntry(b)
		e.Status = 99 // breaks the link 20 -> 21
		b, _ = e.Encode()
		must(t, st.Put(KeySlot+20%16, b))

		l2 := openLog(t, st, 16, lockA)
		if l2.Oldest() != 21 || l2.Next() != 31 {
			t.Fatalf("oldest %d next %d, want 21 31", l2.Oldest(), l2.Next())
		}
		p, _ := l2.Page(30, 1)
		if got := p.Entries[0]; got.Event != EventLogRepaired || got.Status != 7 {
			t.Fatalf("entry 30 = %+v, want log_repaired, 7 lost (14..20)", got)
		}
		c := NewCursor(lockA)
		if _, missed := readAll(t, l2, &c, 16); missed != 21 {
			t.Fatalf("missed %d", missed)
		}
		l3 := openLog(t, st, 16, lockA)
		if l3.Next() != 31 || l3.Oldest() != 21 {
			t.Fatalf("second reboot: next %d oldest %d: repaired again?", l3.Next(), l3.Oldest())
		}
	})
	t.Run("undecodable slot", func(t *testing.T) {
		st := flash.NewMem()
		l := openLog(t, st, 16, lockA)
		appendN(t, l, 0, 5)
		must(t, st.Put(KeySlot+9, []byte("junk")))
		l2 := openLog(t, st, 16, lockA)
		if l2.Next() != 6 || l2.Oldest() != 0 {
			t.Fatalf("next %d oldest %d", l2.Next(), l2.Oldest())
		}
		if _, ok, _ := st.Get(KeySlot + 9); ok {
			t.Fatal("junk record kept")
		}
		c := NewCursor(lockA)
		all, _ := readAll(t, l2, &c, 16)
		if last := all[len(all)-1]; last.Event != EventLogRepaired || last.Status != 1 {
			t.Fatalf("last entry %+v", last)
		}
		if openLog(t, st, 16, lockA).Next() != 6 {
			t.Fatal("repaired again")
		}
	})
	t.Run("another lock's genesis", func(t *testing.T) {
		st := flash.NewMem()
		appendN(t, openLog(t, st, 16, lockB), 0, 3)
		l := openLog(t, st, 16, lockA)
		if l.Oldest() != 1 || l.Next() != 4 {
			t.Fatalf("oldest %d next %d", l.Oldest(), l.Next())
		}
	})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestPowerCutRecordedOnce: a power cut that tore a record shows up as one
// power_cut_recovered entry, at the boot after it, not at later boots.
func TestPowerCutRecordedOnce(t *testing.T) {
	path := t.TempDir() + "/flash.img"
	fo := flash.Options{PageSize: 1024, Pages: 6}
	st, err := flash.Open(path, fo)
	must(t, err)
	l := openLog(t, st, 16, lockA)
	appendN(t, l, 0, 3)
	st.Close()
	fo.Faults = flash.Faults{Cut: flash.CutAt(0), Seed: 1}
	st, err = flash.Open(path, fo)
	must(t, err)
	l = openLog(t, st, 16, lockA)
	for {
		if _, err := l.Append(sample(9)); err != nil {
			break
		}
	}
	st.Close()
	fo.Faults = flash.Faults{}
	for boot := range 3 {
		st, err = flash.Open(path, fo)
		must(t, err)
		l = openLog(t, st, 16, lockA)
		c := NewCursor(lockA)
		all, _ := readAll(t, l, &c, 16)
		n := 0
		for _, e := range all {
			if e.Seq >= 3 && e.Event == EventPowerCutRecovered { // sample(1) is one too
				n++
			}
		}
		torn := st.Recovery().TornRecord
		st.Close()
		if boot == 0 && torn != (n == 1) || n > 1 {
			t.Fatalf("boot %d: %d power_cut_recovered entries (torn %v)", boot, n, torn)
		}
	}
}
