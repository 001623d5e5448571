package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/internal/backoff"
	"github.com/gatewayd/gatewayd/systemd"
)

// ErrTemporary is returned by Run when the database could not be opened
// for a reason that may pass by itself: its file system is read-only (a
// remount after an SD card error), full, or failing. Run retries for
// Options.OpenRetryFor first; the command then exits 75 (EX_TEMPFAIL),
// which systemd restarts, unlike ErrConfig's 78.
var ErrTemporary = errors.New("temporarily unable to start")

// DefaultOpenRetryFor is the default of Options.OpenRetryFor: well under
// the unit's TimeoutStartSec (60 s), so that gatewayd exits by itself and
// systemd restarts it, rather than systemd killing a start that hangs.
const DefaultOpenRetryFor = 40 * time.Second

// transientFS reports whether err is a file-system condition that may
// pass without anyone changing the configuration.
func transientFS(err error) bool {
	for _, e := range []error{syscall.EROFS, syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// openDatabase opens the database, retrying while its file system is
// read-only, full or failing (transientFS), for up to opts.OpenRetryFor;
// it says so in the log and in systemd's STATUS=. Any other refusal is
// final (ErrConfig), as are those of the state directory's checks
// (openStateDB).
func openDatabase(ctx context.Context, opts Options, path string, bo bonds.Options, notify *systemd.Notifier, log *slog.Logger) (*bonds.DB, error) {
	open := opts.OpenDB
	if open == nil {
		open = bonds.Open
	}
	retryFor := opts.OpenRetryFor
	if retryFor <= 0 {
		retryFor = DefaultOpenRetryFor
	}
	start := time.Now()
	for attempt := 0; ; attempt++ {
		db, err := openStateDB(path, opts.Init, open, bo, log)
		switch {
		case err == nil:
			if attempt > 0 {
				log.Info("database open after its file system recovered", "path", path, "tries", attempt+1)
				_ = notify.Notify("STATUS=starting")
			}
			return db, nil
		case errors.Is(err, ErrConfig):
			return nil, err
		case errors.Is(err, bonds.ErrLocked):
			return nil, fmt.Errorf("%w (is another gatewayd running?)", err)
		case !transientFS(err):
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		if time.Since(start) >= retryFor {
			_ = notify.Notify("STATUS=exiting: the database's file system is still not writable; systemd restarts gatewayd")
			return nil, fmt.Errorf("%w: the database's file system stayed unusable for %v (read-only, full or failing); "+
				"exiting so that systemd restarts gatewayd: %w", ErrTemporary, retryFor.Round(time.Second), err)
		}
		wait := backoff.Delay(250*time.Millisecond, 5*time.Second, attempt)
		log.Error("database's file system not usable (read-only, full or failing): retrying; this is not a configuration error",
			"path", path, "tries", attempt+1, "retry_in", wait, "gives_up_in", (retryFor - time.Since(start)).Round(time.Second), "err", err)
		_ = notify.Notify("STATUS=waiting for the database: " + fsCondition(err) + "; retrying")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: stopped while waiting for the database: %w", ErrTemporary, err)
		case <-t.C:
		}
	}
}

// fsCondition names a transientFS condition for STATUS=.
func fsCondition(err error) string {
	switch {
	case errors.Is(err, syscall.EROFS):
		return "its file system is read-only"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "its file system is full"
	default:
		return "its file system fails (" + err.Error() + ")"
	}
}
