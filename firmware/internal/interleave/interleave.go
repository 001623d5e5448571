// Package interleave measures a benchmark's work against its floor in one
// loop, for the ratios scripts/bench.sh judges. The machines that run the
// benchmarks are shared and their load changes from one millisecond to the
// next, so two benchmarks run one after the other can see two different
// machines. Here each round times a batch of the work and a batch of the
// floor back to back, alternating which goes first, and the figure
// reported is the median of the per-round ratios: a preemption that lands
// on one side of one round moves the median by at most one round, where it
// would move a ratio of totals by its whole length.
//
// It is used by the benchmarks of firmware/ packages only (test code); it
// imports only the standard library.
package interleave

import (
	"math"
	"testing"
	"time"
)

// Histogram bins: ratios from 1/16 to 16 in steps of 0.5%, so that the
// median is found without storing every round (and without allocating in
// the benchmark loop).
const (
	logStep = 0.004987541511038968 // ln(1.005)
	half    = 556                  // bins below ratio 1: ln(16)/ln(1.005), rounded up
	nbins   = 2*half + 1
)

// Ratios accumulates per-round ratios. The zero value is empty.
type Ratios struct {
	bins [nbins]uint32
	n    int
}

// Add records one round's ratio work/floor (ignored if floor is not
// positive).
func (r *Ratios) Add(work, floor time.Duration) {
	if floor <= 0 || work <= 0 {
		return
	}
	i := int(math.Floor(math.Log(float64(work)/float64(floor))/logStep)) + half
	r.bins[min(max(i, 0), nbins-1)]++
	r.n++
}

// Len is the number of rounds recorded.
func (r *Ratios) Len() int { return r.n }

// Median returns the median ratio (the middle of its 0.5% bin), or NaN
// when nothing was recorded.
func (r *Ratios) Median() float64 {
	if r.n == 0 {
		return math.NaN()
	}
	seen := 0
	for i, c := range r.bins {
		seen += int(c)
		if 2*seen > r.n {
			return math.Exp((float64(i-half) + 0.5) * logStep)
		}
	}
	return math.Exp((float64(nbins-1-half) + 0.5) * logStep)
}

// Run is the loop of an interleaved benchmark. Each round (each b.Loop
// iteration) runs work batch times and floor batch times, timing each
// batch, alternating which goes first. It reports the mean time of one
// work and one floor call as "<work>-ns" and "<floor>-ns", and the median
// per-round ratio under unit ("sealopen/ccm", say), the figure that
// scripts/bench.sh's metric takes the median of over its runs. A batch
// should take well over a microsecond, so that reading the clock is
// negligible.
func Run(b *testing.B, batch int, workName string, work func(), floorName string, floor func(), unit string) {
	var total [2]time.Duration
	var r Ratios
	timed := func(f func()) time.Duration {
		t0 := time.Now()
		for range batch {
			f()
		}
		return time.Since(t0)
	}
	i := 0
	for b.Loop() {
		var w, f time.Duration
		if i%2 == 0 {
			w = timed(work)
			f = timed(floor)
		} else {
			f = timed(floor)
			w = timed(work)
		}
		total[0] += w
		total[1] += f
		r.Add(w, f)
		i++
	}
	if i == 0 {
		return
	}
	calls := float64(i * batch)
	b.ReportMetric(float64(total[0])/calls, workName+"-ns")
	b.ReportMetric(float64(total[1])/calls, floorName+"-ns")
	b.ReportMetric(r.Median(), unit)
}
