package bonds

import (
	"errors"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestFailCommitSeam: Options.FailCommit fails commits as a full disk
// would: the writer gets the error (errors.Is finds ENOSPC), nothing of the
// transaction is written (the ID index neither), and once the seam lets
// commits through the same write succeeds.
func TestFailCommitSeam(t *testing.T) {
	var fail atomic.Bool
	db, _ := openTest(t, Options{NoSync: true, PruneInterval: -1, FailCommit: func() error {
		if fail.Load() {
			return syscall.ENOSPC
		}
		return nil
	}})
	c := testCommand(1)
	fail.Store(true)
	if _, err := db.Append(bg, c); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full disk: %v, want ENOSPC", err)
	}
	if _, err := db.Entry(bg, c.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("entry after a failed commit: %v, want ErrNotFound", err)
	}
	if _, _, err := db.TransitionBatch(bg, []TransitionReq{{ID: c.ID, To: StateQueued}}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("batch on a full disk: %v, want ENOSPC", err)
	}
	fail.Store(false)
	if _, err := db.Append(bg, c); err != nil {
		t.Fatalf("append after the disk recovered: %v", err)
	}
	fail.Store(true)
	if _, err := db.Transition(bg, c.ID, StateQueued, nil); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("transition on a full disk: %v, want ENOSPC", err)
	}
	if e, err := db.Entry(bg, c.ID); err != nil || e.State != StateReceived {
		t.Fatalf("entry after a failed transition: %v %v, want received", e.State, err)
	}
	fail.Store(false)
}
