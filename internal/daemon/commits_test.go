package daemon

import (
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

// commitLog records, through bonds' commit seam (Options.AfterCommit),
// the commits that wrote each command's journal entry and the states they
// wrote (an acknowledged entry as "succeeded+acked").
type commitLog struct {
	mu      sync.Mutex
	commits map[bonds.CommandID][]string
	db      *bonds.DB
}

func newCommitLog() *commitLog { return &commitLog{commits: map[bonds.CommandID][]string{}} }

func (c *commitLog) open(path string, o bonds.Options) (*bonds.DB, error) {
	o.AfterCommit = c.after
	db, err := bonds.Open(path, o)
	c.mu.Lock()
	c.db = db
	c.mu.Unlock()
	return db, err
}

func (c *commitLog) after(es []bonds.Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	this := map[bonds.CommandID][]string{}
	var order []bonds.CommandID
	for _, e := range es {
		if _, ok := this[e.ID]; !ok {
			order = append(order, e.ID)
		}
		st := string(e.State)
		if e.Acked() {
			st += "+acked"
		}
		this[e.ID] = append(this[e.ID], st)
	}
	for _, id := range order {
		c.commits[id] = append(c.commits[id], strings.Join(this[id], ","))
	}
}

func (c *commitLog) of(id bonds.CommandID) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.commits[id])
}

// TestOneCommandTwoCommits (issue 14, "fewer commits"): through the whole
// daemon (mosquitto, intake, journal, scheduler, BlueZ link with EDHOC,
// emulated lock, outbox), a one-command session commits its journal entry
// twice before its result can be published: the intake's append (state
// received, before the PUBACK) and the outcome (received → queued →
// running → succeeded and the result into the outbox, one transaction).
// The third commit, the outbox's acknowledgement, follows the broker's
// PUBACK of the published result. It was five, four before publication.
// Counted per command with bonds' commit seam, not timed.
func TestOneCommandTwoCommits(t *testing.T) {
	d := newDock(t, 1, emulator.Options{})
	log := newCommitLog()
	d.run(func(o *Options) { o.OpenDB = log.open })
	oc := d.client
	oc.until("status online and the lock heard", func() bool {
		return len(oc.status) > 0 && strings.Contains(oc.status[len(oc.status)-1], `"online"`) &&
			len(oc.locks) > 0 && len(oc.locks[len(oc.locks)-1].Locks) == 1
	})
	want := []string{"received", "queued,running,succeeded", "succeeded+acked"}
	for i, op := range []command.Op{command.OpUnlock, command.OpLock, command.OpUnlock} {
		body, s := d.sign(0, op, command.Args{})
		id := bonds.CommandID(body.CommandID)
		oc.publish(s)
		oc.until("the result", func() bool { return len(oc.resultsFor(body.CommandID)) > 0 })
		deadline := time.Now().Add(60 * time.Second)
		for len(log.of(id)) < len(want) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		got := log.of(id)
		if !slices.Equal(got, want) {
			t.Errorf("command %d (%s): commits %q, want %q", i, op, got, want)
		}
		before := 0
		for _, c := range got {
			if !strings.HasSuffix(c, "+acked") {
				before++
			}
		}
		if before > 2 {
			t.Errorf("command %d: %d commits before its result could be published, want at most 2", i, before)
		}
		oc.mu.Lock()
		r := oc.resultsFor(body.CommandID)[0]
		oc.mu.Unlock()
		if r.State != bonds.StateSucceeded || r.Attempts != 1 {
			t.Errorf("command %d: %s/%s after %d attempts", i, r.State, r.Status, r.Attempts)
		}
	}
	if m := d.locks[0].act.Moves(); m != 3 {
		t.Errorf("the bolt moved %d times for 3 commands", m)
	}
	// The counter the lock accepted is kept under the signer's key,
	// learnt from the journal's verified form (bookkeeping.signer).
	log.mu.Lock()
	db := log.db
	log.mu.Unlock()
	l, err := db.Lock(t.Context(), d.locks[0].id)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.Counters[hex.EncodeToString(d.op.Cert.KID)], d.ctr; len(l.Counters) != 1 || got != want {
		t.Errorf("counters %v, want %d for the operator's kid %x", l.Counters, want, d.op.Cert.KID)
	}
}

// TestBookkeepingVerifiesOnce (issue 14, "verify once"): the bookkeeping
// learns the signer key and counter of a command the lock accepted from
// the journal's entry, which holds the bytes the intake verified and the
// signer it named, without verifying the signature again: with no trusted
// roots at all it still names the signer. Bytes the journal does not hold
// are verified (and with no roots, refused).
func TestBookkeepingVerifiesOnce(t *testing.T) {
	f := channeltest.NewFleet(t, "acme")
	op := f.Operator(t, "otto", cred.RoleAdmin)
	db, err := bonds.Open(filepath.Join(t.TempDir(), "gatewayd.db"), bonds.Options{NoSync: true, PruneInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	body := command.Body{LockID: [8]byte{0x4c, 0x4b, 0, 0, 0, 0, 0, 1}, Op: command.OpUnlock, NotAfter: f.Now.Add(time.Hour),
		Counter: 42, CommandID: [16]byte{0xb0, 1}}
	signed, err := command.Sign(op.Key, op.Cert.Raw, body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Append(t.Context(), bonds.Command{ID: bonds.CommandID(body.CommandID), LockID: body.LockID,
		Operator: op.Cert.Subject, Operation: "unlock", NotAfter: body.NotAfter, Payload: signed}); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(op.Cert.KID)
	b := &bookkeeping{db: db} // no roots: nothing verifies
	if kid, ctr := b.signer(t.Context(), signed, &body); kid != want || ctr != 42 {
		t.Errorf("journaled command: signer %q counter %d, want %q 42", kid, ctr, want)
	}
	other := body
	other.CommandID, other.Counter = [16]byte{0xb0, 2}, 43
	signed2, err := command.Sign(op.Key, op.Cert.Raw, other)
	if err != nil {
		t.Fatal(err)
	}
	if kid, _ := b.signer(t.Context(), signed2, &other); kid != "" {
		t.Errorf("a command not journaled was named %q without a trusted root", kid)
	}
	b.roots = func() cred.Roots { return f.Roots }
	if kid, ctr := b.signer(t.Context(), signed2, &other); kid != want || ctr != 43 {
		t.Errorf("a command not journaled, verified: signer %q counter %d, want %q 43", kid, ctr, want)
	}
}

// Kill points of TestCrashAtEachCommit, for the child daemon
// (GATEWAYD_TEST_KILL_AT): the daemon SIGKILLs itself just before or just
// after the commit that writes a command's entry at that step.
const (
	killBeforeAppend  = "before-append"  // nothing durable: no PUBACK, the broker redelivers
	killAfterAppend   = "after-append"   // received durable, perhaps not acknowledged yet
	killBeforeOutcome = "before-outcome" // the lock ran it; the journal still has it received
	killAfterOutcome  = "after-outcome"  // the result in the outbox, not published
	killBeforeAck     = "before-ack"     // published, its acknowledgement not written
)

// killAt is the child daemon's OpenDB for a kill point of command id (hex).
func killAt(point, id string) func(string, bonds.Options) (*bonds.DB, error) {
	die := func() { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL); select {} }
	match := func(es []bonds.Entry, f func(bonds.Entry) bool) bool {
		return slices.ContainsFunc(es, func(e bonds.Entry) bool { return e.ID.String() == id && f(e) })
	}
	received := func(e bonds.Entry) bool { return e.State == bonds.StateReceived }
	outcome := func(e bonds.Entry) bool { return e.State.Terminal() && !e.Acked() }
	acked := func(e bonds.Entry) bool { return e.Acked() }
	return func(path string, o bonds.Options) (*bonds.DB, error) {
		switch point {
		case killBeforeAppend:
			o.BeforeCommit = func(es []bonds.Entry) {
				if match(es, received) {
					die()
				}
			}
		case killAfterAppend:
			o.AfterCommit = func(es []bonds.Entry) {
				if match(es, received) {
					die()
				}
			}
		case killBeforeOutcome:
			o.BeforeCommit = func(es []bonds.Entry) {
				if match(es, outcome) {
					die()
				}
			}
		case killAfterOutcome:
			o.AfterCommit = func(es []bonds.Entry) {
				if match(es, outcome) {
					die()
				}
			}
		case killBeforeAck:
			o.BeforeCommit = func(es []bonds.Entry) {
				if match(es, acked) {
					die()
				}
			}
		default:
			return nil, fmt.Errorf("unknown kill point %q", point)
		}
		return bonds.Open(path, o)
	}
}

// TestCrashAtEachCommit: the daemon (a process) is SIGKILLed at each step
// of a command's journal writes, as a power loss would stop it, and
// started again. At every point the command runs on its lock once and
// gets its result, which succeeded: before the append, the broker
// redelivers it (no PUBACK was sent); after it, the restarted scheduler
// resumes it from the journal, which holds it as received whatever
// happened in memory (queued, running); if the lock had run it (killed
// before the outcome's commit), sending it again gets duplicate_command
// with the first status, and the bolt does not move again; after the
// outcome, the outbox publishes the result; after the publication, it is
// published again (subscribers drop repeats by command ID).
func TestCrashAtEachCommit(t *testing.T) {
	d := newDock(t, 1, emulator.Options{})
	oc := d.client
	c := d.spawn()
	oc.until("the gateway's first session", func() bool { return len(oc.status) > 0 })
	// A first command without a kill: the lock's record, bond and
	// services exist before the kills.
	body, s := d.sign(0, command.OpLock, command.Args{})
	oc.publish(s)
	oc.until("the first result", func() bool { return len(oc.resultsFor(body.CommandID)) > 0 })
	c.kill()
	moves := d.locks[0].act.Moves()
	points := []string{killBeforeAppend, killAfterAppend, killBeforeOutcome, killAfterOutcome, killBeforeAck}
	for i, point := range points {
		op := command.OpUnlock
		if i%2 == 1 {
			op = command.OpLock
		}
		body, s := d.sign(0, op, command.Args{})
		c = d.spawn("GATEWAYD_TEST_KILL_AT="+point, "GATEWAYD_TEST_KILL_ID="+bonds.CommandID(body.CommandID).String())
		oc.publish(s)
		err := c.wait(60 * time.Second)
		if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("%s: the daemon ended with %v, want killed by its own SIGKILL", point, err)
		}
		c = d.spawn()
		oc.until(point+": the result", func() bool { return len(oc.resultsFor(body.CommandID)) > 0 })
		moves++
		if m := d.locks[0].act.Moves(); m != moves {
			t.Errorf("%s: the bolt moved %d times in all, want %d (once per command)", point, m, moves)
		}
		oc.mu.Lock()
		rs := oc.resultsFor(body.CommandID)
		t.Logf("%s: %d result(s) on the wire, the first %s/%s after %d attempt(s): %s", point, len(rs), rs[0].State, rs[0].Status, rs[0].Attempts, rs[0].Detail)
		for _, r := range rs {
			if r.State != bonds.StateSucceeded || r.Status != "ok" {
				t.Errorf("%s: result %s/%s (%s)", point, r.State, r.Status, r.Detail)
			}
			if point == killBeforeOutcome && !strings.Contains(r.Detail, "duplicate_command") {
				t.Errorf("%s: detail %q, want the lock's duplicate_command (it had run it)", point, r.Detail)
			}
		}
		oc.mu.Unlock()
		c.kill()
		if err := bonds.CheckFile(t.Context(), d.cfg.Database.Path, bonds.Options{}); err != nil {
			t.Errorf("%s: database after the kill and restart: %v", point, err)
		}
	}
}
