package audit

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/lock/flash"
)

// The lock's own records as firmware/lock keys them (docs/protocol.md
// §14.1); this package cannot import firmware/lock, which imports it.
const (
	keyState       = 0x0001
	keyBonds       = 0x0002
	keyRevocations = 0x0003
	keySlotBase    = 0x0100
)

// Sizes of the state record in the sizing loads: 1.5 KiB of counters and
// recent command IDs (typical), or the full table of 32 signers (about
// 1.9 KiB, §13.4); each plus the forget horizon (map key 7, an 8-byte
// unsigned integer: 1 + 9 bytes of CBOR), which a lock that once forgot a
// signer carries for ever.
const (
	stateTypical = 1536 + 10
	stateFull    = 1946 + 10
)

// revocationRecord is a full revocation list as the lock stores it: a CBOR
// byte string (3-byte head) of cred.MaxRevocationsSize bytes.
const revocationRecord = cred.MaxRevocationsSize + 3

// lockLike runs the lock's write pattern on a store of the given pages: a
// full revocation list and a bonds record written once, 16 user records, a
// full default ring of command entries (16-byte actors, the largest) and
// the state record of stateSize bytes (with the forget horizon) rewritten
// every stateEvery entries; it returns the first error.
func lockLike(t *testing.T, pages, stateSize, stateEvery int) error {
	st, err := flash.Open(filepath.Join(t.TempDir(), "flash.img"), flash.Options{Pages: pages})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Put(keyRevocations, bytes.Repeat([]byte{0xee}, revocationRecord)); err != nil {
		return err
	}
	// Four bonded gateways' addresses: a CBOR array of 17-character strings.
	if err := st.Put(keyBonds, bytes.Repeat([]byte{0xb0}, 1+4*18)); err != nil {
		return err
	}
	for slot := range uint16(16) {
		if err := st.Put(keySlotBase+slot, bytes.Repeat([]byte{byte(slot)}, 120)); err != nil {
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
		if i%stateEvery == 0 {
			if err := st.Put(keyState, bytes.Repeat([]byte{byte(i)}, stateSize)); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestSizing backs docs/protocol.md §14.7: with a full revocation list,
// the bonds record and the forget horizon, the default ring and the lock's
// records fit 11 pages of 4 KiB and not 10 with a 1.5 KiB state record
// rewritten every 5 entries; with the full signer table rewritten after
// every entry they need 13, not 12 (the document asks for 13).
func TestSizing(t *testing.T) {
	for _, c := range []struct {
		name              string
		state, every, fit int
	}{
		{"typical", stateTypical, 5, 11},
		{"full signer table", stateFull, 1, 13},
	} {
		if err := lockLike(t, c.fit, c.state, c.every); err != nil {
			t.Fatalf("%s: %d pages: %v", c.name, c.fit, err)
		}
		if err := lockLike(t, c.fit-1, c.state, c.every); !errors.Is(err, flash.ErrFull) {
			t.Fatalf("%s: %d pages: %v, want ErrFull", c.name, c.fit-1, err)
		}
	}
}
