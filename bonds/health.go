package bonds

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"
)

// writeHealth is the outcome of the last commit.
type writeHealth struct {
	lastOK time.Time // the last commit that succeeded
	err    error     // the last commit's error, nil when it succeeded
}

func (db *DB) recordCommit(err error) {
	h := writeHealth{err: err}
	if err == nil {
		h.lastOK = db.opts.Now()
	} else if prev := db.health.Load(); prev != nil {
		h.lastOK = prev.lastOK
	}
	db.health.Store(&h)
}

// WriteHealth returns when a write last committed (zero before the first
// since Open) and, if the latest commit failed, its error: a readiness
// check's view of the disk.
func (db *DB) WriteHealth() (lastOK time.Time, err error) {
	db.mu.RLock()
	closed := db.closed
	db.mu.RUnlock()
	if closed {
		return time.Time{}, ErrClosed
	}
	if h := db.health.Load(); h != nil {
		return h.lastOK, h.err
	}
	return time.Time{}, nil
}

// Probe commits a write transaction that changes nothing but still
// writes and syncs the file's meta page: proof the disk takes writes, for
// a readiness check after a quiet while. Its outcome is what WriteHealth
// reports next.
func (db *DB) Probe(ctx context.Context) error {
	return db.write(ctx, func(*bolt.Tx) error { return nil })
}
