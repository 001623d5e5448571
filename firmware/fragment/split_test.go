package fragment

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func TestSplitLayout(t *testing.T) {
	msg := seq(0, 40)
	frags := mustSplit(t, 0x2a, msg, 23)
	if len(frags) != 3 {
		t.Fatalf("got %d fragments; want 3", len(frags))
	}
	want := [][]byte{
		raw(0x2a, 0, 40, seq(0, 15)...),
		raw(0x2a, 15, 40, seq(15, 15)...),
		raw(0x2a, 30, 40, seq(30, 10)...),
	}
	for i, f := range frags {
		if !bytes.Equal(f, want[i]) {
			t.Errorf("fragment %d = % x; want % x", i, f, want[i])
		}
		if len(f) > 23-ATTOverhead {
			t.Errorf("fragment %d is %d bytes; ATT MTU 23 allows 20", i, len(f))
		}
		if cap(f) != len(f) {
			t.Errorf("fragment %d has cap %d > len %d: appending would overwrite the next", i, cap(f), len(f))
		}
	}
	msg[0] = 0xff
	if frags[0][HeaderSize] != 0 {
		t.Error("fragments alias the message")
	}
}

func TestSplitFragmentCountAndSize(t *testing.T) {
	for mtu := MinATTMTU; mtu <= MaxATTMTU; mtu++ {
		per := mtu - ATTOverhead - HeaderSize
		for _, n := range []int{1, per - 1, per, per + 1, 2 * per, DefaultMaxMessage} {
			if n < 1 || n > DefaultMaxMessage {
				continue
			}
			frags := mustSplit(t, 1, seq(0, n), mtu)
			if want := (n + per - 1) / per; len(frags) != want {
				t.Fatalf("mtu %d, %d bytes: %d fragments; want %d", mtu, n, len(frags), want)
			}
			for i, f := range frags {
				if len(f) > mtu-ATTOverhead || len(f) < HeaderSize+1 {
					t.Fatalf("mtu %d, %d bytes: fragment %d is %d bytes", mtu, n, i, len(f))
				}
				if i < len(frags)-1 && len(f) != mtu-ATTOverhead {
					t.Fatalf("mtu %d, %d bytes: fragment %d is not full (%d bytes)", mtu, n, i, len(f))
				}
			}
		}
	}
}

func TestSplitMTUOutOfRange(t *testing.T) {
	for _, mtu := range []int{math.MinInt, -1, 0, 22, 518, 1 << 20, math.MaxInt} {
		if _, err := Split(1, []byte{1}, mtu); !errors.Is(err, ErrBadMTU) {
			t.Errorf("Split(mtu %d) error = %v; want ErrBadMTU", mtu, err)
		}
		if _, _, err := AppendFragment(nil, 1, []byte{1}, 0, mtu); !errors.Is(err, ErrBadMTU) {
			t.Errorf("AppendFragment(mtu %d) error = %v; want ErrBadMTU", mtu, err)
		}
		if _, err := MaxPayload(mtu); !errors.Is(err, ErrBadMTU) {
			t.Errorf("MaxPayload(%d) error = %v; want ErrBadMTU", mtu, err)
		}
	}
	for _, mtu := range []int{MinATTMTU, 247, MaxATTMTU} {
		if p, err := MaxPayload(mtu); err != nil || p != mtu-8 {
			t.Errorf("MaxPayload(%d) = %d, %v; want %d", mtu, p, err, mtu-8)
		}
	}
}

func TestSplitEmptyMessage(t *testing.T) {
	for _, msg := range [][]byte{nil, {}} {
		if frags, err := Split(1, msg, 23); !errors.Is(err, ErrBadLength) || frags != nil {
			t.Errorf("Split(%#v) = %v, %v; want ErrBadLength", msg, frags, err)
		}
		if _, _, err := AppendFragment(nil, 1, msg, 0, 23); !errors.Is(err, ErrBadLength) {
			t.Errorf("AppendFragment(%#v) error = %v; want ErrBadLength", msg, err)
		}
	}
}

func TestSplitOversizedMessage(t *testing.T) {
	if _, err := Split(1, make([]byte, DefaultMaxMessage), 23); err != nil {
		t.Fatalf("Split(%d bytes): %v", DefaultMaxMessage, err)
	}
	for _, n := range []int{DefaultMaxMessage + 1, 65535, 65536, 70000} {
		if _, err := Split(1, make([]byte, n), 247); !errors.Is(err, ErrMessageTooLarge) {
			t.Errorf("Split(%d bytes) error = %v; want ErrMessageTooLarge", n, err)
		}
		if _, _, err := AppendFragment(nil, 1, make([]byte, n), 0, 247); !errors.Is(err, ErrMessageTooLarge) {
			t.Errorf("AppendFragment(%d bytes) error = %v; want ErrMessageTooLarge", n, err)
		}
	}
}

func TestAppendFragmentBadOffset(t *testing.T) {
	msg := seq(0, 40)
	for _, off := range []int{-1, 40, 41, math.MaxInt} {
		dst := []byte{9}
		out, next, err := AppendFragment(dst, 1, msg, off, 23)
		if !errors.Is(err, ErrBadLength) {
			t.Errorf("offset %d: error = %v; want ErrBadLength", off, err)
		}
		if !bytes.Equal(out, dst) || next != off {
			t.Errorf("offset %d: returned % x, %d; want dst unchanged", off, out, next)
		}
	}
}

func TestAppendFragmentMatchesSplit(t *testing.T) {
	msg := seq(7, 300)
	for _, mtu := range []int{23, 24, 100, 247, 517} {
		frags := mustSplit(t, 200, msg, mtu)
		var buf []byte
		var err error
		i := 0
		for off := 0; off < len(msg); i++ {
			buf, off, err = AppendFragment(buf[:0], 200, msg, off, mtu)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, frags[i]) {
				t.Fatalf("mtu %d fragment %d = % x; Split gave % x", mtu, i, buf, frags[i])
			}
		}
		if i != len(frags) {
			t.Fatalf("mtu %d: AppendFragment made %d fragments; Split %d", mtu, i, len(frags))
		}
	}
}

func TestAppendFragmentDoesNotAllocate(t *testing.T) {
	msg := seq(0, 300)
	buf := make([]byte, 0, 244)
	allocs := testing.AllocsPerRun(100, func() {
		for off := 0; off < len(msg); {
			buf, off, _ = AppendFragment(buf[:0], 1, msg, off, 23)
		}
	})
	if allocs != 0 {
		t.Errorf("AppendFragment allocates %v times per message; want 0", allocs)
	}
}
