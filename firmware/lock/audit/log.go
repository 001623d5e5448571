package audit

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gatewayd/gatewayd/firmware/lock/flash"
)

// Record layout in the flash.Store: the log owns keys 0x1000..0x1FFF.
const (
	// KeySlot is the key of ring slot 0; entry seq lives in slot
	// seq mod Size, key KeySlot + slot.
	KeySlot uint16 = 0x1000
	// KeyMeta is the key of the meta record: {1: version, 2: size,
	// 3: floor}.
	KeyMeta uint16 = 0x1FFF
	// DefaultSize is the default ring size, in entries.
	DefaultSize = 256
	// MaxSize is the largest ring (keys 0x1000..0x1FFE).
	MaxSize = int(KeyMeta - KeySlot)
	// metaVersion is the layout version in the meta record.
	metaVersion = 1
)

// Options configure a Log.
type Options struct {
	// Size is the ring size in entries, 1..MaxSize; default DefaultSize.
	// It is fixed when the log is created: Open refuses another size.
	// Budget 68..96 bytes of flash per entry with 8-byte kids (at most
	// 116), record header included: the default ring holds up to some
	// 25 KiB of live records, so the lock's store needs 13 pages of 4 KiB
	// with the lock's records (docs/protocol.md §14.7).
	Size int
	// LockID is the lock's ID (its 8-byte kid); it selects the genesis hash.
	LockID []byte
	// Now is the lock's clock; default time.Now. Append uses it for an
	// entry whose Time is 0, and Open for the entries it writes itself.
	Now func() time.Time
	// Signer, if set, signs each page's head statement (Page.Sig). It must
	// be an Ed25519 key (ed25519.PrivateKey): pages are checked with
	// VerifySignature.
	Signer crypto.Signer
}

// meta is the record at KeyMeta.
type meta struct {
	Version uint64 `cbor:"1,keyasint"`
	Size    uint64 `cbor:"2,keyasint"`
	// Floor: entries with a lower seq are ignored (Open dropped them).
	Floor uint64 `cbor:"3,keyasint"`
}

// Log is the lock's audit log: a ring of Size entries in a flash.Store,
// chained by hash. It is safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	store   flash.Store
	size    uint64
	genesis []byte
	now     func() time.Time
	signer  crypto.Signer
	oldest  uint64 // oldest retained seq
	next    uint64 // seq of the next entry
	head    []byte // hash of entry next-1, or genesis
	floor   uint64
}

func slotKey(seq, size uint64) uint16 { return KeySlot + uint16(seq%size) }

// Open loads the log from store, creating it if the store has none. It
// recovers oldest_seq, next_seq and the head hash from the slots, and
// verifies the chain it holds from the newest entry back. It then appends,
// itself:
//
//   - EventPowerCutRecovered, if the store reports that its own opening
//     repaired a power cut's traces (flash.Recoverer; status: the
//     Recovered* bits): a torn record is how a cut during an Append shows;
//   - EventLogRepaired, if entries were damaged (undecodable, in the wrong
//     slot) or the chain was broken within the ring: the entries older than
//     the break are no longer served, oldest_seq moves past them, and
//     status says how many entries were lost (at most 65535).
//
// Call Open once per boot, then Append EventBoot.
func Open(store flash.Store, opts Options) (*Log, error) {
	if opts.Size == 0 {
		opts.Size = DefaultSize
	}
	if opts.Size < 1 || opts.Size > MaxSize {
		return nil, fmt.Errorf("%w: Size %d, want 1..%d", ErrBadOptions, opts.Size, MaxSize)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Log{store: store, size: uint64(opts.Size), genesis: Genesis(opts.LockID), now: opts.Now, signer: opts.Signer}

	m, err := l.loadMeta()
	if err != nil {
		return nil, err
	}
	l.floor = m.Floor

	// Read the slots.
	entries := make(map[uint64]Entry)
	var junk []uint16 // records that are no entry of this ring
	for slot := range l.size {
		key := KeySlot + uint16(slot)
		b, ok, err := store.Get(key)
		if err != nil {
			return nil, fmt.Errorf("audit: open: %w", err)
		}
		if !ok {
			continue
		}
		e, err := DecodeEntry(b)
		switch {
		case err != nil || e.Seq%l.size != slot:
			junk = append(junk, key)
		case e.Seq >= l.floor:
			entries[e.Seq] = e
		}
	}

	// The newest entry is the head; walk back while the chain holds.
	l.oldest, l.next, l.head = l.floor, l.floor, l.genesis
	var lost uint64
	if len(entries) > 0 {
		headSeq := uint64(0)
		for s := range entries {
			headSeq = max(headSeq, s)
		}
		lowest := l.floor
		if headSeq+1 > l.size {
			lowest = max(lowest, headSeq+1-l.size)
		}
		s, cur := headSeq, entries[headSeq]
		for s > lowest {
			prev, ok := entries[s-1]
			if !ok || !bytes.Equal(cur.PrevHash, prev.Hash()) {
				break
			}
			s, cur = s-1, prev
		}
		if s == 0 && !bytes.Equal(cur.PrevHash, l.genesis) {
			// Entry 0 does not start this lock's chain: not served.
			s++
		}
		// Entries of the window [lowest, headSeq] below s are missing or
		// cut off by a break; older ones were overwritten long ago.
		lost = s - lowest
		l.oldest, l.next, l.head = s, headSeq+1, entries[headSeq].Hash()
	}

	if rc, ok := store.(flash.Recoverer); ok {
		if r := rc.Recovery(); !r.Clean() {
			var bits uint16
			if r.TornRecord {
				bits |= RecoveredTornRecord
			}
			if r.InterruptedGC {
				bits |= RecoveredInterruptedGC
			}
			if r.UnfinishedErase {
				bits |= RecoveredUnfinishedErase
			}
			if _, err := l.Append(Entry{Event: EventPowerCutRecovered, Status: bits}); err != nil {
				return nil, fmt.Errorf("audit: open: %w", err)
			}
		}
	}
	if lost > 0 || len(junk) > 0 {
		n := min(lost+uint64(len(junk)), 0xFFFF)
		if _, err := l.Append(Entry{Event: EventLogRepaired, Status: uint16(n)}); err != nil {
			return nil, fmt.Errorf("audit: open: %w", err)
		}
		for _, key := range junk {
			if err := store.Delete(key); err != nil {
				return nil, fmt.Errorf("audit: open: %w", err)
			}
		}
		if l.oldest > l.floor {
			m.Floor = l.oldest
			if err := l.putMeta(m); err != nil {
				return nil, err
			}
			l.floor = l.oldest
		}
	}
	return l, nil
}

// loadMeta reads the meta record, or writes it for a new log.
func (l *Log) loadMeta() (meta, error) {
	b, ok, err := l.store.Get(KeyMeta)
	if err != nil {
		return meta{}, fmt.Errorf("audit: open: %w", err)
	}
	if !ok {
		m := meta{Version: metaVersion, Size: l.size}
		return m, l.putMeta(m)
	}
	var m meta
	if err := decodeExact(b, &m); err != nil {
		return meta{}, fmt.Errorf("%w: meta record: %v", ErrLayout, err)
	}
	if m.Version != metaVersion || m.Size != l.size {
		return meta{}, fmt.Errorf("%w: meta record says version %d, size %d; want version %d, size %d", ErrLayout, m.Version, m.Size, metaVersion, l.size)
	}
	return m, nil
}

func (l *Log) putMeta(m meta) error {
	b, err := encMode.Marshal(&m)
	if err == nil {
		err = l.store.Put(KeyMeta, b)
	}
	if err != nil {
		return fmt.Errorf("audit: write meta record: %w", err)
	}
	return nil
}

// Append adds an entry and returns its seq. The log sets Seq and PrevHash;
// a zero Time means the lock's clock now. The entry is one Put of its slot,
// so it is durable when Append returns nil and atomic under a power cut:
// after a reboot it is either there, chained, or absent with its seq still
// free (no entry anywhere carries it). On error nothing changed.
func (l *Log) Append(e Entry) (uint64, error) {
	if err := e.checkFields(); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBadEntry, err)
	}
	if e.Time == 0 {
		e.Time = uint64(max(l.now().Unix(), 0))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e.Seq = l.next
	e.PrevHash = bytes.Clone(l.head)
	b, err := e.Encode()
	if err != nil {
		return 0, err
	}
	if err := l.store.Put(slotKey(e.Seq, l.size), b); err != nil {
		return 0, fmt.Errorf("audit: append seq %d: %w", e.Seq, err)
	}
	h := sha256.Sum256(b)
	l.head = h[:]
	l.next++
	if l.next-l.oldest > l.size {
		l.oldest = l.next - l.size
	}
	return e.Seq, nil
}

// Page returns up to max entries (1..MaxPageEntries; 0 or more means
// MaxPageEntries) from fromSeq on, with the log's oldest_seq, next_seq,
// head hash and, with a Signer, the signature. If fromSeq is older than the
// oldest retained entry the page starts there and Gap is set; if it is at
// or past next_seq the page has no entries.
func (l *Log) Page(fromSeq uint64, max int) (Page, error) {
	if max <= 0 || max > MaxPageEntries {
		max = MaxPageEntries
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	p := Page{Oldest: l.oldest, Next: l.next, Head: bytes.Clone(l.head), Entries: []Entry{}}
	start := fromSeq
	if start < l.oldest {
		start, p.Gap = l.oldest, true
	}
	for s := start; s < l.next && len(p.Entries) < max; s++ {
		b, ok, err := l.store.Get(slotKey(s, l.size))
		if err != nil {
			return Page{}, fmt.Errorf("audit: page: %w", err)
		}
		if !ok {
			return Page{}, fmt.Errorf("%w: entry %d is missing from the store", ErrTampered, s)
		}
		e, err := DecodeEntry(b)
		if err != nil {
			return Page{}, fmt.Errorf("%w: entry %d: %v", ErrTampered, s, err)
		}
		if e.Seq != s {
			return Page{}, fmt.Errorf("%w: slot of entry %d holds entry %d", ErrTampered, s, e.Seq)
		}
		p.Entries = append(p.Entries, e)
	}
	if l.signer != nil {
		msg, err := headStatement(p.Next, p.Head)
		if err != nil {
			return Page{}, fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
		sig, err := l.signer.Sign(nil, msg, crypto.Hash(0))
		if err != nil {
			return Page{}, errors.Join(ErrBadSignature, err)
		}
		p.Sig = sig
	}
	return p, nil
}

// Next returns the seq the next entry will get.
func (l *Log) Next() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next
}

// Oldest returns the seq of the oldest retained entry (Next when empty).
func (l *Log) Oldest() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.oldest
}

// Head returns the hash of the newest entry, or the genesis hash.
func (l *Log) Head() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.head)
}
