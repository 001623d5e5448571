package audit

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/lock/flash"
)

// page10 returns a page of entries 0..9 of a lock's 10-entry log (the page
// reaches the head), and a cursor that has read nothing.
func page10(t *testing.T, lockID []byte) (Page, Cursor) {
	t.Helper()
	l := openLog(t, flash.NewMem(), 0, lockID)
	appendN(t, l, 0, 10)
	p, err := l.Page(0, 16)
	if err != nil {
		t.Fatal(err)
	}
	return p, NewCursor(lockID)
}

// clonePage deep-copies p, so a test can alter it.
func clonePage(p Page) Page {
	q := p
	q.Head = bytes.Clone(p.Head)
	q.Entries = make([]Entry, len(p.Entries))
	for i, e := range p.Entries {
		e.Actor = bytes.Clone(e.Actor)
		e.CommandID = bytes.Clone(e.CommandID)
		e.PrevHash = bytes.Clone(e.PrevHash)
		q.Entries[i] = e
	}
	return q
}

// wantRefused checks that both Verify (with and without the genesis) and
// the cursor refuse p with want, and that the cursor did not move.
func wantRefused(t *testing.T, c Cursor, p Page, want error) {
	t.Helper()
	if _, err := Verify(c.Hash, p); !errors.Is(err, want) {
		t.Errorf("Verify = %v, want %v", err, want)
	}
	before := c
	if _, err := c.Advance(p); !errors.Is(err, want) {
		t.Errorf("Cursor.Advance = %v, want %v", err, want)
	}
	if c.Next != before.Next || !bytes.Equal(c.Hash, before.Hash) {
		t.Error("a refused page moved the cursor")
	}
}

func TestVerifyAcceptsTheLog(t *testing.T) {
	p, c := page10(t, lockA)
	last, err := Verify(Genesis(lockA), p)
	if err != nil || !bytes.Equal(last, p.Head) {
		t.Fatalf("Verify = %x, %v", last, err)
	}
	if _, err := Verify(nil, p); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Advance(p); err != nil || m != 0 || c.Next != 10 {
		t.Fatalf("Advance = %d, %v; cursor %d", m, err, c.Next)
	}
	// An empty page at the head is fine; one with another head is not.
	empty := Page{Oldest: 0, Next: 10, Head: bytes.Clone(p.Head)}
	if _, err := c.Advance(empty); err != nil {
		t.Fatal(err)
	}
	empty.Head[0] ^= 1
	if _, err := c.Advance(empty); !errors.Is(err, ErrTampered) {
		t.Fatalf("empty page, other head: %v", err)
	}
}

// TestAttackAlteredEntry: "an audit chain with one entry altered", once per
// field type, in the middle of the page and in the newest entry.
func TestAttackAlteredEntry(t *testing.T) {
	alter := map[string]func(e *Entry){
		"seq":        func(e *Entry) { e.Seq += 100 },
		"time":       func(e *Entry) { e.Time-- },
		"event":      func(e *Entry) { e.Event = EventCommandOK + EventCommandRefused - e.Event },
		"actor":      func(e *Entry) { e.Actor = kid("op-mallory") },
		"actor-drop": func(e *Entry) { e.Actor = nil },
		"op":         func(e *Entry) { e.Op ^= 3 },
		"command_id": func(e *Entry) { e.CommandID = bytes.Repeat([]byte{0xEE}, 16) },
		"status":     func(e *Entry) { e.Status++ },
		"prev_hash":  func(e *Entry) { e.PrevHash[31] ^= 1 },
	}
	p, c := page10(t, lockA)
	for name, f := range alter {
		for _, at := range []int{0, 4, 9} {
			q := clonePage(p)
			before := q.Entries[at].Hash()
			f(&q.Entries[at])
			if bytes.Equal(before, q.Entries[at].Hash()) {
				continue // dropping an actor that is not there
			}
			t.Run(name, func(t *testing.T) {
				wantRefused(t, c, q, ErrTampered)
			})
		}
	}
}

// TestAttackRemovedEntry: one entry taken out of a page.
func TestAttackRemovedEntry(t *testing.T) {
	p, c := page10(t, lockA)
	for _, at := range []int{1, 5, 8} {
		q := clonePage(p)
		q.Entries = slices.Delete(q.Entries, at, at+1)
		wantRefused(t, c, q, ErrGap)
	}
	// The first one removed: the page no longer starts at the cursor,
	// although the lock retains the entry.
	q := clonePage(p)
	q.Entries = q.Entries[1:]
	if _, err := c.Advance(q); !errors.Is(err, ErrGap) {
		t.Fatalf("first entry removed: %v, want ErrGap", err)
	}
	// The last one removed: the page claims to reach the head but its
	// newest entry is not the head (a truncated chain).
	q = clonePage(p)
	q.Entries = q.Entries[:9]
	q.Next = 9
	wantRefused(t, c, q, ErrTampered)
}

// TestAttackReorderedPair: two neighbours swapped, with or without their
// seqs.
func TestAttackReorderedPair(t *testing.T) {
	p, c := page10(t, lockA)
	q := clonePage(p)
	q.Entries[3], q.Entries[4] = q.Entries[4], q.Entries[3]
	wantRefused(t, c, q, ErrTampered)
	q = clonePage(p) // contents swapped, seqs left in order
	q.Entries[3], q.Entries[4] = q.Entries[4], q.Entries[3]
	q.Entries[3].Seq, q.Entries[4].Seq = 3, 4
	wantRefused(t, c, q, ErrTampered)
	q = clonePage(p) // an entry repeated
	q.Entries[5] = q.Entries[4]
	wantRefused(t, c, q, ErrTampered)
}

// TestAttackStitchedLocks: a page made of lock A's entries 0..4 and lock
// B's 5..9 (same events, same times), and a page of lock B handed to lock
// A's reader.
func TestAttackStitchedLocks(t *testing.T) {
	pa, c := page10(t, lockA)
	pb, _ := page10(t, lockB)
	q := clonePage(pa)
	copy(q.Entries[5:], clonePage(pb).Entries[5:])
	q.Head = bytes.Clone(pb.Head)
	wantRefused(t, c, q, ErrTampered)
	wantRefused(t, c, clonePage(pb), ErrTampered)
	// And B's continuation after reading A's first half.
	half := clonePage(pa)
	half.Entries = half.Entries[:5]
	if _, err := c.Advance(half); err != nil {
		t.Fatal(err)
	}
	rest := clonePage(pb)
	rest.Entries = rest.Entries[5:]
	wantRefused(t, c, rest, ErrTampered)
}

// TestAttackTruncatedChain: the newest entries dropped and next_seq and
// head_hash rewritten to match: Verify alone accepts that page (it is a
// real prefix), but the reader's cursor refuses the rollback later, and
// the lock's signature refuses it at once.
func TestAttackTruncatedChain(t *testing.T) {
	p, c := page10(t, lockA)
	if _, err := c.Advance(p); err != nil {
		t.Fatal(err)
	}
	// The lock "forgets" entries 7..9.
	q := clonePage(p)
	q.Entries = q.Entries[:7]
	q.Next = 7
	q.Head = q.Entries[6].Hash()
	if _, err := c.Advance(q); !errors.Is(err, ErrTampered) {
		t.Fatalf("rolled-back log: %v, want ErrTampered", err)
	}
	// Head hash left as it was: caught by Verify itself.
	q.Head = bytes.Clone(p.Head)
	if _, err := Verify(nil, q); !errors.Is(err, ErrTampered) {
		t.Fatalf("head of a longer chain: %v, want ErrTampered", err)
	}
}

func TestVerifyMalformed(t *testing.T) {
	p, c := page10(t, lockA)
	for name, f := range map[string]func(*Page){
		"short head":      func(q *Page) { q.Head = q.Head[:31] },
		"oldest > next":   func(q *Page) { q.Oldest = 11 },
		"short prev_hash": func(q *Page) { q.Entries[2].PrevHash = q.Entries[2].PrevHash[:16] },
		"long actor":      func(q *Page) { q.Entries[2].Actor = make([]byte, 17) },
		"bad command_id":  func(q *Page) { q.Entries[2].CommandID = make([]byte, 3) },
		"short sig":       func(q *Page) { q.Sig = make([]byte, 10) },
	} {
		q := clonePage(p)
		f(&q)
		if _, err := Verify(nil, q); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Verify = %v", name, err)
		}
		if _, err := c.Advance(q); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Advance = %v", name, err)
		}
		if _, err := EncodePage(q); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: EncodePage = %v", name, err)
		}
	}
	if _, err := Verify(make([]byte, 5), p); !errors.Is(err, ErrMalformed) {
		t.Errorf("short prevHash: %v", err)
	}
	// An entry outside [oldest, next).
	q := clonePage(p)
	q.Oldest = 2
	wantRefused(t, c, q, ErrTampered)
}

func TestDecodeStrict(t *testing.T) {
	p, _ := page10(t, lockA)
	b, err := EncodePage(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodePage(b); err != nil {
		t.Fatal(err)
	}
	e0, _ := p.Entries[0].Encode()
	bad := map[string][]byte{
		"trailing byte":     append(bytes.Clone(b), 0),
		"empty":             nil,
		"indefinite map":    append([]byte{0xbf}, b[1:]...),
		"non-shortest uint": {0xa4, 0x01, 0x18, 0x00, 0x02, 0x00, 0x03, 0x80, 0x04, 0x58, 0x20},
		"entry not a page":  e0,
		"page not an entry": b,
		"entry missing key": append([]byte{0xa7}, e0[3:]...),
	}
	for name, in := range bad {
		_, perr := DecodePage(in)
		_, eerr := DecodeEntry(in)
		if name == "entry not a page" {
			if !errors.Is(perr, ErrMalformed) {
				t.Errorf("%s: DecodePage = %v", name, perr)
			}
			continue
		}
		if name == "page not an entry" {
			if !errors.Is(eerr, ErrMalformed) {
				t.Errorf("%s: DecodeEntry = %v", name, eerr)
			}
			continue
		}
		if !errors.Is(perr, ErrMalformed) || !errors.Is(eerr, ErrMalformed) {
			t.Errorf("%s: DecodePage = %v, DecodeEntry = %v", name, perr, eerr)
		}
	}
	// More than MaxPageEntries entries.
	big := clonePage(p)
	for len(big.Entries) <= MaxPageEntries {
		big.Entries = append(big.Entries, big.Entries[0])
	}
	if _, err := EncodePage(big); !errors.Is(err, ErrMalformed) {
		t.Errorf("EncodePage of %d entries = %v", len(big.Entries), err)
	}
}

// TestWorstCasePageFits: a signed page of MaxPageEntries entries with
// every field at its largest encodes to at most 1800 bytes, leaving room
// for the result envelope in a 2035-byte result (firmware/command).
func TestWorstCasePageFits(t *testing.T) {
	p := Page{Oldest: 1<<64 - 100, Next: 1<<64 - 1, Head: make([]byte, 32), Sig: make([]byte, 64)}
	for i := range MaxPageEntries {
		p.Entries = append(p.Entries, Entry{Seq: p.Oldest + uint64(i), Time: 1<<64 - 1, Event: 0xFFFF,
			Actor: make([]byte, MaxActor), Op: 0xFF, CommandID: make([]byte, CommandIDSize), Status: 0xFFFF,
			PrevHash: make([]byte, HashSize)})
	}
	b, err := EncodePage(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 1800 {
		t.Fatalf("worst-case page is %d bytes", len(b))
	}
	t.Logf("worst-case signed page: %d bytes", len(b))
}
