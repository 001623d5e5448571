package audit

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// these, or an error of the flash.Store; match them with errors.Is.
var (
	// ErrTampered is returned by Verify and Cursor.Advance when a page's
	// chain does not hold: an entry whose hash does not match the next
	// entry's prev_hash (an altered entry), entries out of order or
	// repeated, an entry outside [oldest_seq, next_seq), a first entry that
	// does not extend the chain the reader holds, a head_hash that is not
	// the hash of entry next_seq-1 when the page ends there (a truncated or
	// extended chain), or a log that went back (next_seq below the
	// reader's cursor). Log.Page returns it when the store lost an entry
	// that Open had verified.
	ErrTampered = errors.New("audit: chain does not verify")
	// ErrGap is returned by Verify when a page skips a sequence number
	// (an entry was removed), and by Cursor.Advance when a page starts
	// after the reader's cursor although the lock still retains the
	// entries in between. A page that starts at oldest_seq because the
	// ring overwrote what the reader had not read yet is not an error:
	// Cursor.Advance reports it as missed entries.
	ErrGap = errors.New("audit: entries missing")
	// ErrMalformed is returned by DecodeEntry, DecodePage, Verify and
	// Cursor.Advance for bytes that are not exactly one entry or page in
	// deterministic CBOR (docs/protocol.md §14.5), or for a field out
	// of range: actor over 16 bytes, command_id neither 0 nor 16 bytes,
	// prev_hash or head_hash not 32 bytes, signature neither absent nor 64
	// bytes, more than MaxPageEntries entries, oldest_seq above next_seq.
	ErrMalformed = errors.New("audit: malformed entry or page")
	// ErrBadEntry is returned by Log.Append for an entry whose actor is
	// longer than 16 bytes or whose command_id is neither empty nor 16
	// bytes. Nothing is written.
	ErrBadEntry = errors.New("audit: bad entry")
	// ErrLayout is returned by Open when the log's meta record is
	// unreadable or was written for another ring size or format version.
	ErrLayout = errors.New("audit: stored log has another layout")
	// ErrBadOptions is returned by Open when Options.Size is outside
	// 1..MaxSize.
	ErrBadOptions = errors.New("audit: bad options")
	// ErrBadSignature is returned by VerifySignature when a page carries
	// no signature or a signature that does not verify under the lock's
	// key; by Log.Page when the Signer fails.
	ErrBadSignature = errors.New("audit: bad page signature")
)
