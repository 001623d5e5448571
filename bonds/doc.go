// Package bonds is the gateway's database: one bbolt file that holds the
// locks (credential, BLE identity and bond state, last seen, battery,
// firmware, clock offset, per-signer counters), each lock's users (the
// state operators asked for against the state the lock confirmed), the
// command journal, the outbox of results the broker has not acknowledged
// yet, and an audit-log cursor per lock. It is what lets gatewayd promise
// that an acknowledged command is never lost and never runs twice, on a
// Raspberry Pi that loses power without warning and writes to a slow SD
// card. The schema, its encodings and invariants are in docs/database.md.
//
// It may import the standard library, bbolt and internal/atomicfile, nothing of the gateway:
// BlueZ is reached through the small Paired interface defined here, which
// the daemon satisfies with the bluez client.
//
// # Durability
//
// Append returns only after the journal entry is committed and fsynced;
// the MQTT layer acknowledges (PUBACK) a command then, and not before. A
// command ID already journalled, before or after a restart, is ErrDuplicate
// with the existing entry, for at least the replay window (Options) and
// until the command's own not-after time has passed. Reaching a terminal
// state writes the result into the outbox in the same transaction; results
// stay there, across restarts, until Ack.
//
// # Group commit
//
// Writes go through one committer goroutine (started by Open, stopped by
// Close). It blocks for one write, takes every write already queued and
// commits them in one bbolt transaction: one fsync. Under load, the writes
// that arrive during one fsync share the next, so fsyncs per command fall
// well below one. A lone writer (no commit running, nothing queued) runs
// the same one-write transaction in its own goroutine, saving the two
// goroutine hand-offs; it never waits for a timer. bbolt's own
// db.Batch is not used: it holds every batch for MaxBatchDelay (10 ms by
// default) unless MaxBatchSize writes arrive first, so a lone Append would
// wait 10 ms for nothing (BenchmarkBoltBatchSingle measures it), and a
// write that fails in its batch is retried the same way. Here, a write that
// fails is taken out, its batch-mates are committed again without it, and
// it runs alone. Stats counts commits and writes.
//
// UpdateSeen, called for every advertisement, does not write: its values
// are coalesced in memory and written every SeenFlushInterval and at Close.
//
// # Files
//
// A new file is created beside its path and linked in, mode 0600, so a
// crash never leaves an empty file. Open refuses a file the group or others
// can access (ErrPermissions), a file bbolt cannot read or whose schema
// meta is missing, including an empty file (ErrCorrupt, naming the db
// check, db backup and restore steps), and a newer schema
// (ErrSchemaTooNew). It never re-creates or truncates an existing file.
// Backup, BackupFile, Check, CheckFile, Export, ExportFile and Compact are
// what `gatewayd db …` runs.
package bonds
