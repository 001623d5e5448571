package fragment

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// deliver feeds frags in the order given by order (indices into frags,
// repetitions allowed) and checks that the message arrives exactly once, on
// the first arrival that completes the set of distinct fragments, and that
// nothing else is returned.
func deliver(t *testing.T, r *Reassembler, frags [][]byte, order []int, want []byte) {
	t.Helper()
	seen := make([]bool, len(frags))
	left := len(frags)
	delivered := false
	for step, i := range order {
		if !seen[i] {
			seen[i] = true
			left--
		}
		msg, err := r.Add(frags[i])
		if err != nil {
			t.Fatalf("step %d (fragment %d): %v", step, i, err)
		}
		switch {
		case msg != nil && delivered:
			t.Fatalf("step %d (fragment %d): message delivered twice", step, i)
		case msg != nil && left != 0:
			t.Fatalf("step %d (fragment %d): message delivered with %d fragments missing", step, i, left)
		case msg == nil && left == 0 && !delivered:
			t.Fatalf("step %d (fragment %d): all fragments in, no message", step, i)
		case msg != nil:
			delivered = true
			if !bytes.Equal(msg, want) {
				t.Fatalf("step %d: message differs from the one sent (%d bytes, want %d)", step, len(msg), len(want))
			}
		}
	}
	if !delivered {
		t.Fatal("message never delivered")
	}
}

func TestRoundTripEveryMTU(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	orders := []struct {
		name string
		make func(n int) []int
	}{
		{"in order", func(n int) []int { return seqInts(n) }},
		{"reversed", func(n int) []int { o := seqInts(n); slices.Reverse(o); return o }},
		{"shuffled", func(n int) []int {
			o := seqInts(n)
			rng.Shuffle(n, func(i, j int) { o[i], o[j] = o[j], o[i] })
			return o
		}},
		{"shuffled with duplicates", func(n int) []int {
			o := seqInts(n)
			for range 1 + n/2 {
				o = append(o, rng.IntN(n))
			}
			rng.Shuffle(len(o), func(i, j int) { o[i], o[j] = o[j], o[i] })
			return o
		}},
	}
	for mtu := MinATTMTU; mtu <= 247; mtu++ {
		per := mtu - ATTOverhead - HeaderSize
		r, _ := newTestReassembler(t, Options{})
		id := uint8(0)
		for _, size := range []int{1, per, per + 1, DefaultMaxMessage} {
			for _, o := range orders {
				msg := make([]byte, size)
				for i := range msg {
					msg[i] = byte(rng.Uint32())
				}
				frags := mustSplit(t, id, msg, mtu)
				t.Run(fmt.Sprintf("mtu=%d/size=%d/%s", mtu, size, o.name), func(t *testing.T) {
					deliver(t, r, frags, o.make(len(frags)), msg)
					wantPending(t, r, 0)
				})
				id++
			}
		}
	}
}

func seqInts(n int) []int {
	o := make([]int, n)
	for i := range o {
		o[i] = i
	}
	return o
}

func TestOutOfOrder(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	msg := seq(0, 40)
	f := mustSplit(t, 1, msg, 23)
	addIncomplete(t, r, f[2])
	addIncomplete(t, r, f[0])
	wantPending(t, r, 1)
	addComplete(t, r, f[1], msg)
	wantPending(t, r, 0)
}

func TestInterleavedMessages(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	a, b := seq(0, 40), seq(100, 33)
	fa, fb := mustSplit(t, 1, a, 23), mustSplit(t, 2, b, 23)
	addIncomplete(t, r, fb[2])
	addIncomplete(t, r, fa[1])
	addIncomplete(t, r, fb[0])
	addIncomplete(t, r, fa[2])
	addComplete(t, r, fb[1], b)
	addComplete(t, r, fa[0], a)
}

func TestIdenticalDuplicate(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	msg := seq(0, 40)
	f := mustSplit(t, 1, msg, 23)
	addIncomplete(t, r, f[0])
	addIncomplete(t, r, f[0])
	addIncomplete(t, r, f[1])
	addIncomplete(t, r, f[0])
	addIncomplete(t, r, f[1])
	wantPending(t, r, 1)
	addComplete(t, r, f[2], msg)
}

func TestOverlappingFragments(t *testing.T) {
	// The same message cut at two MTUs: the overlaps agree, so the mix
	// reassembles.
	r, _ := newTestReassembler(t, Options{})
	msg := seq(0, 60)
	small, large := mustSplit(t, 9, msg, 23), mustSplit(t, 9, msg, 40)
	addIncomplete(t, r, small[1]) // 15..29
	addIncomplete(t, r, large[0]) // 0..31
	addIncomplete(t, r, small[3]) // 45..59
	addComplete(t, r, large[1], msg)
}

func TestConflictingDuplicate(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	msg := seq(0, 40)
	f := mustSplit(t, 1, msg, 23)
	addIncomplete(t, r, f[0])
	bad := slices.Clone(f[0])
	bad[len(bad)-1] ^= 0x80
	addErr(t, r, bad, ErrConflict)
	wantPending(t, r, 0)
	// The rest of the message is refused; it is never delivered.
	addErr(t, r, f[1], ErrDiscarded)
	addErr(t, r, f[2], ErrDiscarded)
	addErr(t, r, f[0], ErrDiscarded)
	wantPending(t, r, 0)
}

func TestConflictingOverlap(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	addIncomplete(t, r, raw(3, 0, 10, 1, 2, 3, 4))
	addErr(t, r, raw(3, 2, 10, 3, 5), ErrConflict) // byte 3 was 4
	wantPending(t, r, 0)
}

func TestEmptyFragment(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	addErr(t, r, nil, ErrShortFragment)
	addErr(t, r, []byte{}, ErrShortFragment)
	wantPending(t, r, 0)
}

func TestTruncatedFragment(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	f := raw(1, 0, 1, 0xaa)
	for n := 1; n < len(f); n++ {
		addErr(t, r, f[:n], ErrShortFragment)
	}
	wantPending(t, r, 0)
	addComplete(t, r, f, []byte{0xaa})
}

func TestZeroTotalLength(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	addErr(t, r, raw(1, 0, 0, 0xaa), ErrBadLength)
	wantPending(t, r, 0)
}

func TestOversizedTotal(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	for _, total := range []uint16{DefaultMaxMessage + 1, 4096, 0xffff} {
		addErr(t, r, raw(1, 0, total, 0xaa), ErrMessageTooLarge)
	}
	wantPending(t, r, 0)
	addIncomplete(t, r, raw(1, 0, DefaultMaxMessage, 0xaa))

	small, _ := newTestReassembler(t, Options{MaxMessage: 100})
	addErr(t, small, raw(1, 0, 101, 0xaa), ErrMessageTooLarge)
	addComplete(t, small, raw(1, 0, 100, seq(0, 100)...), seq(0, 100))
}

func TestFragmentLargerThanMessage(t *testing.T) {
	cases := []struct {
		name         string
		offset, tot  uint16
		payloadBytes int
	}{
		{"payload longer than total", 0, 3, 4},
		{"runs past the end", 9, 10, 2},
		{"offset at the end", 10, 10, 1},
		{"offset far past the end", 0xffff, 10, 1},
		{"offset+payload wraps uint16", 0xffff, 2048, 15},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, _ := newTestReassembler(t, Options{})
			addErr(t, r, raw(1, c.offset, c.tot, seq(0, c.payloadBytes)...), ErrBadLength)
			wantPending(t, r, 0)
		})
	}
}

func TestBadFragmentLeavesMessageInProgress(t *testing.T) {
	// A fragment refused on its own header (checks 1-5) changes no state,
	// even when its msg_id is that of a message in progress.
	r, _ := newTestReassembler(t, Options{})
	msg := seq(0, 40)
	f := mustSplit(t, 5, msg, 23)
	addIncomplete(t, r, f[0])
	addErr(t, r, f[1][:HeaderSize], ErrShortFragment)
	addErr(t, r, raw(5, 39, 40, 1, 2), ErrBadLength)
	addErr(t, r, raw(5, 0, 0, 1), ErrBadLength)
	addErr(t, r, raw(5, 0, 3000, 1), ErrMessageTooLarge)
	addIncomplete(t, r, f[1])
	addComplete(t, r, f[2], msg)
}

func TestMismatchedTotalLength(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	msg := seq(0, 40)
	f := mustSplit(t, 3, msg, 23)
	addIncomplete(t, r, f[0])
	addErr(t, r, raw(3, 15, 41, seq(15, 15)...), ErrBadLength)
	wantPending(t, r, 0)
	addErr(t, r, f[1], ErrDiscarded)
	addErr(t, r, f[2], ErrDiscarded)
}

func TestDuplicateOfCompletedMessage(t *testing.T) {
	r, clock := newTestReassembler(t, Options{})
	msg := seq(0, 40)
	f := mustSplit(t, 1, msg, 23)
	for _, i := range []int{0, 1} {
		addIncomplete(t, r, f[i])
	}
	addComplete(t, r, f[2], msg)
	// Within Timeout of completion every fragment of it is ignored.
	clock.Advance(DefaultTimeout - time.Nanosecond)
	for _, i := range []int{0, 1, 2, 2, 1, 0} {
		addIncomplete(t, r, f[i])
	}
	wantPending(t, r, 0)
	// After that, the msg_id is free again: the same bytes are a new message.
	clock.Advance(time.Nanosecond)
	addIncomplete(t, r, f[0])
	wantPending(t, r, 1)
}

func TestSingleFragmentMessageDuplicate(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	f := raw(0, 0, 2, 0xbe, 0xef)
	addComplete(t, r, f, []byte{0xbe, 0xef})
	addIncomplete(t, r, f)
	wantPending(t, r, 0)
}

func TestCompletedIDWithOtherLength(t *testing.T) {
	// Within Timeout of a completed message its msg_id takes nothing new,
	// so the message cannot be delivered twice, whatever comes.
	r, clock := newTestReassembler(t, Options{})
	addComplete(t, r, raw(4, 0, 2, 1, 2), []byte{1, 2})
	addErr(t, r, raw(4, 0, 3, 1, 2, 3), ErrBadLength)
	addIncomplete(t, r, raw(4, 0, 2, 1, 2))
	wantPending(t, r, 0)
	clock.Advance(DefaultTimeout)
	addComplete(t, r, raw(4, 0, 3, 1, 2, 3), []byte{1, 2, 3})
}

func TestTimeout(t *testing.T) {
	r, clock := newTestReassembler(t, Options{})
	msg := seq(0, 40)
	f := mustSplit(t, 7, msg, 23)
	addIncomplete(t, r, f[0])
	clock.Advance(DefaultTimeout - time.Nanosecond)
	addIncomplete(t, r, f[1])
	if err := r.Expire(); err != nil {
		t.Fatalf("Expire() before the timeout = %v", err)
	}
	wantPending(t, r, 1)

	clock.Advance(time.Nanosecond)
	wantPending(t, r, 0)
	err := r.Expire()
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "msg_id 7") {
		t.Fatalf("Expire() = %v; want ErrTimeout naming msg_id 7", err)
	}
	if err := r.Expire(); err != nil {
		t.Fatalf("second Expire() = %v; want nil (reported once)", err)
	}
	// A straggler of the timed-out message is refused: it would start a
	// message that can never complete.
	addErr(t, r, f[2], ErrDiscarded)
	addErr(t, r, f[0], ErrDiscarded)
	wantPending(t, r, 0)
	// A fragment with the same msg_id and another total_len is a new message.
	addComplete(t, r, raw(7, 0, 3, 1, 2, 3), []byte{1, 2, 3})
}

func TestTimeoutQuarantineEnds(t *testing.T) {
	r, clock := newTestReassembler(t, Options{})
	msg := seq(0, 40)
	f := mustSplit(t, 7, msg, 23)
	addIncomplete(t, r, f[0])
	clock.Advance(2*DefaultTimeout - time.Nanosecond)
	addErr(t, r, f[1], ErrDiscarded)
	clock.Advance(time.Nanosecond) // 2*Timeout after the first fragment
	for _, i := range []int{2, 1} {
		addIncomplete(t, r, f[i])
	}
	addComplete(t, r, f[0], msg)
}

func TestTimeoutNoticedLate(t *testing.T) {
	// The quarantine of a timed-out message runs from its deadline, not from
	// when the Reassembler noticed: after a long silence the msg_id is free.
	r, clock := newTestReassembler(t, Options{})
	msg := seq(0, 40)
	f := mustSplit(t, 7, msg, 23)
	addIncomplete(t, r, f[0])
	clock.Advance(time.Minute)
	for _, i := range []int{1, 2} {
		addIncomplete(t, r, f[i])
	}
	addComplete(t, r, f[0], msg)
	if err := r.Expire(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Expire() = %v; want the earlier timeout reported", err)
	}
}

func TestTimeoutFreesSlotOnAdd(t *testing.T) {
	r, clock := newTestReassembler(t, Options{MaxInFlight: 1, Timeout: time.Second})
	addIncomplete(t, r, raw(1, 0, 10, 1))
	addErr(t, r, raw(2, 0, 10, 1), ErrTooManyInFlight)
	clock.Advance(time.Second)
	addIncomplete(t, r, raw(2, 0, 10, 1)) // Add expired message 1 first
	wantPending(t, r, 1)
	err := r.Expire()
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "msg_id 1") {
		t.Fatalf("Expire() = %v; want ErrTimeout for msg_id 1", err)
	}
}

func TestTimeoutReportsSeveral(t *testing.T) {
	r, clock := newTestReassembler(t, Options{})
	addIncomplete(t, r, raw(9, 0, 10, 1))
	addIncomplete(t, r, raw(3, 0, 10, 1))
	clock.Advance(DefaultTimeout)
	err := r.Expire()
	if !errors.Is(err, ErrTimeout) || !strings.HasSuffix(err.Error(), "msg_id 3, 9") {
		t.Fatalf("Expire() = %v; want ErrTimeout for msg_id 3, 9", err)
	}
}

func TestTooManyInFlight(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	msgs := make([][]byte, DefaultMaxInFlight+1)
	frags := make([][][]byte, len(msgs))
	for i := range msgs {
		msgs[i] = seq(byte(i), 40)
		frags[i] = mustSplit(t, uint8(i), msgs[i], 23)
	}
	for i := range DefaultMaxInFlight {
		addIncomplete(t, r, frags[i][0])
	}
	extra := frags[DefaultMaxInFlight]
	addErr(t, r, extra[1], ErrTooManyInFlight)
	wantPending(t, r, DefaultMaxInFlight)
	// Nothing was evicted: the messages in progress still complete.
	addIncomplete(t, r, frags[0][1])
	addComplete(t, r, frags[0][2], msgs[0])
	// Now there is room; the refused fragment was dropped, so it must come
	// again.
	for _, i := range []int{0, 2} {
		addIncomplete(t, r, extra[i])
	}
	addComplete(t, r, extra[1], msgs[DefaultMaxInFlight])
	wantPending(t, r, DefaultMaxInFlight-1)
}

func TestMsgIDWrap(t *testing.T) {
	r, clock := newTestReassembler(t, Options{})
	for i := range 3 * 256 {
		id := uint8(i)
		msg := seq(id, 20)
		f := mustSplit(t, id, msg, 23)
		addIncomplete(t, r, f[1])
		addComplete(t, r, f[0], msg)
		clock.Advance(DefaultTimeout / 100) // 256 messages take > Timeout
	}
}

func TestMsgIDReusedTooSoon(t *testing.T) {
	// A sender that reuses a msg_id, same length, within Timeout of the
	// previous message breaks the sender rules: the receiver takes the new
	// message for a duplicate of the old one.
	r, clock := newTestReassembler(t, Options{})
	addComplete(t, r, raw(0, 0, 2, 1, 2), []byte{1, 2})
	clock.Advance(DefaultTimeout - time.Nanosecond)
	addIncomplete(t, r, raw(0, 0, 2, 3, 4))
	clock.Advance(time.Nanosecond)
	addComplete(t, r, raw(0, 0, 2, 3, 4), []byte{3, 4})
}

func TestReset(t *testing.T) {
	r, clock := newTestReassembler(t, Options{})
	msg := seq(0, 40)
	f := mustSplit(t, 1, msg, 23)
	addIncomplete(t, r, f[0])
	addComplete(t, r, raw(2, 0, 1, 5), []byte{5})
	addIncomplete(t, r, raw(3, 0, 9, 5))
	clock.Advance(DefaultTimeout)
	wantPending(t, r, 0)
	r.Reset()
	if err := r.Expire(); err != nil {
		t.Fatalf("Expire() after Reset = %v", err)
	}
	addComplete(t, r, raw(2, 0, 1, 5), []byte{5})
	addIncomplete(t, r, f[1])
	wantPending(t, r, 1)
}

func TestOptionsDefaults(t *testing.T) {
	cases := []struct {
		name             string
		opts             Options
		maxMsg, inFlight int
		timeout          time.Duration
	}{
		{"zero", Options{}, DefaultMaxMessage, DefaultMaxInFlight, DefaultTimeout},
		{"negative", Options{MaxMessage: -1, MaxInFlight: -1, Timeout: -1}, DefaultMaxMessage, DefaultMaxInFlight, DefaultTimeout},
		{"lowered", Options{MaxMessage: 100, MaxInFlight: 2, Timeout: time.Second}, 100, 2, time.Second},
		{"above the limits", Options{MaxMessage: 5000, MaxInFlight: 1000}, DefaultMaxMessage, 256, DefaultTimeout},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewReassembler(c.opts)
			if r.maxMessage != c.maxMsg || r.maxInFlight != c.inFlight || r.timeout != c.timeout || r.now == nil {
				t.Errorf("got max %d, in flight %d, timeout %v; want %d, %d, %v",
					r.maxMessage, r.maxInFlight, r.timeout, c.maxMsg, c.inFlight, c.timeout)
			}
		})
	}
}

func TestMemoryBound(t *testing.T) {
	const maxMsg, inFlight = 500, 3
	r, _ := newTestReassembler(t, Options{MaxMessage: maxMsg, MaxInFlight: inFlight})
	for id := range 10 {
		r.Add(raw(uint8(id), 0, maxMsg, 1))
	}
	held := 0
	for _, m := range r.slots {
		held += len(m.buf)
	}
	if held > maxMsg*inFlight {
		t.Fatalf("holding %d bytes; bound is %d", held, maxMsg*inFlight)
	}
	wantPending(t, r, inFlight)
}

func TestMessageIsOwnedByCaller(t *testing.T) {
	r, _ := newTestReassembler(t, Options{})
	f0, f1 := raw(1, 0, 4, 1, 2), raw(1, 2, 4, 3, 4)
	addIncomplete(t, r, f0)
	f0[HeaderSize] = 0xff // Add must not keep the fragment
	msg, err := r.Add(f1)
	if err != nil || !bytes.Equal(msg, []byte{1, 2, 3, 4}) {
		t.Fatalf("Add = % x, %v", msg, err)
	}
	msg[0] = 0xee
	addComplete(t, r, raw(2, 0, 4, 1, 2, 3, 4), []byte{1, 2, 3, 4})
}

func TestConcurrentAdd(t *testing.T) {
	// Several goroutines, as for several EATT bearers, add fragments of
	// disjoint messages; run with -race.
	r := NewReassembler(Options{MaxInFlight: 64, Now: func() time.Time { return time.Time{} }})
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for k := range 8 {
				id := uint8(w*8 + k)
				msg := seq(id, 100)
				frags, _ := Split(id, msg, 23)
				var got []byte
				for i := len(frags) - 1; i >= 0; i-- {
					m, err := r.Add(frags[i])
					if err != nil {
						errs <- err
						return
					}
					if m != nil {
						got = m
					}
				}
				if !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("msg_id %d: got % x", id, got)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestErrorsWrapOneSentinel(t *testing.T) {
	r, clock := newTestReassembler(t, Options{MaxInFlight: 1})
	var errs []error
	add := func(f []byte) {
		_, err := r.Add(f)
		errs = append(errs, err)
	}
	add(nil)
	add(raw(1, 0, 0, 1))
	add(raw(1, 0, 9999, 1))
	add(raw(1, 5, 5, 1))
	add(raw(1, 0, 5, 1))
	add(raw(2, 0, 5, 1))
	add(raw(1, 0, 5, 2))
	add(raw(1, 0, 5, 2))
	add(raw(1, 0, 6, 1))
	add(raw(1, 0, 7, 1))
	add(raw(3, 0, 7, 1))
	clock.Advance(DefaultTimeout)
	errs = append(errs, r.Expire())
	_, err := Split(1, nil, 23)
	errs = append(errs, err)
	_, err = Split(1, []byte{1}, 1)
	errs = append(errs, err)
	for _, err := range errs {
		if err != nil && countSentinels(err) != 1 {
			t.Errorf("%v wraps %d sentinels; want 1", err, countSentinels(err))
		}
	}
	for _, s := range sentinels {
		if !slices.ContainsFunc(errs, func(e error) bool { return errors.Is(e, s) }) {
			t.Errorf("no case produced %v", s)
		}
	}
}
