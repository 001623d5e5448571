// Package operator is what fleet operators see of a gateway over MQTT: the
// topic layout, the message formats, the intake of signed commands and
// the outbox publisher of their results. The contract, for operators and
// backend developers, is docs/mqtt.md.
//
// # Intake
//
// An [Intake] takes the messages of the gateway's command topic (the
// daemon adapts the broker session's messages to [Message]). For each, in
// this order: the size (at most command.MaxSignedSize, before any
// decoding); [command.Peek] for the claimed lock and operation; then
// [command.Verifier.Verify] with the trusted fleet roots, that lock ID and
// that operation. A command whose signature did not verify is never
// journaled: it is refused with a notice on the rejected topic, and the
// message is acknowledged only once the broker acknowledged the notice.
// Journaling it would let any MQTT client squat a command ID that the
// real, signed command would then find taken. An authentic command is
// appended to the journal (bonds), which returns only after fsync, and
// only then acknowledged; one that is authentic but cannot run (expired,
// or a per-signer counter the lock already passed) is journaled and moved
// at once to its terminal state, so it gets exactly one result like any
// other. A command ID already journaled is acknowledged with a duplicate
// notice and no second result.
//
// Verification runs concurrently; one goroutine then journals the
// verified commands in the order the messages were enqueued, in batches
// (one transaction and one fsync for everything verified while the
// previous batch committed), so a crash keeps a prefix of that order and
// never a later command without an earlier one. With
// [IntakeOptions].OnArrival, a command is handed to the scheduler before
// its batch commits, to connect to its lock meanwhile, and told as soon as
// it is durable. Acknowledgements are
// released strictly in the order the messages were enqueued, as MQTT
// 3.1.1 §4.6 requires of PUBACKs.
//
// # Outbox
//
// An [Outbox] publishes the journal's outbox, oldest first, to the result
// topic with QoS 1, and removes a result only after the broker
// acknowledged it: what the broker acknowledged within
// [OutboxOptions].AckDelay (a second) goes in one write, which therefore
// is not in the way of the next command's append ([AckBatcher], which
// *bonds.DB implements; Journal.Ack per result otherwise). Results therefore survive restarts and are published at
// least once; subscribers deduplicate by command ID. A result the lock
// signed carries its signature (kept in the journaled lock result, so a
// republish after a restart still has it) and the lock's credential from
// its record.
//
// # Verifying results
//
// [VerifyResult] is for backends: it checks a result message's lock
// signature (docs/protocol.md §12.7.5) against the fleet roots and the
// command the backend sent, and says why a result is unsigned or refused.
//
// # Presence
//
// A [Presence] publishes, retained, the locks the gateway hears (lock ID,
// address, RSSI, battery, locked, last seen) on P/gw/G/locks, so that the
// backend knows which gateway to route a lock's commands to: on a change
// of the set or of a lock's state, at most every MinInterval, and every
// Refresh regardless.
//
// # Revocations
//
// [Revocations] holds the newest fleet revocation list (docs/protocol.md
// §5.11) from the retained P/fleet/revocations topic: verified under the
// fleet roots, kept only if its serial is higher, stored (a file beside
// the database, internal/atomicfile) before it is used. The intake refuses
// commands of revoked signers (IntakeOptions.Revoked); the daemon's link
// hands the list to locks that hold an older one.
//
// # Audit events
//
// An [AuditPublisher] publishes the audit entries the scheduler read from
// locks and queued in the database (bonds.DB.AdvanceAudit) on
// P/gw/G/events, QoS 1, each lock's in order, one message each
// ([AuditMessage]), and removes them once the broker acknowledged them
// (bonds.DB.AckAudit): at least once, across restarts; subscribers
// deduplicate by lock ID and seq.
//
// # Imports
//
// It may import bonds, firmware/command, firmware/cred, firmware/lock/audit,
// internal/backoff, internal/atomicfile, the standard
// library and client_golang (metrics). It does not import the MQTT client
// (paho) or bluez: the broker is reached through the [Publisher]
// interface and [Message], which the daemon adapts.
package operator
