// Package fleet carries journaled commands to locks. It owns the scheduler
// between the command journal (bonds) and the locks: per-lock queues,
// sessions, retries with backoff, expiry, and one result per command
// written into the journal's outbox.
//
// # What it does with a command
//
// The MQTT intake appends a command to the journal durably (bonds.DB.Append)
// and then hands the entry to [Scheduler.Submit]; at start,
// [Scheduler.Start] resumes every entry the journal still holds as
// received, queued or running (bonds.DB.Pending). The scheduler then moves
// each entry through the journal's state machine with
// Journal.TransitionBatch, one or several transitions in one write:
//
//   - received → queued when it is admitted (a running entry found at start
//     was interrupted by a crash or power loss: it goes back to queued, and
//     is sent again; the lock executes a command ID at most once and
//     answers duplicate_command carrying the status of the first run, which
//     the scheduler reports as that status);
//   - queued → running when a session to its lock begins for it (before the
//     connect for the first command of a session, before the request for
//     the others): each entry into running is an attempt;
//   - running → succeeded when the lock answers ok, running → failed for
//     any other status of the lock (the result's Status is the status
//     name), or for a link error that is not retryable (the result's Detail
//     is the error's text);
//   - running → queued for a retryable link error: the outcome of a request
//     in flight is unknown, and sending it again is safe;
//   - queued (or received) → expired when its not-after time passes before
//     it could run, without connecting to the lock for it;
//   - received → rejected for an operation the scheduler cannot carry.
//
// A terminal transition fills in the entry's Result (status, detail, the
// lock's encoded result as Payload) and the journal puts it in the outbox
// in the same transaction; [Options].OnResult then wakes the publisher.
//
// Journal writes are what wears the gateway's SD card, so transitions that
// happen together share one write (one transaction, one fsync): the
// entries admitted together go to queued (or are rejected or expired) in
// one TransitionBatch, and within a session the result of one command and
// the start (running) of the next are one TransitionBatch. The first
// command of a session goes to running in its own write before the
// connect, so an attempt is counted before any radio work.
//
// # Journal faults
//
// A journal write that fails as a whole (a full or read-only disk, EPERM,
// EIO) is tried again with a short backoff (50 ms doubling to 1 s) until
// it is written, by the goroutine that made it: the job stays owned, its
// lock's later commands wait behind it in order, and every command goes on
// within about a second of the disk's recovery. A failed write is counted
// in gatewayd_fleet_journal_write_failures_total. Only Close ends the
// retries; the entries then stay pending for the next Start.
//
// # Sessions
//
// Commands for one lock run in receive order (FIFO) over one session at a
// time: one goroutine per lock that has work owns its queue, so a lock
// never has two sessions and a command never runs twice at once.
// Different locks run in parallel, up to MaxSessions sessions (a Raspberry
// Pi's controller holds about 4 to 10 connections), granted by priority
// (below). The kernel allows one
// LE connection attempt per adapter at a time, so Link.Dial (the connect)
// runs under one "connect slot", a mutex; a Session that implements
// [Handshaker] has its secure-channel handshake run after the connect slot
// is released, so one lock's handshake overlaps with the next lock's
// connect. A lock that fails with a retryable error waits a jittered,
// growing backoff ([Options].Backoff) before the next connect; but a lock
// heard advertising since the failure ([Scheduler.Wake], which the daemon
// calls for every advertisement) is tried again [Options].HeardRetry (1 s)
// after it, however long the backoff has grown through repeated radio
// faults.
//
// # Priorities
//
// Session slots and the connect slot are granted by class, not in arrival
// order (see docs/mqtt.md, "Order and priority"): lock and unlock
// (urgent) before user management (add-user, remove-user, list-users,
// and the other operator operations) before status and audit reads
// (background). A freed slot goes to the waiting lock whose queue has the
// most urgent class, the longest waiting first among equals.
//
// A lock's commands are never reordered by class: a signer's commands for
// one lock reach it in counter order, and the lock refuses a counter
// below one it accepted (replay), so running an unlock before the status
// queued ahead of it would not be faster, only wrong. A lock's queue
// therefore has the class of its most urgent command, running or
// waiting, not its head's (priority inheritance): the status ahead of an
// unlock runs at the unlock's priority, instead of leaving the unlock
// behind every other lock's background work.
//
// A session begun for less urgent work ends at a command boundary, never
// within a command, when a lock of a more urgent class waits for a slot
// (gatewayd_fleet_session_yields_total); its lock waits for a slot again,
// its commands in order. A session begun for urgent work carries its
// lock's following commands (up to MaxPerSession): ending it would cost a
// second connect, the serial resource, for a lock already connected. The
// audit read at a session's end is background and stops for more urgent
// work.
//
// Background work is never starved: a command that waited
// [Options].AgeAfter (30 s) in its lock's queue counts as urgent, and,
// having waited longest, takes the next slot.
//
// # Audit logs
//
// With [Options].Audit, a session ends, after its commands, with reading
// the lock's audit log (read-audit, on the gateway's own credential): a
// few pages from the lock's cursor, each verified against the hash chain
// the gateway holds (firmware/lock/audit) and queued for the broker with
// the cursor's move in one write (bonds.DB.AdvanceAudit). A page that does
// not extend the chain (an altered, reordered, withheld or rewound entry)
// is counted by reason and logged, and the cursor stays. A lock heard with
// no command for it gets a session of its own every AuditOptions.Interval.
// Reading stops when a command for the lock is waiting.
//
// # Imports
//
// It may import bonds, firmware/command, firmware/lock/audit, internal/backoff, the standard library, the
// Prometheus client and golang.org/x/sync. It does not import bluez or the
// MQTT client: the daemon (cmd/gatewayd) wires a [Link] over the BlueZ
// client and calls Submit from its MQTT intake. fleettest holds fakes: a
// scripted Link and RefLink, which hosts real reference locks in memory.
package fleet
