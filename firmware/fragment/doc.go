// Package fragment splits protocol messages into fragments that each fit one
// BLE ATT value (a Write value or a Handle Value Notification value) and
// reassembles them on the other side, for ATT MTUs from 23 up to 517.
//
// It owns the fragment wire format and the receiver's rules, specified for
// the lock firmware in docs/protocol.md §2:
//
//	byte 0     msg_id     uint8, per direction, incremented mod 256 per message
//	bytes 1-2  offset     uint16 big-endian, position of the payload in the message
//	bytes 3-4  total_len  uint16 big-endian, length of the whole message, 1..MaxMessage
//	bytes 5..  payload    at least 1 byte, offset+len(payload) <= total_len
//
// A fragment is at most ATT_MTU-3 bytes, so it carries at most ATT_MTU-8
// payload bytes. Fragments may arrive out of order (with EATT, BlueZ spreads
// ATT traffic over several bearers) and may be duplicated; a [Reassembler]
// copes with both, refuses every malformed or contradictory fragment with an
// error (never a panic), holds a bounded amount of memory, and delivers each
// message exactly once.
//
// The sending side is [Split] (or [AppendFragment] for a sender that builds
// one fragment at a time without allocating). The receiving side is
// [Reassembler]: one per connection and direction.
//
// The package may import only the standard library: it is the code a lock's
// firmware mirrors, so it knows nothing of the gateway, of BlueZ or of the
// messages it carries.
package fragment
