package bonds

import (
	bolt "go.etcd.io/bbolt"
)

// pendingHint is what Open's page walk saw of the journal's unfinished
// entries: the keys of those whose state is not terminal (or not read by
// the fast path), at commit txid. The scheduler's Pending at start is on
// the way to READY, and with a busy replay window almost every entry is
// finished: as long as the file is at that commit (no write since Open,
// which Pending's own read transaction tells exactly), Pending reads only
// those keys instead of every entry again (issue 14). The first
// transaction that sees a later commit drops the hint.
type pendingHint struct {
	txid uint64
	keys [][]byte
}

// pendingHint returns the keys of the journal's entries that can be
// unfinished, if tx reads the commit Open walked.
func (db *DB) pendingHint(tx *bolt.Tx) ([][]byte, bool) {
	h := db.hint.Load()
	if h == nil {
		return nil, false
	}
	if uint64(tx.ID()) != h.txid {
		db.hint.CompareAndSwap(h, nil) // written since: never again
		return nil, false
	}
	return h.keys, true
}

// eachKey calls fn with each of keys (in order) and its value in b,
// skipping a key that is not there.
func eachKey(b *bolt.Bucket, keys [][]byte, fn func(k, v []byte) error) error {
	for _, k := range keys {
		if v := b.Get(k); v != nil {
			if err := fn(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}
