package interleave

import (
	"math"
	"testing"
	"time"
)

// TestMedian: the median of recorded ratios is found within its 0.5% bin,
// an outlier round does not move it, and the extremes are clamped.
func TestMedian(t *testing.T) {
	var r Ratios
	if !math.IsNaN(r.Median()) {
		t.Fatal("median of nothing is not NaN")
	}
	for _, x := range []float64{1.2, 1.25, 1.3, 50, 1.22} {
		r.Add(time.Duration(x*1e6), time.Millisecond)
	}
	if m := r.Median(); math.Abs(m-1.25) > 0.01 {
		t.Fatalf("median %.4f, want 1.25 within a bin", m)
	}
	r.Add(time.Second, 0) // ignored
	if r.Len() != 5 {
		t.Fatalf("Len %d", r.Len())
	}
	var c Ratios
	c.Add(time.Nanosecond, time.Hour)
	if m := c.Median(); m > 1.0/15 {
		t.Fatalf("tiny ratio: median %v", m)
	}
	for _, want := range []float64{0.5, 1, 1.5, 3} {
		var one Ratios
		one.Add(time.Duration(want*1e9), time.Second)
		if m := one.Median(); math.Abs(m/want-1) > 0.005 {
			t.Fatalf("ratio %v: median %v", want, m)
		}
	}
}

// BenchmarkRunSelf: work and floor the same function give about 1.
func BenchmarkRunSelf(b *testing.B) {
	x := 0
	f := func() {
		for i := range 1000 {
			x += i
		}
	}
	Run(b, 8, "a", f, "b", f, "a/b")
	_ = x
}
