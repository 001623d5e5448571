package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/gatewayd/gatewayd/firmware/command"
)

// Fault kinds.
const (
	kindBroker     = "broker_kill"
	kindBluez      = "bluetoothd_kill"
	kindDaemon     = "gatewayd_kill"
	kindDrop       = "radio_drop"
	kindAbort      = "radio_abort"
	kindRange      = "radio_out_of_range"
	kindDiskFull   = "disk_full"
	kindEPERM      = "disk_eperm"
	kindReadOnly   = "readonly_start"
	settle         = 2 * time.Second
	recoveryBudget = 60 * time.Second
)

// faultRec is one injected fault and what was measured after it.
type faultRec struct {
	Kind  string    `json:"kind"`
	N     int       `json:"n"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"` // the fault ended: the part is back, reachable, writable
	Locks []int     `json:"locks"`
	// Measured recovery times (nil: not measured for this kind, or never).
	MQTTReconnect *float64 `json:"mqtt_reconnect_s,omitempty"`
	Ready         *float64 `json:"ready_s,omitempty"`
	FirstResult   *float64 `json:"first_result_s,omitempty"`
	AllResults    *float64 `json:"all_results_s,omitempty"`
	Note          string   `json:"note,omitempty"`
	// outstanding are the commands accepted and unanswered at End.
	outstanding []*cmdRec
	probes      []*cmdRec
}

func secs(d time.Duration) *float64 {
	s := d.Seconds()
	return &s
}

// traffic sends commands steadily, round robin over the locks, as otto,
// until ctx ends.
type traffic struct {
	stop func()
	wg   sync.WaitGroup
}

func startTraffic(r *rig, every time.Duration) *traffic {
	ctx, cancel := context.WithCancel(r.ctx)
	t := &traffic{stop: cancel}
	t.wg.Add(2)
	go func() {
		defer t.wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			r.back.send("otto", i%r.nLocks, ops[(i/r.nLocks)%len(ops)], 0)
			select {
			case <-ctx.Done():
			case <-time.After(every):
			}
		}
	}()
	go func() {
		defer t.wg.Done()
		for ctx.Err() == nil {
			r.back.resendStale(30 * time.Second)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}()
	return t
}

// warmUp starts the traffic, one command every every, and waits until
// every lock has answered once (bonding included).
func (r *rig) warmUp(every time.Duration) (*traffic, error) {
	tr := startTraffic(r, every)
	warm := &faultRec{Kind: "warm-up", Locks: allLocks(r.nLocks)}
	r.probe(warm, -1)
	r.awaitRecovery(warm)
	if warm.AllResults == nil {
		tr.end()
		return nil, fmt.Errorf("warm-up: the locks did not all answer within %v:%s", recoveryBudget, warm.Note)
	}
	r.say("   warm-up: every lock answered within %.1f s", *warm.AllResults)
	return tr, nil
}

func (t *traffic) end() {
	t.stop()
	t.wg.Wait()
}

// probe sends ada's status commands to the locks right after a fault
// ended: the first result among them is the recovery.
func (r *rig) probe(f *faultRec, idx int) {
	f.End = time.Now()
	f.outstanding = r.back.pending()
	for _, n := range f.Locks {
		f.probes = append(f.probes, r.back.send("ada", n, command.OpStatus, idx+1))
	}
}

// awaitRecovery waits until the fault's probes and the commands
// outstanding at its end have results (or recoveryBudget), and measures.
func (r *rig) awaitRecovery(f *faultRec) {
	watch := append(append([]*cmdRec(nil), f.outstanding...), f.probes...)
	r.back.waitFor(recoveryBudget, func() bool {
		for _, c := range watch {
			if len(c.Results) == 0 && c.Refused == "" {
				return false
			}
		}
		return true
	})
	r.back.mu.Lock()
	var first, all time.Duration
	gotFirst, gotAll := false, true
	for _, c := range f.probes {
		if !c.ResultAt.IsZero() && c.Results[0].State == "succeeded" {
			if d := c.ResultAt.Sub(f.End); !gotFirst || d < first {
				first, gotFirst = d, true
			}
		}
	}
	for _, c := range watch {
		switch {
		case !c.ResultAt.IsZero():
			all = max(all, c.ResultAt.Sub(f.End))
		case c.Refused == "":
			gotAll = false
		}
	}
	r.back.mu.Unlock()
	if gotFirst {
		f.FirstResult = secs(first)
	} else {
		f.Note += fmt.Sprintf(" no probe succeeded within %v;", recoveryBudget)
	}
	if gotAll {
		f.AllResults = secs(all)
	} else {
		f.Note += fmt.Sprintf(" commands without a result %v after the fault;", recoveryBudget)
	}
}

// waitConnected polls /metrics until gatewayd_mqtt_connected is want.
func (r *rig) waitConnected(want float64, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && r.ctx.Err() == nil {
		if body, err := r.scrape(); err == nil {
			if v, ok := metric(body, "gatewayd_mqtt_connected"); ok && v == want {
				return time.Now(), true
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return time.Time{}, false
}

func outage() time.Duration { return time.Second + rand.N(2*time.Second) }

func allLocks(n int) []int {
	l := make([]int, n)
	for i := range l {
		l[i] = i
	}
	return l
}

// inject runs one fault of kind (the n-th of its kind, the idx-th in all).
func (r *rig) inject(kind string, n, idx int) (*faultRec, error) {
	f := &faultRec{Kind: kind, N: n, Start: time.Now()}
	lock := idx % r.nLocks
	var err error
	switch kind {
	case kindBroker:
		f.Locks = allLocks(r.nLocks)
		if err = r.broker.Kill(); err != nil {
			return f, err
		}
		down, sawDown := r.waitConnected(0, 5*time.Second)
		time.Sleep(time.Until(f.Start.Add(outage())))
		if err = r.broker.Restart(r.ctx); err != nil {
			return f, err
		}
		back := time.Now()
		if !sawDown || down.After(back) {
			f.Note += " gatewayd_mqtt_connected never went to 0;"
		}
		r.probe(f, idx)
		if at, ok := r.waitConnected(1, recoveryBudget); ok {
			f.MQTTReconnect = secs(at.Sub(back))
		} else {
			f.Note += fmt.Sprintf(" not connected %v after the broker came back;", recoveryBudget)
		}
	case kindBluez:
		f.Locks = allLocks(r.nLocks)
		if err = r.killBluez(); err != nil {
			return f, err
		}
		time.Sleep(time.Until(f.Start.Add(outage())))
		if err = r.restartBluez(); err != nil {
			return f, err
		}
		r.probe(f, idx)
	case kindDaemon:
		f.Locks = allLocks(r.nLocks)
		if err = r.sup.kill(); err != nil {
			return f, err
		}
		at, err := r.sup.waitReady(f.Start, r.unit.restartDelay+r.unit.startTimeout+10*time.Second)
		if err != nil {
			f.Note += " " + err.Error() + ";"
			f.End = time.Now()
			return f, nil
		}
		f.Ready = secs(at.Sub(f.Start))
		r.probe(f, idx)
	case kindDrop:
		f.Locks = []int{lock}
		if _, err = r.control(fmt.Sprintf("drop %s 1", lockAddr(lock))); err != nil {
			return f, err
		}
		// The fault is the next exchange: a command to the lock, whose
		// connection drops after its first write.
		r.back.send("otto", lock, command.OpStatus, 0)
		r.probe(f, idx)
	case kindAbort:
		f.Locks = []int{lock}
		if _, err = r.control(fmt.Sprintf("abort %s 3", lockAddr(lock))); err != nil {
			return f, err
		}
		r.probe(f, idx)
	case kindRange:
		f.Locks = []int{lock}
		if _, err = r.control("leave " + lockAddr(lock)); err != nil {
			return f, err
		}
		r.back.send("otto", lock, command.OpStatus, 0)
		time.Sleep(3 * time.Second)
		if _, err = r.control("enter " + lockAddr(lock)); err != nil {
			return f, err
		}
		r.probe(f, idx)
	case kindDiskFull:
		f.Locks = allLocks(r.nLocks)
		filler := filepath.Join(r.stateDir, "filler")
		if err = fill(filler); err != nil {
			return f, err
		}
		time.Sleep(3 * time.Second)
		if err = os.Remove(filler); err != nil {
			return f, err
		}
		r.probe(f, idx)
	case kindEPERM:
		f.Locks = allLocks(r.nLocks)
		if err = chattr("+i", r.dbPath()); err != nil {
			return f, err
		}
		time.Sleep(3 * time.Second)
		if err = chattr("-i", r.dbPath()); err != nil {
			return f, err
		}
		r.probe(f, idx)
	case kindReadOnly:
		f.Locks = allLocks(r.nLocks)
		r.sup.stopDaemon()
		if err = remount(r.stateDir, true); err != nil {
			return f, err
		}
		f.Start = time.Now()
		r.sup.startDaemon()
		time.Sleep(5 * time.Second)
		if err = remount(r.stateDir, false); err != nil {
			return f, err
		}
		rw := time.Now()
		at, err := r.sup.waitReady(f.Start, r.unit.restartDelay+r.unit.startTimeout+10*time.Second)
		if err != nil {
			f.Note += " " + err.Error() + ";"
			r.probe(f, idx)
			return f, nil
		}
		f.Ready = secs(max(0, at.Sub(rw)))
		r.probe(f, idx)
	default:
		return f, fmt.Errorf("unknown fault %q", kind)
	}
	return f, nil
}

// fill writes zeros to path until the file system is full.
func fill(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return err
		}
	}
}

func chattr(flag, path string) error {
	if out, err := exec.Command("chattr", flag, path).CombinedOutput(); err != nil {
		return fmt.Errorf("chattr %s %s: %w: %s", flag, path, err, out)
	}
	return nil
}

func remount(dir string, ro bool) error {
	flags := uintptr(syscall.MS_REMOUNT)
	if ro {
		flags |= syscall.MS_RDONLY
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", flags, "size=32m,mode=0700"); err != nil {
		return fmt.Errorf("remount %s (read-only %v): %w", dir, ro, err)
	}
	return nil
}

// plan is the campaign's faults in order: each kind n times, interleaved,
// the read-only start last (a daemon that refuses to start would end the
// campaign's other measurements).
func plan(r *rig, n int) (kinds []string, skipped []string) {
	base := []string{kindBroker, kindBluez, kindDaemon, kindDrop, kindAbort, kindRange}
	if r.tmpfs && r.tmpfsErr == nil {
		base = append(base, kindDiskFull, kindEPERM)
	} else {
		skipped = append(skipped, kindDiskFull, kindEPERM)
	}
	for range n {
		kinds = append(kinds, base...)
	}
	if r.tmpfs {
		for range n {
			kinds = append(kinds, kindReadOnly)
		}
	} else {
		skipped = append(skipped, kindReadOnly)
	}
	return kinds, skipped
}

// campaign runs the faults, then checks and reports.
func campaign(r *rig, o options) error {
	kinds, skipped := plan(r, o.repeat)
	r.say("\n== campaign: %d faults (%d of each kind), steady traffic from otto, probes from ada", len(kinds), o.repeat)
	for _, k := range skipped {
		r.say("   NOT RUN: %s: %v", k, r.tmpfsErr)
	}
	tr, err := r.warmUp(700 * time.Millisecond)
	if err != nil {
		return err
	}
	var faults []*faultRec
	count := map[string]int{}
	var injectErr error
	for i, k := range kinds {
		count[k]++
		f, err := r.inject(k, count[k], i)
		if err != nil {
			injectErr = fmt.Errorf("injecting %s #%d: %w", k, count[k], err)
			break
		}
		r.awaitRecovery(f)
		faults = append(faults, f)
		r.say("   %-20s #%d %s", k, count[k], f.summary())
		time.Sleep(settle)
	}
	tr.end()
	lastEnd := time.Now()
	if len(faults) > 0 {
		lastEnd = faults[len(faults)-1].End
	}
	// Drain: nothing accepted may stay unanswered 60 s after the last fault.
	r.back.drain(lastEnd.Add(60 * time.Second))
	rep := r.finish(faults, skipped, o)
	if injectErr != nil {
		rep.Violations = append(rep.Violations, injectErr.Error())
	}
	return rep.conclude(r, o)
}

func (f *faultRec) summary() string {
	s := ""
	add := func(name string, v *float64) {
		if v != nil {
			s += fmt.Sprintf(" %s %.2fs", name, *v)
		}
	}
	add("reconnect", f.MQTTReconnect)
	add("ready", f.Ready)
	add("first-result", f.FirstResult)
	add("all-results", f.AllResults)
	return s + f.Note
}
