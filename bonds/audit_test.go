package bonds

import (
	"errors"
	"testing"
	"time"
)

func entryRec(seq uint64) AuditRecord {
	return AuditRecord{Seq: seq, Entry: []byte{0xa8, byte(seq)}, ReadAt: time.Unix(int64(seq), 0)}
}

// TestAdvanceAudit: the cursor moves and the records are queued in one
// write, only from the cursor the caller read; the outbox returns them in
// order, and acknowledging removes exactly those up to the acked seq.
func TestAdvanceAudit(t *testing.T) {
	db, _ := openTest(t, Options{})
	for _, n := range []uint64{1, 2} {
		if err := db.PutLock(bg, Lock{ID: lid(n)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.AdvanceAudit(bg, lid(9), AuditAdvance{Seq: 1, Head: []byte{1}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("AdvanceAudit of an unknown lock = %v", err)
	}
	// First read: no cursor stored, so the caller's from is zero.
	c, err := db.AdvanceAudit(bg, lid(1), AuditAdvance{Seq: 3, Head: []byte{3},
		Records: []AuditRecord{entryRec(0), entryRec(1), entryRec(2)}})
	if err != nil || c.Seq != 3 || len(c.Pending) != 3 {
		t.Fatalf("AdvanceAudit = %+v, %v", c, err)
	}
	// A second reader that read the same (absent) cursor is refused.
	if _, err := db.AdvanceAudit(bg, lid(1), AuditAdvance{Seq: 1, Head: []byte{1}, Records: []AuditRecord{entryRec(0)}}); !errors.Is(err, ErrAuditConflict) {
		t.Errorf("AdvanceAudit from a stale cursor = %v", err)
	}
	if _, err := db.AdvanceAudit(bg, lid(1), AuditAdvance{FromSeq: 3, FromHead: []byte{9}, Seq: 4, Head: []byte{4}}); !errors.Is(err, ErrAuditConflict) {
		t.Errorf("AdvanceAudit from another head = %v", err)
	}
	// A loss record then an entry.
	if _, err := db.AdvanceAudit(bg, lid(1), AuditAdvance{FromSeq: 3, FromHead: []byte{3}, Seq: 8, Head: []byte{8},
		Records: []AuditRecord{{Seq: 3, Missed: 4}, entryRec(7)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AdvanceAudit(bg, lid(2), AuditAdvance{Seq: 1, Head: []byte{1}, Records: []AuditRecord{entryRec(0)}}); err != nil {
		t.Fatal(err)
	}
	items, err := db.AuditOutbox(bg, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		lock LockID
		seq  uint64
	}{{lid(1), 0}, {lid(1), 1}, {lid(1), 2}, {lid(1), 3}, {lid(1), 7}, {lid(2), 0}}
	if len(items) != len(want) {
		t.Fatalf("AuditOutbox = %d items, want %d: %+v", len(items), len(want), items)
	}
	for i, w := range want {
		if items[i].LockID != w.lock || items[i].Seq != w.seq {
			t.Errorf("item %d = %s/%d, want %s/%d", i, items[i].LockID, items[i].Seq, w.lock, w.seq)
		}
	}
	if items[3].Missed != 4 || items[3].Entry != nil {
		t.Errorf("loss record = %+v", items[3])
	}
	if got, _ := db.AuditOutbox(bg, 2); len(got) != 2 {
		t.Errorf("AuditOutbox(2) = %d items", len(got))
	}
	// The broker acknowledged lock 1 up to 3 (the loss), and lock 2.
	if err := db.AckAudit(bg, []AuditAck{{lid(1), 3}, {lid(2), 0}, {lid(9), 5}}); err != nil {
		t.Fatal(err)
	}
	items, _ = db.AuditOutbox(bg, 100)
	if len(items) != 1 || items[0].LockID != lid(1) || items[0].Seq != 7 {
		t.Errorf("after the ack, AuditOutbox = %+v", items)
	}
	c, err = db.AuditCursor(bg, lid(1))
	if err != nil || c.Seq != 8 || string(c.Head) != "\x08" {
		t.Errorf("cursor after the ack = %+v, %v", c, err)
	}
	// openTest runs CheckFile (the pending records' invariants) at cleanup.
}

// TestAdvanceAuditRefuses: malformed advances and a backlog over
// MaxAuditPending write nothing.
func TestAdvanceAuditRefuses(t *testing.T) {
	db, _ := openTest(t, Options{})
	if err := db.PutLock(bg, Lock{ID: lid(1)}); err != nil {
		t.Fatal(err)
	}
	bad := map[string]AuditAdvance{
		"empty head":     {Seq: 1},
		"going back":     {FromSeq: 5, FromHead: []byte{5}, Seq: 4, Head: []byte{4}},
		"out of order":   {Seq: 3, Head: []byte{3}, Records: []AuditRecord{entryRec(1), entryRec(0)}},
		"at the cursor":  {Seq: 1, Head: []byte{1}, Records: []AuditRecord{entryRec(1)}},
		"neither":        {Seq: 1, Head: []byte{1}, Records: []AuditRecord{{Seq: 0}}},
		"entry and loss": {Seq: 1, Head: []byte{1}, Records: []AuditRecord{{Seq: 0, Missed: 1, Entry: []byte{1}}}},
	}
	for name, a := range bad {
		if _, err := db.AdvanceAudit(bg, lid(1), a); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: AdvanceAudit = %v, want ErrInvalid", name, err)
		}
	}
	var recs []AuditRecord
	for i := range uint64(MaxAuditPending) {
		recs = append(recs, entryRec(i))
	}
	if _, err := db.AdvanceAudit(bg, lid(1), AuditAdvance{Seq: MaxAuditPending, Head: []byte{1}, Records: recs}); err != nil {
		t.Fatal(err)
	}
	_, err := db.AdvanceAudit(bg, lid(1), AuditAdvance{FromSeq: MaxAuditPending, FromHead: []byte{1},
		Seq: MaxAuditPending + 1, Head: []byte{2}, Records: []AuditRecord{entryRec(MaxAuditPending)}})
	if !errors.Is(err, ErrAuditBacklog) {
		t.Errorf("AdvanceAudit over the backlog = %v", err)
	}
	if c, _ := db.AuditCursor(bg, lid(1)); c.Seq != MaxAuditPending || len(c.Pending) != MaxAuditPending {
		t.Errorf("cursor after refusals = seq %d, %d pending", c.Seq, len(c.Pending))
	}
}

// TestResetAuditCursor: a reset forgets the cursor, so reading starts
// over; never while records wait for the broker.
func TestResetAuditCursor(t *testing.T) {
	db, _ := openTest(t, Options{})
	if err := db.PutLock(bg, Lock{ID: lid(1)}); err != nil {
		t.Fatal(err)
	}
	if err := db.ResetAuditCursor(bg, lid(2)); !errors.Is(err, ErrNotFound) {
		t.Errorf("reset of an unknown lock = %v", err)
	}
	if err := db.ResetAuditCursor(bg, lid(1)); err != nil {
		t.Errorf("reset without a cursor = %v", err)
	}
	if _, err := db.AdvanceAudit(bg, lid(1), AuditAdvance{Seq: 1, Head: []byte{1}, Records: []AuditRecord{entryRec(0)}}); err != nil {
		t.Fatal(err)
	}
	if err := db.ResetAuditCursor(bg, lid(1)); !errors.Is(err, ErrAuditBacklog) {
		t.Errorf("reset with a record pending = %v", err)
	}
	if err := db.AckAudit(bg, []AuditAck{{lid(1), 0}}); err != nil {
		t.Fatal(err)
	}
	if err := db.ResetAuditCursor(bg, lid(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AuditCursor(bg, lid(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("cursor after the reset: %v", err)
	}
}

// BenchmarkAuditPage is the database's cost of one audit page in steady
// state: AdvanceAudit queues 16 entries of a realistic size (about 100
// bytes of CBOR each) with the cursor's move, and AckAudit removes them
// once published; two durable writes per page. It reports the bytes of
// the lock's record written per page.
func BenchmarkAuditPage(b *testing.B) {
	db, _ := openTest(b, Options{PruneInterval: -1})
	if err := db.PutLock(bg, Lock{ID: lid(1)}); err != nil {
		b.Fatal(err)
	}
	head := make([]byte, 32)
	var from uint64
	var fromHead []byte
	var written int
	b.ResetTimer()
	for range b.N {
		recs := make([]AuditRecord, 16)
		for i := range recs {
			recs[i] = AuditRecord{Seq: from + uint64(i), Entry: make([]byte, 100), ReadAt: time.Unix(1_800_000_000, 0)}
		}
		c, err := db.AdvanceAudit(bg, lid(1), AuditAdvance{FromSeq: from, FromHead: fromHead, Seq: from + 16, Head: head, Records: recs})
		if err != nil {
			b.Fatal(err)
		}
		v, _ := encode(c)
		written += len(v)
		if err := db.AckAudit(bg, []AuditAck{{lid(1), from + 15}}); err != nil {
			b.Fatal(err)
		}
		from, fromHead = from+16, head
	}
	b.ReportMetric(float64(written)/float64(b.N), "record-bytes/op")
}
