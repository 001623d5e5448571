package audit

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
)

// MaxPageEntries is the most entries one page carries: the read-audit
// command's limit (firmware/command MaxAuditEntries), sized so that a page
// of 16 entries, signed, fits a result frame.
const MaxPageEntries = 16

// maxPageBytes bounds DecodePage's input: a frame's plaintext.
const maxPageBytes = 2048

// Page is a slice of the log, and the data of a read-audit result:
//
//	audit-page = {
//	  1: uint,              ; oldest_seq: the oldest entry the lock retains
//	  2: uint,              ; next_seq: the seq the next entry will get
//	  3: [* audit-entry],   ; entries from the requested seq (or oldest_seq), ascending
//	  4: bstr .size 32,     ; head_hash: hash of entry next_seq-1, or the genesis hash
//	  ? 5: bstr .size 64,   ; Ed25519 signature of the lock over head-statement
//	}
//	head-statement = ["gatewayd audit head v1", next_seq: uint, head_hash: bstr]
//
// An empty log has oldest_seq = next_seq.
type Page struct {
	Oldest  uint64  `cbor:"1,keyasint"`
	Next    uint64  `cbor:"2,keyasint"`
	Entries []Entry `cbor:"3,keyasint"`
	Head    []byte  `cbor:"4,keyasint"`
	Sig     []byte  `cbor:"5,keyasint,omitempty"`
	// Gap is set by Log.Page when fromSeq was older than Oldest: entries
	// were overwritten before this reader fetched them. It is not encoded;
	// a reader derives it from its own cursor.
	Gap bool `cbor:"-"`
}

// check validates the field sizes of a page.
func (p *Page) check() error {
	if len(p.Head) != HashSize {
		return fmt.Errorf("%w: head_hash of %d bytes", ErrMalformed, len(p.Head))
	}
	if p.Oldest > p.Next {
		return fmt.Errorf("%w: oldest_seq %d above next_seq %d", ErrMalformed, p.Oldest, p.Next)
	}
	if n := len(p.Sig); n != 0 && n != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature of %d bytes", ErrMalformed, n)
	}
	for i := range p.Entries {
		if err := p.Entries[i].check(); err != nil {
			return fmt.Errorf("%w: entry %d: %v", ErrMalformed, p.Entries[i].Seq, err)
		}
	}
	return nil
}

// EncodePage returns the deterministic CBOR encoding of p.
func EncodePage(p Page) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	if len(p.Entries) > MaxPageEntries {
		return nil, fmt.Errorf("%w: %d entries, at most %d", ErrMalformed, len(p.Entries), MaxPageEntries)
	}
	b, err := encMode.Marshal(&p)
	if err != nil {
		return nil, fmt.Errorf("%w: page: %v", ErrMalformed, err)
	}
	return b, nil
}

// DecodePage decodes a read-audit result's data, refusing anything but the
// exact deterministic encoding of a valid page (ErrMalformed). It checks
// the format only; Verify checks the chain.
func DecodePage(b []byte) (Page, error) {
	if len(b) > maxPageBytes {
		return Page{}, fmt.Errorf("%w: page of %d bytes", ErrMalformed, len(b))
	}
	var p Page
	if err := decodeExact(b, &p); err != nil {
		return Page{}, fmt.Errorf("%w: page: %v", ErrMalformed, err)
	}
	if len(p.Entries) > MaxPageEntries {
		return Page{}, fmt.Errorf("%w: %d entries, at most %d", ErrMalformed, len(p.Entries), MaxPageEntries)
	}
	if err := p.check(); err != nil {
		return Page{}, err
	}
	return p, nil
}

// Verify checks one page's chain and returns the hash of its last entry,
// to pass as prevHash with the next page. prevHash is the hash returned for
// the previous page of the same lock, Genesis(lockID) before entry 0, or
// nil to trust the first entry's prev_hash. It detects:
//
//   - entries out of order or repeated, or outside [oldest_seq, next_seq)
//     (ErrTampered);
//   - a missing sequence number: a removed entry (ErrGap);
//   - an altered entry: the next entry's prev_hash, or head_hash for the
//     newest, is not its hash (ErrTampered);
//   - a first entry that does not extend prevHash (ErrTampered);
//   - a truncated chain: the page ends at next_seq-1 but head_hash is not
//     that entry's hash (ErrTampered).
//
// An empty page returns prevHash. Seq continuity across pages is the
// Cursor's job.
func Verify(prevHash []byte, p Page) (lastHash []byte, err error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	if prevHash != nil && len(prevHash) != HashSize {
		return nil, fmt.Errorf("%w: prevHash of %d bytes", ErrMalformed, len(prevHash))
	}
	es := p.Entries
	for i := range es {
		if es[i].Seq < p.Oldest || es[i].Seq >= p.Next {
			return nil, fmt.Errorf("%w: entry %d outside the page's range %d..%d", ErrTampered, es[i].Seq, p.Oldest, p.Next)
		}
		if i > 0 && es[i].Seq <= es[i-1].Seq {
			return nil, fmt.Errorf("%w: entry %d after entry %d: reordered or repeated", ErrTampered, es[i].Seq, es[i-1].Seq)
		}
	}
	last := prevHash
	for i := range es {
		e := &es[i]
		if i > 0 && e.Seq != es[i-1].Seq+1 {
			return nil, fmt.Errorf("%w: entries %d..%d missing", ErrGap, es[i-1].Seq+1, e.Seq-1)
		}
		if last != nil && !bytes.Equal(e.PrevHash, last) {
			if i == 0 {
				return nil, fmt.Errorf("%w: entry %d does not extend the chain held (prev_hash differs)", ErrTampered, e.Seq)
			}
			return nil, fmt.Errorf("%w: entry %d: prev_hash is not the hash of entry %d (altered)", ErrTampered, e.Seq, e.Seq-1)
		}
		last = e.Hash()
	}
	if len(es) == 0 {
		return prevHash, nil
	}
	if es[len(es)-1].Seq+1 == p.Next && !bytes.Equal(p.Head, last) {
		return nil, fmt.Errorf("%w: head_hash is not the hash of entry %d (altered or truncated)", ErrTampered, p.Next-1)
	}
	return last, nil
}

// Cursor is a reader's position in one lock's log: the gateway keeps one
// per lock, persistently, and asks for Page(Next, max).
type Cursor struct {
	Next uint64 `cbor:"1,keyasint"` // the next seq to read
	Hash []byte `cbor:"2,keyasint"` // hash of entry Next-1, or the genesis hash
}

// NewCursor returns the cursor of a reader that has read nothing of the
// lock's log: Next 0, Hash Genesis(lockID).
func NewCursor(lockID []byte) Cursor { return Cursor{Hash: Genesis(lockID)} }

// Advance verifies p, the answer to read-audit from c.Next, and moves c
// past it. missed counts entries the ring overwrote before this reader
// fetched them (the page starts at oldest_seq, above c.Next): the reader
// should record the loss; the chain is then verified from the page's
// first entry on. On error c is unchanged. Besides Verify's checks it
// detects a log that went back (ErrTampered), a page that starts before
// c.Next (ErrTampered) or after it while the lock retains the entries in
// between (ErrGap), and, when the page holds no new entry, a head_hash
// other than c.Hash (ErrTampered).
func (c *Cursor) Advance(p Page) (missed uint64, err error) {
	if err := p.check(); err != nil {
		return 0, err
	}
	if p.Next < c.Next {
		return 0, fmt.Errorf("%w: next_seq %d below the cursor %d: the log went back", ErrTampered, p.Next, c.Next)
	}
	if len(p.Entries) == 0 {
		switch {
		case p.Next == c.Next && c.Hash != nil && !bytes.Equal(p.Head, c.Hash):
			return 0, fmt.Errorf("%w: head_hash differs from the cursor's at seq %d", ErrTampered, c.Next)
		case p.Oldest == p.Next && p.Next > c.Next:
			// Nothing retained past the cursor at all.
			missed = p.Next - c.Next
			c.Next, c.Hash = p.Next, bytes.Clone(p.Head)
		}
		return missed, nil
	}
	// The page's own chain first, then its place after the cursor.
	last, err := Verify(nil, p)
	if err != nil {
		return 0, err
	}
	first := &p.Entries[0]
	switch {
	case first.Seq == c.Next:
		if c.Hash != nil && !bytes.Equal(first.PrevHash, c.Hash) {
			return 0, fmt.Errorf("%w: entry %d does not extend the chain held (prev_hash differs)", ErrTampered, first.Seq)
		}
	case first.Seq > c.Next && first.Seq == p.Oldest:
		missed = first.Seq - c.Next
	case first.Seq > c.Next:
		return 0, fmt.Errorf("%w: page starts at %d, cursor at %d, oldest retained %d", ErrGap, first.Seq, c.Next, p.Oldest)
	default:
		return 0, fmt.Errorf("%w: page starts at %d, before the cursor %d", ErrTampered, first.Seq, c.Next)
	}
	c.Next, c.Hash = p.Entries[len(p.Entries)-1].Seq+1, last
	return missed, nil
}

// headLabel is the first element of the signed head statement.
const headLabel = "gatewayd audit head v1"

// headStatement is what the lock signs: ["gatewayd audit head v1",
// next_seq, head_hash] in deterministic CBOR.
func headStatement(next uint64, head []byte) ([]byte, error) {
	return encMode.Marshal([]any{headLabel, next, head})
}

// VerifySignature checks the lock's signature over the page's (next_seq,
// head_hash) with the lock's Ed25519 public key. With Verify it proves the
// page's entries are the lock's chain up to its head at the time of the
// read, end to end, whoever carried the page.
func VerifySignature(pub ed25519.PublicKey, p Page) error {
	if len(p.Sig) == 0 {
		return fmt.Errorf("%w: page is unsigned", ErrBadSignature)
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key of %d bytes", ErrBadSignature, len(pub))
	}
	msg, err := headStatement(p.Next, p.Head)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if !ed25519.Verify(pub, msg, p.Sig) {
		return fmt.Errorf("%w: signature does not verify", ErrBadSignature)
	}
	return nil
}
