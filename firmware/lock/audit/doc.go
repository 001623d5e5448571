// Package audit is the lock's audit log: a ring of entries (default 256)
// with sequence numbers and a hash chain, kept in a flash.Store, read by
// gateways with the read-audit command, and verified by them. It owns the
// entry and page formats (docs/protocol.md §14.5) and both sides:
// the lock's [Log] and the reader's [Verify] and [Cursor].
//
// # Entries and the chain
//
// An [Entry] is a CBOR map {1: seq, 2: time, 3: event, 4: actor, 5: op,
// 6: command_id, 7: status, 8: prev_hash} in deterministic encoding. Its
// hash is SHA-256 of that encoding. prev_hash of entry n is the hash of
// entry n-1; entry 0's is [Genesis](lock ID), so two locks' chains never
// meet. seq starts at 0, grows by one per entry and is never reused, across
// reboots: it is recovered from the stored entries.
//
// # Storage
//
// Entry seq is one record of the store, key [KeySlot] + seq mod Size; a
// meta record at [KeyMeta] holds the layout (version, size) and a floor
// below which entries are ignored. Append is one Put, so a power cut leaves
// the entry either fully there or absent; the ring overwrites the oldest
// entry. [Open] finds the newest entry, walks the chain back through the
// ring, and records what it had to repair ([EventPowerCutRecovered],
// [EventLogRepaired]) as entries of the log itself.
//
// # Reading
//
// [Log.Page] returns a [Page] {1: oldest_seq, 2: next_seq, 3: [entries],
// 4: head_hash, ? 5: signature}: the read-audit result data. A reader keeps
// a [Cursor] per lock (next seq, last hash), asks for pages from
// Cursor.Next, and calls [Cursor.Advance], which verifies the page with
// [Verify] and moves on. Verify detects an altered entry, a removed entry
// (ErrGap), reordering, a page stitched from two chains and a truncated
// chain (ErrTampered). With a Signer the lock also signs (next_seq,
// head_hash) per page; [VerifySignature] checks it.
//
// What the chain proves: a page verified against a cursor (or a signed
// head) is exactly the lock's log, in order, with nothing altered or
// removed since the reader's previous page. It cannot stop someone who can
// rewrite the flash from recomputing every hash after an entry the reader
// has not yet fetched: the hash is unkeyed, and an nRF52832 has no secret
// storage to key it with.
//
// The package may import the standard library, fxamacker/cbor and
// firmware/lock/flash.
package audit
