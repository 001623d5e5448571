// Package command is the application layer of the lock protocol: the CBOR
// commands and results carried inside protected frames (a [Request] in a
// Request frame, a [Result] in a Response frame), and the operator-signed
// commands that carry end-to-end authorisation from an operator to the
// lock. The normative description, for the lock's C firmware as much as for
// this code, is docs/protocol.md §12 (what the lock does with a request, in
// order, is §13).
//
// Both ends use it. The gateway builds requests, checks a signed command
// with a [Verifier] set to the target lock's ID before any BLE work, and
// reads results. The reference lock (firmware/lock) parses requests,
// decides with [Verifier.Authorize] (which calls [Verifier.Verify] for
// signed commands), then checks the stateful rules this package leaves to
// it — per-signer counters (written before the motor moves) and command IDs
// already executed — and answers with a Result.
//
// # Authorisation
//
// Lock, unlock, add-user, remove-user, clear-bonds and set-time must carry a
// command signed by an operator credential (COSE_Sign1 over lock ID, op,
// args, command ID, not-after time and per-signer counter), except lock and
// unlock asked by a user over its own session ([RequiresSignature]). The
// fleet root may sign set-time itself. A gateway therefore only transports:
// it can delay or drop a command, never mint, replay or widen one. The other
// operations are authorised by the session peer's effective permissions
// ([cred.Cert.Allows]); a signed variant of them is accepted too.
//
// # Encoding
//
// Every message is a CBOR map with unsigned integer keys, encoded in core
// deterministic CBOR (RFC 8949 §4.2.1). Decoding is strict: a size limit
// before anything else, no indefinite lengths, no tags, no duplicate or
// unknown keys, required keys present, values of the right major type and
// range, nothing after the message, and finally the message must be byte
// for byte the deterministic encoding of what was decoded, so that each
// message has exactly one accepted encoding. One table per map type drives
// both its encoder and its decoder.
//
// # Errors
//
// Every refusal is a [Status] code in the result, and one sentinel error
// here (ErrMalformed ... ErrInternal); [StatusOf] and [Status.Err] convert
// between them.
//
// It may import only the standard library, firmware/cred,
// github.com/veraison/go-cose and github.com/fxamacker/cbor/v2.
package command
