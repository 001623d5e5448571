package fleet_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/fleet"
)

// disk is a fault seam for bonds.Options.FailCommit: while down, every
// commit fails with err (ENOSPC, EPERM); a hiccup fails one commit only.
type disk struct {
	mu     sync.Mutex
	err    error
	once   bool
	failed int
}

func (d *disk) commit() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.err
	if err != nil {
		d.failed++
		if d.once {
			d.err = nil
		}
	}
	return err
}

// fail makes the next commits fail with err: all of them until recover,
// or only the next one (once).
func (d *disk) fail(err error, once bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.err, d.once = err, once
}

func (d *disk) recover() { d.fail(nil, false) }

func (d *disk) failures() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failed
}

// openFaultyDB opens a journal whose commits fail while d says so.
func openFaultyDB(t *testing.T, clk *clock, d *disk) *bonds.DB {
	t.Helper()
	db, err := bonds.Open(filepath.Join(t.TempDir(), "gatewayd.db"), bonds.Options{Now: clk.Now, NoSync: true,
		PruneInterval: -1, FailCommit: d.commit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil && !errors.Is(err, bonds.ErrClosed) {
			t.Errorf("db close: %v", err)
		}
	})
	return db
}

// hookLink calls after once a lock has answered a request, before the
// scheduler records the answer: the moment a disk fault hurts most.
type hookLink struct {
	fleet.Link
	after func(n int)
	n     atomic.Int64
}

type hookSession struct {
	fleet.Session
	l *hookLink
}

func (h *hookLink) Dial(ctx context.Context, lock bonds.LockID) (fleet.Session, error) {
	s, err := h.Link.Dial(ctx, lock)
	if err != nil {
		return nil, err
	}
	return &hookSession{Session: s, l: h}, nil
}

func (s *hookSession) Handshake(ctx context.Context) error {
	if h, ok := s.Session.(fleet.Handshaker); ok {
		return h.Handshake(ctx)
	}
	return nil
}

func (s *hookSession) Do(ctx context.Context, op command.Op, signed []byte) (*command.Result, error) {
	res, err := s.Session.Do(ctx, op, signed)
	if err == nil {
		s.l.after(int(s.l.n.Add(1)))
	}
	return res, err
}

// noRescan keeps the journal rescan out of a test: what it proves must
// come from the scheduler's own handling of the failed write.
func noRescan(o *fleet.Options) { o.RescanAfterDrop, o.Rescan = time.Hour, time.Hour }

// TestDiskFullResultsAfterRecovery: the disk fills (ENOSPC) right after a
// lock executed the first of five commands, so its result cannot be
// written, nor can anything after it. No command is lost or left running:
// the scheduler keeps retrying the write, and once the disk has room every
// command gets its one result, without the journal rescan and without a
// restart. The lock executed each command once, in its signer's counter
// order (no replay).
func TestDiskFullResultsAfterRecovery(t *testing.T) {
	for _, fault := range []error{syscall.ENOSPC, syscall.EPERM} {
		t.Run(fault.Error(), func(t *testing.T) {
			e := newRefEnv(t)
			d := &disk{}
			e.db = openFaultyDB(t, e.clk, d)
			l := e.link.AddLock(t, 1)
			var ids []bonds.CommandID
			for i := range 5 {
				ids = append(ids, e.add(t, l, []command.Op{command.OpUnlock, command.OpLock}[i%2], uint64(i+1), e.op).ID)
			}
			link := &hookLink{Link: e.link, after: func(n int) {
				if n == 1 {
					d.fail(fault, false)
				}
			}}
			s := start(t, e.db, link, e.clk, noRescan)
			until(t, "several failed tries of the write", func() bool {
				return d.failures() >= 3 && value(t, s, "journal_write_failures_total") >= 3
			})
			for _, id := range ids {
				if en, err := e.db.Entry(context.Background(), id); err != nil || en.State.Terminal() {
					t.Fatalf("%s is %s (%v) while the disk is full", id, en.State, err)
				}
			}
			if n := value(t, s, "journal_write_failures_total"); n < 3 {
				t.Errorf("journal_write_failures_total %v, want >= 3", n)
			}
			d.recover()
			got := waitTerminal(t, e.db, ids...)
			for i, id := range ids {
				if en := got[id]; en.State != bonds.StateSucceeded || en.Result.Status != "ok" {
					t.Errorf("command %d: %s %q (%s)", i+1, en.State, en.Result.Status, en.Result.Detail)
				}
			}
			checkOutbox(t, e.db, ids...)
			if m := l.Actuator.Moves(); m != len(ids) {
				t.Errorf("the lock moved %d times for %d commands", m, len(ids))
			}
		})
	}
}

// TestDiskHiccupKeepsCounterOrder: one failed write, the one recording a
// lock's answer to the first command together with the start of the
// second, must not let the signer's later commands overtake the second
// (the lock would then refuse it as a replay of an older counter): every
// command reaches the lock in counter order and succeeds.
func TestDiskHiccupKeepsCounterOrder(t *testing.T) {
	e := newRefEnv(t)
	d := &disk{}
	e.db = openFaultyDB(t, e.clk, d)
	l := e.link.AddLock(t, 1)
	var ids []bonds.CommandID
	for i := range 6 {
		ids = append(ids, e.add(t, l, []command.Op{command.OpUnlock, command.OpLock}[i%2], uint64(i+1), e.op).ID)
	}
	link := &hookLink{Link: e.link, after: func(n int) {
		if n == 1 {
			d.fail(syscall.EIO, true)
		}
	}}
	// The rescan as quick as can be: it must not matter.
	start(t, e.db, link, e.clk, func(o *fleet.Options) { o.RescanAfterDrop = time.Millisecond })
	got := waitTerminal(t, e.db, ids...)
	for i, id := range ids {
		if en := got[id]; en.State != bonds.StateSucceeded || en.Result.Status != "ok" {
			t.Errorf("command %d: %s %q (%s)", i+1, en.State, en.Result.Status, en.Result.Detail)
		}
	}
	if d.failures() != 1 {
		t.Errorf("%d failed commits, want the one hiccup", d.failures())
	}
	checkOutbox(t, e.db, ids...)
}
