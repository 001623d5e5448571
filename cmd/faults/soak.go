package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
)

// sample is one measurement of gatewayd's resources.
type sample struct {
	At     time.Time `json:"at"`
	Pid    int       `json:"pid"`
	RSSKiB int64     `json:"rss_kib"`
	// AnonKiB is the anonymous part of RSS (RssAnon): the Go heap and
	// stacks, without the database file's mapped pages, which grow with
	// the journal by design (RssFile, RssShmem on the tmpfs).
	AnonKiB    int64 `json:"rss_anon_kib"`
	HeapKiB    int64 `json:"heap_inuse_kib"` // go_memstats_heap_inuse_bytes
	DBKiB      int64 `json:"db_kib"`         // the database file's size
	Goroutines int   `json:"goroutines"`
	FDs        int   `json:"fds"`
	MatchRules int   `json:"match_rules"`
}

type soakReport struct {
	Duration string   `json:"duration"`
	Samples  []sample `json:"samples"`
	Growth   []string `json:"growth"`
}

const sampleEvery = 10 * time.Second

// soakKinds are the faults the soak cycles through, one a minute. A
// SIGKILL of gatewayd or a restart would reset what the soak measures, so
// those are the campaign's alone.
func soakKinds(r *rig) []string {
	k := []string{kindBroker, kindBluez, kindDrop, kindAbort, kindRange}
	if r.tmpfs && r.tmpfsErr == nil {
		k = append(k, kindDiskFull, kindEPERM)
	}
	return k
}

func soak(r *rig, o options) error {
	r.say("\n== soak for %v: steady traffic, a fault each minute, a sample every %v", o.soak, sampleEvery)
	conn, err := dbus.Connect(r.bus.Addr)
	if err != nil {
		return fmt.Errorf("soak: the bus: %w", err)
	}
	defer conn.Close()
	tr, err := r.warmUp(500 * time.Millisecond)
	if err != nil {
		return err
	}
	start := time.Now()
	end := start.Add(o.soak)
	var (
		mu     sync.Mutex
		faults []*faultRec
		wg     sync.WaitGroup
		ferr   error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		kinds := soakKinds(r)
		for i := 0; ; i++ {
			at := start.Add(30*time.Second + time.Duration(i)*time.Minute)
			if at.After(end.Add(-20*time.Second)) || r.ctx.Err() != nil {
				return
			}
			time.Sleep(time.Until(at))
			k := kinds[i%len(kinds)]
			f, err := r.inject(k, i/len(kinds)+1, i)
			if err != nil {
				mu.Lock()
				ferr = fmt.Errorf("injecting %s: %w", k, err)
				mu.Unlock()
				return
			}
			r.awaitRecovery(f)
			r.say("   %s %-20s %s", time.Now().Format(time.TimeOnly), k, f.summary())
			mu.Lock()
			faults = append(faults, f)
			mu.Unlock()
		}
	}()
	var samples []sample
	r.say("   %-8s %7s %10s %10s %10s %8s %10s %5s %11s", "time", "pid", "rss_kib", "anon_kib", "heap_kib", "db_kib", "goroutines", "fds", "match_rules")
	for t := time.Now(); !t.After(end) && r.ctx.Err() == nil; t = t.Add(sampleEvery) {
		time.Sleep(time.Until(t))
		s := r.sample(conn)
		samples = append(samples, s)
		r.say("   %-8s %7d %10d %10d %10d %8d %10d %5d %11d", s.At.Format(time.TimeOnly), s.Pid, s.RSSKiB, s.AnonKiB, s.HeapKiB, s.DBKiB,
			s.Goroutines, s.FDs, s.MatchRules)
	}
	wg.Wait()
	tr.end()
	// Drain: nothing accepted may stay unanswered a minute after the end.
	r.back.drain(time.Now().Add(60 * time.Second))
	rep := r.finish(faults, nil, o)
	sr := &soakReport{Duration: o.soak.String(), Samples: samples, Growth: growth(samples)}
	rep.Soak = sr
	r.say("\n== growth after warm-up (median of the last third against the second third; goroutines, fds,")
	r.say("   match rules within +2, RSS and its anonymous part within +20%% + 4 MiB, heap within +20%% + 2 MiB)")
	if len(sr.Growth) == 0 {
		r.say("   none over tolerance in %d samples", len(samples))
	}
	if ferr != nil {
		rep.Violations = append(rep.Violations, ferr.Error())
	}
	for _, g := range sr.Growth {
		rep.Violations = append(rep.Violations, "growth: "+g)
	}
	return rep.conclude(r, o)
}

// sample measures gatewayd now: RSS and fds from /proc, goroutines from
// its /metrics, match rules from the bus's statistics. A value it could
// not read is -1.
func (r *rig) sample(conn *dbus.Conn) sample {
	s := sample{At: time.Now(), Pid: r.sup.pid(), RSSKiB: -1, AnonKiB: -1, HeapKiB: -1, DBKiB: -1, Goroutines: -1, FDs: -1, MatchRules: -1}
	if fi, err := os.Stat(r.dbPath()); err == nil {
		s.DBKiB = fi.Size() / 1024
	}
	if s.Pid == 0 {
		return s
	}
	proc := filepath.Join("/proc", strconv.Itoa(s.Pid))
	if b, err := os.ReadFile(filepath.Join(proc, "status")); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				s.RSSKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			}
			if v, ok := strings.CutPrefix(l, "RssAnon:"); ok {
				s.AnonKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(proc, "fd")); err == nil {
		s.FDs = len(ents)
	}
	if body, err := r.scrape(); err == nil {
		if v, ok := metric(body, "go_goroutines"); ok {
			s.Goroutines = int(v)
		}
		if v, ok := metric(body, "go_memstats_heap_inuse_bytes"); ok {
			s.HeapKiB = int64(v) / 1024
		}
	}
	s.MatchRules = matchRules(conn, s.Pid)
	return s
}

// matchRules is the number of match rules the bus holds for the
// connections of process pid (org.freedesktop.DBus.Debug.Stats), or -1.
func matchRules(conn *dbus.Conn, pid int) int {
	var names []string
	if err := conn.BusObject().Call("org.freedesktop.DBus.ListNames", 0).Store(&names); err != nil {
		return -1
	}
	total, found := 0, false
	for _, n := range names {
		if !strings.HasPrefix(n, ":") {
			continue
		}
		var p uint32
		if conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, n).Store(&p) != nil || int(p) != pid {
			continue
		}
		var st map[string]dbus.Variant
		if err := conn.BusObject().Call("org.freedesktop.DBus.Debug.Stats.GetConnectionStats", 0, n).Store(&st); err != nil {
			return -1
		}
		if v, ok := st["MatchRules"].Value().(uint32); ok {
			total += int(v)
			found = true
		}
	}
	if !found {
		return -1
	}
	return total
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// growth compares the median of the last third of the samples with the
// median of the second third (the first third is warm-up): goroutines,
// fds and match rules may grow by at most 2, RSS and its anonymous part
// by at most 20% + 4 MiB, the Go heap by at most 20% + 2 MiB.
// It also reports a daemon that restarted (another pid) or a measure that
// could not be read.
func growth(samples []sample) []string {
	var out []string
	if len(samples) < 6 {
		return []string{fmt.Sprintf("%d samples: want at least 6 (a soak of 1 min or more)", len(samples))}
	}
	pids := map[int]bool{}
	for _, s := range samples {
		pids[s.Pid] = true
	}
	if len(pids) != 1 {
		out = append(out, fmt.Sprintf("gatewayd restarted during the soak (pids %v)", keysOf(pids)))
	}
	third := len(samples) / 3
	mid, last := samples[third:2*third], samples[len(samples)-third:]
	for _, m := range []struct {
		name string
		get  func(sample) float64
		tol  func(base float64) float64
	}{
		{"goroutines", func(s sample) float64 { return float64(s.Goroutines) }, func(float64) float64 { return 2 }},
		{"fds", func(s sample) float64 { return float64(s.FDs) }, func(float64) float64 { return 2 }},
		{"match_rules", func(s sample) float64 { return float64(s.MatchRules) }, func(float64) float64 { return 2 }},
		{"rss_kib", func(s sample) float64 { return float64(s.RSSKiB) }, func(b float64) float64 { return b*0.2 + 4096 }},
		{"rss_anon_kib", func(s sample) float64 { return float64(s.AnonKiB) }, func(b float64) float64 { return b*0.2 + 4096 }},
		{"heap_inuse_kib", func(s sample) float64 { return float64(s.HeapKiB) }, func(b float64) float64 { return b*0.2 + 2048 }},
	} {
		var a, b []float64
		for _, s := range mid {
			a = append(a, m.get(s))
		}
		for _, s := range last {
			b = append(b, m.get(s))
		}
		ma, mb := median(a), median(b)
		if ma < 0 || mb < 0 {
			out = append(out, fmt.Sprintf("%s could not be measured", m.name))
			continue
		}
		if mb-ma > m.tol(ma) {
			out = append(out, fmt.Sprintf("%s grew from a median of %.0f (second third) to %.0f (last third), over the tolerance of +%.0f",
				m.name, ma, mb, m.tol(ma)))
		}
	}
	return out
}

func keysOf(m map[int]bool) []int {
	var k []int
	for x := range m {
		k = append(k, x)
	}
	slices.Sort(k)
	return k
}
