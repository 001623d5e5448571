package fragment

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of Options.
const (
	// DefaultTimeout is how long a message may take to arrive, counted from
	// its first accepted fragment.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxInFlight is how many messages a Reassembler builds at once.
	DefaultMaxInFlight = 4
)

// Options configures a Reassembler. The zero value gives the protocol's
// defaults.
type Options struct {
	// MaxMessage is the largest message accepted, in bytes. Zero, a
	// negative value or a value above DefaultMaxMessage mean
	// DefaultMaxMessage (2048); it can only be lowered.
	MaxMessage int
	// Timeout is how long after its first accepted fragment a message must
	// be complete; it is discarded after that. It is also how long a
	// completed or failed message id is remembered. Zero or negative mean
	// DefaultTimeout (5 s).
	Timeout time.Duration
	// MaxInFlight is how many messages may be in progress at once. Zero or
	// negative mean DefaultMaxInFlight (4); values above 256 mean 256.
	MaxInFlight int
	// Now returns the current time; nil means time.Now. Tests inject a fake
	// clock here.
	Now func() time.Time
}

// outcome is how a message with some msg_id last ended.
type outcome uint8

const (
	outcomeNone outcome = iota
	outcomeCompleted
	outcomeTimedOut
	outcomeConflict
	outcomeBadLength
)

func (o outcome) String() string {
	switch o {
	case outcomeCompleted:
		return "completed"
	case outcomeTimedOut:
		return "timed out"
	case outcomeConflict:
		return "conflicting data"
	case outcomeBadLength:
		return "total_len mismatch"
	}
	return "none"
}

// closed remembers how the last message with a msg_id ended, so that late or
// duplicated fragments of it are not taken for a new message.
type closed struct {
	until   time.Time // remembered while now is before until
	total   int       // its total_len
	outcome outcome
}

// message is one message being reassembled.
type message struct {
	used   bool
	id     uint8
	total  int       // total_len
	have   int       // bytes received so far (bits set)
	opened time.Time // when its first fragment was accepted
	buf    []byte    // len total; handed to the caller on completion
	bits   []uint64  // bit i set when byte i has arrived; reused
}

// Reassembler rebuilds messages from fragments received in any order. Use
// one per connection and direction; it is safe for concurrent use (fragments
// from several EATT bearers may be added from several goroutines).
//
// It holds at most MaxInFlight*MaxMessage bytes of message data, plus a
// MaxMessage-bit map per in-flight message and a fixed 256-entry table of
// recently closed msg_ids.
type Reassembler struct {
	maxMessage  int
	timeout     time.Duration
	maxInFlight int
	now         func() time.Time

	mu         sync.Mutex
	slots      []message
	inFlight   int
	closed     [256]closed
	unreported [4]uint64 // msg_ids that timed out and Expire has not reported
}

// NewReassembler returns an empty Reassembler with the given options.
func NewReassembler(opts Options) *Reassembler {
	r := &Reassembler{
		maxMessage:  opts.MaxMessage,
		timeout:     opts.Timeout,
		maxInFlight: opts.MaxInFlight,
		now:         opts.Now,
	}
	if r.maxMessage <= 0 || r.maxMessage > DefaultMaxMessage {
		r.maxMessage = DefaultMaxMessage
	}
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	if r.maxInFlight <= 0 {
		r.maxInFlight = DefaultMaxInFlight
	}
	r.maxInFlight = min(r.maxInFlight, 256)
	if r.now == nil {
		r.now = time.Now
	}
	r.slots = make([]message, r.maxInFlight)
	return r
}

// Add takes one fragment (one ATT value as received) and returns the whole
// message when this fragment supplies its last missing byte; it returns nil,
// nil while the message is incomplete and for fragments that are ignored
// (identical duplicates, fragments of a message completed within the last
// Timeout). A message is returned exactly once; the caller owns it. Add does
// not keep frag.
//
// Before looking at the fragment, Add discards the messages that have timed
// out (see Expire). A returned error wraps one of ErrShortFragment,
// ErrBadLength, ErrMessageTooLarge, ErrConflict, ErrDiscarded or
// ErrTooManyInFlight; the fragment was then dropped. The receiver's checks,
// in order, are listed in docs/protocol.md §2.6.2. In short:
//
//   - a conflicting byte (ErrConflict) or a total_len different from the
//     message in progress (ErrBadLength) discards that message;
//   - a msg_id is remembered after its message ends: for Timeout after it
//     completed or failed, until 2*Timeout after its first fragment if it
//     timed out. Meanwhile a fragment with that msg_id and the same
//     total_len is ignored (completed) or refused with ErrDiscarded (timed
//     out or failed); with another total_len it is refused with
//     ErrBadLength (completed: nothing is delivered twice) or starts a new
//     message (timed out or failed: it cannot belong to the old one);
//   - a fragment that would start a message beyond MaxInFlight is refused
//     with ErrTooManyInFlight; nothing is evicted.
func (r *Reassembler) Add(frag []byte) (msg []byte, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.expire(now)

	// Checks on the fragment alone: a failure changes no state.
	if len(frag) < HeaderSize+1 {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrShortFragment, len(frag), HeaderSize+1)
	}
	id := frag[0]
	offset := int(binary.BigEndian.Uint16(frag[1:3]))
	total := int(binary.BigEndian.Uint16(frag[3:5]))
	payload := frag[HeaderSize:]
	if total == 0 {
		return nil, fmt.Errorf("%w: msg_id %d: total_len 0", ErrBadLength, id)
	}
	if total > r.maxMessage {
		return nil, fmt.Errorf("%w: msg_id %d: total_len %d > %d", ErrMessageTooLarge, id, total, r.maxMessage)
	}
	if offset+len(payload) > total {
		return nil, fmt.Errorf("%w: msg_id %d: offset %d + payload %d > total_len %d (fragment larger than the message)",
			ErrBadLength, id, offset, len(payload), total)
	}

	// A message in progress with this msg_id.
	if m := r.find(id); m != nil {
		if total != m.total {
			r.discard(m, now, outcomeBadLength)
			return nil, fmt.Errorf("%w: msg_id %d: total_len %d, earlier fragments said %d; message discarded",
				ErrBadLength, id, total, m.total)
		}
		return r.merge(m, offset, payload, now)
	}

	// A message with this msg_id that ended recently.
	if c := &r.closed[id]; c.outcome != outcomeNone && now.Before(c.until) {
		switch {
		case c.outcome == outcomeCompleted && c.total == total:
			return nil, nil // duplicate of a delivered message
		case c.outcome == outcomeCompleted:
			return nil, fmt.Errorf("%w: msg_id %d: total_len %d, but a %d-byte message with this msg_id completed less than %v ago",
				ErrBadLength, id, total, c.total, r.timeout)
		case c.total == total:
			return nil, fmt.Errorf("%w: msg_id %d (%s)", ErrDiscarded, id, c.outcome)
		}
		// Another total_len: not a straggler of the discarded message, but
		// a new message.
	}

	// A new message.
	if r.inFlight >= r.maxInFlight {
		return nil, fmt.Errorf("%w: msg_id %d refused, %d in progress", ErrTooManyInFlight, id, r.inFlight)
	}
	m := r.open(id, total, now)
	if m == nil { // cannot happen: inFlight counts the used slots
		return nil, fmt.Errorf("%w: msg_id %d refused, no free slot", ErrTooManyInFlight, id)
	}
	return r.merge(m, offset, payload, now)
}

// find returns the message in progress with msg_id id, or nil.
func (r *Reassembler) find(id uint8) *message {
	for i := range r.slots {
		if m := &r.slots[i]; m.used && m.id == id {
			return m
		}
	}
	return nil
}

// open starts a message in a free slot, or returns nil if there is none.
func (r *Reassembler) open(id uint8, total int, now time.Time) *message {
	for i := range r.slots {
		m := &r.slots[i]
		if m.used {
			continue
		}
		if m.bits == nil {
			m.bits = make([]uint64, (r.maxMessage+63)/64)
		}
		clear(m.bits)
		m.used, m.id, m.total, m.have, m.opened = true, id, total, 0, now
		m.buf = make([]byte, total)
		r.inFlight++
		r.closed[id] = closed{}
		return m
	}
	return nil
}

// merge stores payload at offset into m, checking bytes already received,
// and returns the message if it is now complete.
func (r *Reassembler) merge(m *message, offset int, payload []byte, now time.Time) ([]byte, error) {
	buf, bits := m.buf, m.bits
	for i, b := range payload {
		p := offset + i
		w, bit := p>>6, uint64(1)<<(p&63)
		if bits[w]&bit != 0 {
			if buf[p] != b {
				id := m.id
				r.discard(m, now, outcomeConflict)
				return nil, fmt.Errorf("%w: msg_id %d: byte %d differs; message discarded", ErrConflict, id, p)
			}
			continue
		}
		bits[w] |= bit
		buf[p] = b
		m.have++
	}
	if m.have < m.total {
		return nil, nil
	}
	msg := m.buf
	r.discard(m, now, outcomeCompleted)
	return msg, nil
}

// discard frees m's slot and remembers how the message ended: a completed or
// failed message for Timeout from now, a timed-out one for Timeout from its
// deadline (so 2*Timeout from its first fragment, whenever it is noticed).
func (r *Reassembler) discard(m *message, now time.Time, o outcome) {
	until := now.Add(r.timeout)
	if o == outcomeTimedOut {
		until = m.opened.Add(2 * r.timeout)
		r.unreported[m.id>>6] |= 1 << (m.id & 63)
	}
	r.closed[m.id] = closed{until: until, total: m.total, outcome: o}
	m.used, m.buf = false, nil
	r.inFlight--
}

// expire discards the messages whose first fragment is Timeout old or more.
func (r *Reassembler) expire(now time.Time) {
	if r.inFlight == 0 {
		return
	}
	for i := range r.slots {
		if m := &r.slots[i]; m.used && now.Sub(m.opened) >= r.timeout {
			r.discard(m, now, outcomeTimedOut)
		}
	}
}

// Expire discards the messages that were not complete within Timeout of
// their first accepted fragment, and reports every message discarded for
// that reason since the previous call to Expire, whether this call or an
// earlier Add discarded it: it returns nil if there is none, else an error
// wrapping ErrTimeout that names their msg_ids. A caller that wants to see
// timeouts calls it periodically, for example once per second.
func (r *Reassembler) Expire() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(r.now())
	var ids []string
	for id := range 256 {
		if r.unreported[id>>6]&(1<<(id&63)) != 0 {
			ids = append(ids, strconv.Itoa(id))
		}
	}
	r.unreported = [4]uint64{}
	if ids == nil {
		return nil
	}
	return fmt.Errorf("%w: msg_id %s", ErrTimeout, strings.Join(ids, ", "))
}

// Pending discards the messages that have timed out (like Expire, but
// without reporting them) and returns how many messages are in progress.
func (r *Reassembler) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(r.now())
	return r.inFlight
}

// Reset forgets everything: messages in progress, recently closed msg_ids and
// unreported timeouts. Call it when the connection drops; msg_ids start
// afresh on a new connection.
func (r *Reassembler) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.slots {
		r.slots[i].used, r.slots[i].buf = false, nil
	}
	r.inFlight = 0
	r.closed = [256]closed{}
	r.unreported = [4]uint64{}
}
