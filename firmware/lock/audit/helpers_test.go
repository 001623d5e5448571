package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/lock/flash"
)

var (
	lockA, _ = hex.DecodeString("a1b2c3d4e5f60718")
	lockB, _ = hex.DecodeString("0102030405060708")
	t0       = time.Unix(1767225600, 0) // 2026-01-01T00:00:00Z
)

// kid returns the kid rule's kid of an operator (docs/protocol.md §5.6).
func kid(sub string) []byte {
	h := sha256.Sum256(append([]byte{3}, sub...))
	return h[:8]
}

func clock() func() time.Time { return func() time.Time { return t0 } }

func openLog(t testing.TB, st flash.Store, size int, lockID []byte) *Log {
	t.Helper()
	l, err := Open(st, Options{Size: size, LockID: lockID, Now: clock()})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// sample returns the i-th entry of a varied sequence: every event, with and
// without actor and command_id.
func sample(i int) Entry {
	e := Entry{Time: uint64(t0.Unix()) + uint64(i), Event: Event(1 + i%15), Status: uint16(i % 3)}
	if i%2 == 0 {
		e.Actor = kid("op-alice")
	}
	if i%3 == 0 {
		e.Op = uint8(1 + i%10)
		e.CommandID = bytes.Repeat([]byte{byte(i)}, 16)
	}
	return e
}

// appendN appends n sample entries and returns their hashes by seq.
func appendN(t testing.TB, l *Log, from, n int) map[uint64][]byte {
	t.Helper()
	hs := map[uint64][]byte{}
	for i := from; i < from+n; i++ {
		seq, err := l.Append(sample(i))
		if err != nil {
			t.Fatal(err)
		}
		hs[seq] = l.Head()
	}
	return hs
}

// readAll reads the whole retained log through a cursor, page by page,
// verifying as it goes, and returns the entries and the missed count.
func readAll(t testing.TB, l *Log, c *Cursor, max int) ([]Entry, uint64) {
	t.Helper()
	var all []Entry
	var missed uint64
	for {
		p, err := l.Page(c.Next, max)
		if err != nil {
			t.Fatal(err)
		}
		b, err := EncodePage(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := DecodePage(b)
		if err != nil {
			t.Fatalf("DecodePage(EncodePage(p)): %v", err)
		}
		m, err := c.Advance(q)
		if err != nil {
			t.Fatalf("Advance from %d: %v", c.Next, err)
		}
		missed += m
		all = append(all, q.Entries...)
		if len(q.Entries) == 0 {
			return all, missed
		}
	}
}
