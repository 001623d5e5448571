package lock

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
	"github.com/gatewayd/gatewayd/firmware/lock/flash"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
)

// bootOnFlash starts e's lock on the flash image at path, with its audit
// log on the same flash, as the nRF52832 would.
func (e *env) bootOnFlash(t *testing.T, path string, faults flash.Faults) (*flash.File, *locktest.Actuator, error) {
	t.Helper()
	// Small pages and a small audit ring (sized to fit), so that the run
	// below also garbage-collects.
	f, err := flash.Open(path, flash.Options{PageSize: 1024, Pages: 8, Faults: faults})
	if err != nil {
		return nil, nil, err
	}
	act := &locktest.Actuator{}
	opts := e.opts
	opts.Store, opts.Actuator = f, act
	log, err := audit.Open(f, audit.Options{Size: 8, LockID: e.lockP.Cert.KID, Now: func() time.Time { return e.fleet.Now }})
	if err != nil {
		return f, act, err
	}
	opts.Audit = AuditLog(log)
	l, err := New(opts)
	if err != nil {
		return f, act, err
	}
	e.lock = l
	return f, act, nil
}

// TestPowerCutAtEveryFlashWrite runs sixteen signed commands on a lock whose
// flash loses power at device operation k, for every k the run performs,
// reboots it from the image, and checks that no command ran twice, no
// counter of a command that took effect was lost, and the lock works.
func TestPowerCutAtEveryFlashWrite(t *testing.T) {
	// Refusals of replays below must not lock the gateway out.
	e := newEnv(t, func(o *Options) { o.Lockout = LockoutPolicy{Free: 1 << 20, GlobalFailures: 1 << 20} })
	type cmd struct {
		op     command.Op
		signed []byte
		body   command.Body
	}
	var cmds []cmd
	for i := range 16 {
		op := command.OpUnlock
		if i%2 == 1 {
			op = command.OpLock
		}
		b := e.body(op, command.Args{})
		cmds = append(cmds, cmd{op, e.sign(e.operator, b), b})
	}
	req := func(c cmd) []byte {
		b, err := command.MarshalRequest(&command.Request{Op: c.op, RequestID: 1, Signed: c.signed})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	run := func(path string, faults flash.Faults) (moved []bool) {
		_, act, err := e.bootOnFlash(t, path, faults)
		if err != nil {
			return nil // the cut came during boot
		}
		for _, c := range cmds {
			before := act.Moves()
			e.lock.Handle(e.gateway.Cert, Peer{Address: gwAddr}, req(c))
			moved = append(moved, act.Moves() > before)
		}
		return moved
	}

	// Count the device operations of a whole run.
	ops := 0
	kinds := map[flash.OpKind]int{}
	run(filepath.Join(t.TempDir(), "count.img"), flash.Faults{Cut: func(op flash.Op) bool { ops = max(ops, op.Index+1); kinds[op.Kind]++; return false }})
	if ops < 10 {
		t.Fatalf("only %d device operations", ops)
	}

	for k := 0; k < ops; k++ {
		path := filepath.Join(t.TempDir(), "flash.img")
		moved := run(path, flash.Faults{Cut: flash.CutAt(k), Seed: uint64(k)})
		_, act, err := e.bootOnFlash(t, path, flash.Faults{})
		if err != nil {
			t.Fatalf("cut at op %d: reboot failed: %v", k, err)
		}
		for i, c := range cmds {
			before := act.Moves()
			res, err := command.ParseResult(c.op, e.lock.Handle(e.gateway.Cert, Peer{Address: gwAddr}, req(c)))
			if err != nil {
				t.Fatal(err)
			}
			ranBefore := i < len(moved) && moved[i]
			if ranBefore && act.Moves() > before {
				t.Fatalf("cut at op %d: command %d ran before the cut and again after the reboot", k, i)
			}
			if ranBefore && res.Status != command.StatusDuplicateCommand && res.Status != command.StatusReplay {
				t.Fatalf("cut at op %d: command %d replayed after reboot: %v", k, i, res.Status)
			}
			if ranBefore {
				// Its counter is durable: the same counter under a new ID
				// is a replay.
				b := c.body
				b.CommandID[0] ^= 0x5a
				again := cmd{c.op, e.sign(e.operator, b), b}
				r2, _ := command.ParseResult(c.op, e.lock.Handle(e.gateway.Cert, Peer{Address: gwAddr}, req(again)))
				if r2 == nil || r2.Status != command.StatusReplay {
					t.Fatalf("cut at op %d: counter of command %d lost after reboot (%v)", k, i, r2)
				}
			}
		}
		// The lock still takes new commands.
		b := e.body(command.OpLock, command.Args{})
		fresh := cmd{command.OpLock, e.sign(e.operator, b), b}
		r, _ := command.ParseResult(command.OpLock, e.lock.Handle(e.gateway.Cert, Peer{Address: gwAddr}, req(fresh)))
		if r == nil || r.Status != command.StatusOK {
			t.Fatalf("cut at op %d: a fresh command after reboot: %v", k, r)
		}
	}
	t.Logf("power cut at each of %d flash operations (%v)", ops, kinds)
}
