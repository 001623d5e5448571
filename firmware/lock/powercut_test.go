package lock

import (
	"encoding/hex"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
)

// TestAttackPowerCutBetweenCounterWriteAndActuation cuts the power at the
// worst moment: the counter is on flash, the bolt has not moved. After the
// reboot the command is spent — reported as interrupted, never executed —
// and its counter is still there, so nothing can replay it.
func TestAttackPowerCutBetweenCounterWriteAndActuation(t *testing.T) {
	e := newEnv(t)
	signer := hex.EncodeToString(e.operator.Cert.KID)
	b := e.body(command.OpUnlock, command.Args{})
	signed := e.sign(e.operator, b)

	var durable state
	e.act.BeforeMove = func(command.LockState) error {
		// What is on flash when the motor is about to move?
		if err := stateDec.Unmarshal(e.store.Raw(keyState), &durable); err != nil {
			t.Errorf("state record: %v", err)
		}
		e.store.Cut()
		return locktest.ErrPowerCut
	}
	c := e.mustConnect(e.gateway, gwAddr)
	_ = do(t, c, command.Request{Op: command.OpUnlock, Signed: signed}) // the gateway would see no answer
	if durable.Counters[signer].Counter != b.Counter {
		t.Fatalf("counter on flash before the move: %d, want %d", durable.Counters[signer].Counter, b.Counter)
	}
	if durable.Pending == nil || string(durable.Pending.ID) != string(b.CommandID[:]) {
		t.Fatal("the command was not marked pending before the move")
	}

	// Reboot from what the flash holds.
	e.store = e.store.Reboot()
	e.act.BeforeMove = nil
	e.boot()
	c = e.mustConnect(e.gateway, gwAddr)
	r := do(t, c, command.Request{Op: command.OpUnlock, Signed: signed})
	wantStatus(t, r, command.StatusDuplicateCommand)
	if orig, err := r.Duplicate(); err != nil || orig != command.StatusInterrupted {
		t.Fatalf("original status %v %v, want interrupted", orig, err)
	}
	// The same counter under a new command ID is a replay.
	again := b
	again.CommandID[0] ^= 0xff
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, again)}), command.StatusReplay)
	if e.act.Moves() != 0 {
		t.Fatal("the bolt moved")
	}
	// A freshly signed command works.
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, e.body(command.OpUnlock, command.Args{}))}), command.StatusOK)
	if e.act.Moves() != 1 {
		t.Fatal("a fresh command did not run")
	}
}

// TestPowerCutBeforeCounterWrite: if the power dies while the counter is
// being written, nothing happened: the bolt did not move and the same
// command runs after the reboot.
func TestPowerCutBeforeCounterWrite(t *testing.T) {
	e := newEnv(t)
	signed := e.sign(e.operator, e.body(command.OpUnlock, command.Args{}))
	e.store.Cut()
	c := e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: signed}), command.StatusInternal)
	if e.act.Moves() != 0 {
		t.Fatal("the bolt moved without a durable counter")
	}
	e.store = e.store.Reboot()
	e.boot()
	c = e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: signed}), command.StatusOK)
}
