package fragment

import (
	"fmt"
	"testing"
)

func BenchmarkSplitReassemble(b *testing.B) {
	msg := seq(0, 300)
	for _, mtu := range []int{23, 247} {
		b.Run(fmt.Sprintf("mtu=%d", mtu), func(b *testing.B) {
			r, clock := newTestReassembler(b, Options{})
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			id := uint8(0)
			for b.Loop() {
				frags, err := Split(id, msg, mtu)
				if err != nil {
					b.Fatal(err)
				}
				var got []byte
				for _, f := range frags {
					if got, err = r.Add(f); err != nil {
						b.Fatal(err)
					}
				}
				if len(got) != len(msg) {
					b.Fatalf("got %d bytes", len(got))
				}
				id++
				clock.Advance(DefaultTimeout) // msg_id reuse stays within the sender rules
			}
		})
	}
}
