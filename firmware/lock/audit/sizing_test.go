package audit

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/lock/flash"
)

// lockLike runs the lock's write pattern on a store of the given pages: a
// full default ring of command entries (16-byte actors, the largest), a
// 1.5 KiB state record rewritten every few entries and 16 user records,
// and returns the first error.
func lockLike(t *testing.T, pages int) error {
	st, err := flash.Open(filepath.Join(t.TempDir(), "flash.img"), flash.Options{Pages: pages})
	if err != nil {
		return err
	}
	defer st.Close()
	for slot := range uint16(16) {
		if err := st.Put(0x0100+slot, bytes.Repeat([]byte{byte(slot)}, 120)); err != nil {
			return err
		}
	}
	l, err := Open(st, Options{LockID: lockA, Now: clock()})
	if err != nil {
		return err
	}
	for i := range 3 * DefaultSize {
		e := Entry{Event: EventCommandOK, Actor: bytes.Repeat([]byte{1}, MaxActor), Op: 2,
			CommandID: bytes.Repeat([]byte{byte(i)}, CommandIDSize)}
		if _, err := l.Append(e); err != nil {
			return err
		}
		if i%5 == 0 {
			if err := st.Put(0x0001, bytes.Repeat([]byte{byte(i)}, 1536)); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestSizing backs docs/protocol.md §14.7: the default ring and
// the lock's records fit 11 pages of 4 KiB, not 10 (the document asks for
// 12).
func TestSizing(t *testing.T) {
	if err := lockLike(t, 11); err != nil {
		t.Fatalf("11 pages: %v", err)
	}
	if err := lockLike(t, 10); !errors.Is(err, flash.ErrFull) {
		t.Fatalf("10 pages: %v, want ErrFull", err)
	}
}
