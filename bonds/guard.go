package bonds

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// bbolt trusts the pages it reads: a garbled page header, element count or
// page number makes it panic (its assertions, slice bounds) or read outside
// its memory map, which is a fault (SIGSEGV, SIGBUS) that kills the process
// unless the goroutine asked for faults to be panics. Every bbolt call on a
// file therefore runs under guard: faults become panics, and a panic
// becomes ErrCorrupt with the operator's way out, never a crash.

// errPanicked marks a recovered panic as the cause of an ErrCorrupt.
var errPanicked = errors.New("bbolt panicked")

// guard runs fn with memory faults turned into panics (for this goroutine,
// restored after) and any panic returned as an error wrapping errPanicked.
// bbolt's View and Update roll their transaction back when fn panics, so
// the file and bbolt's locks are left as they were.
func guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", errPanicked, p)
		}
	}()
	return fn()
}

// fail records that the open database is corrupt (a panic under guard
// while it was in use): from now on every method returns ErrCorrupt, and
// Failed is closed, so the daemon stops in order instead of crashing or
// writing to a file it cannot read. It returns the error to hand back.
func (db *DB) fail(cause error) error {
	err := fmt.Errorf("bonds: %s: %w: %v. gatewayd stopped using the file, and stops. "+
		"Run `gatewayd db check -db %s` to see what is wrong; "+
		"if it can still be read, save a copy with `gatewayd db backup -db %s FILE`; "+
		"then restore the newest good backup over %s (mode 0600) and start gatewayd. "+
		"If db check finds nothing, this is a bug in gatewayd: report it with the log",
		db.path, ErrCorrupt, cause, db.path, db.path, db.path)
	db.failOnce.Do(func() {
		db.failErr.Store(&err)
		close(db.failed)
		db.log.Error("database unreadable", "path", db.path, "err", cause)
	})
	return *db.failErr.Load()
}

// Failed is closed when the database turned out to be corrupt while in
// use (bbolt panicked reading it); Err then says why and what to do.
// Every later call returns that error, wrapping ErrCorrupt.
func (db *DB) Failed() <-chan struct{} { return db.failed }

// Err is the error that closed Failed, or nil.
func (db *DB) Err() error {
	if p := db.failErr.Load(); p != nil {
		return *p
	}
	return nil
}
