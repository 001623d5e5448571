package bonds

// Progress is the database's part of the daemon's progress watchdog:
// waiting is the writes waiting for their commit now, done the
// transactions committed so far. A committer stuck in a commit (an fsync
// that never returns) has writes waiting and commits nothing.
func (db *DB) Progress() (waiting int, done uint64) {
	return int(db.inflight.Load()), db.commits.Load()
}
