// Package fleet carries journaled commands to locks. It owns the scheduler
// between the command journal (bonds) and the locks: per-lock queues,
// sessions, retries with backoff, expiry, and one result per command
// written into the journal's outbox.
//
// # What it does with a command
//
// The MQTT intake appends a command to the journal durably (bonds.DB.Append,
// state received) and then hands the entry to [Scheduler.Submit], or
// hands it to [Scheduler.SubmitEarly] while the append commits and tells
// it when the append is durable: the scheduler may connect to the lock and
// run the handshake meanwhile, but sends the command (and writes anything
// about it) only once it is durable, and drops it if the append did not
// journal it as new; at
// start, [Scheduler.Start] resumes every entry the journal still holds as
// received, queued or running (bonds.DB.Pending). What the scheduler does
// with a command until its outcome stays in memory: admission into its
// lock's queue, each attempt (a session's connect and request), a
// retryable link error that puts it back. The journal keeps the entry as
// it arrived, and the outcome is one write, Journal.TransitionBatch, with
// the transitions of the journal's state machine that lead to it:
//
//   - received → queued → running → succeeded when the lock answers ok,
//     → failed for any other status of the lock (the result's Status is
//     the status name) or for a link error that is not retryable (the
//     result's Detail is the error's text); the move to running counts
//     every attempt made (bonds.TransitionReq.Attempts);
//   - received → expired when its not-after time passes before it could
//     run, with the attempts made (none: without connecting to the lock
//     for it);
//   - received → rejected for an operation the scheduler cannot carry.
//
// A crash before the outcome's write leaves the entry received (queued or
// running only in a journal an older version wrote), and recovery treats
// those states alike: the command is sent again. That is safe because the
// lock executes a command ID at most once and answers a repeated one with
// duplicate_command carrying the status of the first run, which the
// scheduler reports as that status. What a crash loses is the count of
// the attempt it interrupted (docs/database.md, "Durability").
//
// A terminal transition fills in the entry's Result (status, detail, the
// lock's encoded result as Payload) and the journal puts it in the outbox
// in the same transaction; [Options].OnResult then wakes the publisher.
//
// Journal writes are what wears the gateway's SD card, and each is an
// fsync on the way of the result: a command costs two before its result is
// published, the intake's append (before the broker's PUBACK) and its
// outcome; concurrent outcomes of different locks share a commit (bonds'
// group commit), and the commands expired or rejected at admission
// together share one write.
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
