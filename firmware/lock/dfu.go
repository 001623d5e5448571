package lock

import (
	"fmt"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
)

// enterDFU runs an authorised enter-dfu (docs/protocol.md §13.10): the
// bike must be locked and the battery at or above the floor; then the
// init packet's hash goes to the bootloader's settings page, and the lock
// resets into its bootloader once the result is sent (Serve).
func (l *Lock) enterDFU(res *command.Result, fail func(error) *command.Result,
	ok func(audit.Event) *command.Result, initHash []byte) *command.Result {
	if l.opts.Bootloader == nil {
		return fail(fmt.Errorf("%w: this lock has no bootloader", command.ErrInternal))
	}
	if l.bolt != command.StateLocked {
		return fail(fmt.Errorf("%w: the bolt is %v: lock the bike first", command.ErrNotReady, l.bolt))
	}
	floor := l.opts.DFUBatteryFloor
	if floor == 0 {
		floor = DefaultDFUBatteryFloor
	}
	if res.Battery < floor {
		return fail(fmt.Errorf("%w: battery %d%%, below the %d%% a firmware update needs", command.ErrNotReady, res.Battery, floor))
	}
	var h [command.InitHashLen]byte
	if copy(h[:], initHash) != len(h) {
		return fail(fmt.Errorf("%w: init hash of %d bytes", command.ErrMalformed, len(initHash)))
	}
	if err := l.opts.Bootloader.AuthoriseDFU(h); err != nil {
		return fail(fmt.Errorf("%w: writing the bootloader's settings: %w", command.ErrInternal, err))
	}
	l.resetting = true
	return ok(audit.EventDFUEntered)
}

// takeReset reports, once, whether the lock must reset now that the
// result of an enter-dfu was sent; resetting, whether it is doing so.
func (l *Lock) takeReset() (reset, resetting bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.resetting && !l.resetTaken {
		l.resetTaken = true
		return true, true
	}
	return false, l.resetting
}
