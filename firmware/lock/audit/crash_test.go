package audit

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/lock/flash"
)

// crashGeometry is small so that the ring's 16 entries keep several pages
// live and every collection copies entries.
var crashGeometry = flash.Options{PageSize: 512, Pages: 5}

const (
	crashRing    = 16
	crashAppends = 100
)

// TestPowerCutDuringAppend cuts the power at every device operation of a
// run of Appends on a flash.File (opening the log included), with a reader
// following along. After each reboot: every acknowledged entry is still
// there, unchanged; the interrupted one is either there, chained, or absent
// with its seq free; no seq ever names two different entries; the reader's
// cursor carries on across the reboot without an error; and the log keeps
// working through another reboot.
func TestPowerCutDuringAppend(t *testing.T) {
	dir := t.TempDir()
	// Count the device operations of a clean run.
	total := 0
	{
		fo := crashGeometry
		fo.Faults.Cut = func(flash.Op) bool { total++; return false }
		st, err := flash.Open(filepath.Join(dir, "count.img"), fo)
		must(t, err)
		l := openLog(t, st, crashRing, lockA)
		appendN(t, l, 0, crashAppends)
		st.Close()
	}
	steps := map[flash.Step]int{}
	outcomes := map[string]int{}
	for cut := range total {
		outcomes[crashAppendOnce(t, filepath.Join(dir, fmt.Sprintf("cut%d.img", cut)), cut, steps)]++
	}
	for _, st := range []flash.Step{flash.StepRecord, flash.StepFormat, flash.StepCopy, flash.StepCommit, flash.StepEraseVictim, flash.StepMarkErased} {
		if steps[st] == 0 {
			t.Errorf("no cut during %s", st)
		}
	}
	if outcomes["landed"] == 0 || outcomes["absent"] == 0 {
		t.Errorf("outcomes %v: want both kinds", outcomes)
	}
	t.Logf("%d cut points: %v; interrupted entry: %v", total, steps, outcomes)
}

func crashAppendOnce(t *testing.T, path string, cut int, steps map[flash.Step]int) (outcome string) {
	t.Helper()
	fo := crashGeometry
	fo.Faults = flash.Faults{Seed: uint64(cut), Cut: func(op flash.Op) bool {
		if op.Index == cut {
			steps[op.Step]++
			return true
		}
		return false
	}}
	st, err := flash.Open(path, fo)
	must(t, err)
	seen := map[uint64][]byte{} // seq -> hash of every entry ever observed
	observe := func(e Entry) {
		h := e.Hash()
		if old, ok := seen[e.Seq]; ok && !bytes.Equal(old, h) {
			t.Fatalf("cut %d: seq %d names two different entries", cut, e.Seq)
		}
		seen[e.Seq] = h
	}
	c := NewCursor(lockA)
	interrupted := uint64(0)
	l, err := Open(st, Options{Size: crashRing, LockID: lockA, Now: clock()})
	if err != nil {
		if !errors.Is(err, flash.ErrPowerCut) {
			t.Fatalf("cut %d: Open: %v", cut, err)
		}
	} else {
		for i := range crashAppends {
			seq, err := l.Append(sample(i))
			if err != nil {
				if !errors.Is(err, flash.ErrPowerCut) {
					t.Fatalf("cut %d: Append: %v", cut, err)
				}
				interrupted = uint64(i)
				break
			}
			if seq != uint64(i) {
				t.Fatalf("cut %d: Append %d got seq %d", cut, i, seq)
			}
			if i%7 == 3 { // the reader reads now and then
				p, err := l.Page(c.Next, 16)
				must(t, err)
				if _, err := c.Advance(p); err != nil {
					t.Fatalf("cut %d: reader before the cut: %v", cut, err)
				}
				for _, e := range p.Entries {
					observe(e)
				}
			}
			if i == crashAppends-1 {
				t.Fatalf("cut %d: no power cut", cut)
			}
		}
	}
	acked := interrupted // entries 0..acked-1 were acknowledged
	var ackedHead []byte
	if l != nil {
		ackedHead = l.Head()
	}
	st.Close()

	// Reboot.
	fo.Faults = flash.Faults{}
	st, err = flash.Open(path, fo)
	if err != nil {
		t.Fatalf("cut %d: reboot: %v", cut, err)
	}
	l2, err := Open(st, Options{Size: crashRing, LockID: lockA, Now: clock()})
	if err != nil {
		t.Fatalf("cut %d: reboot: audit Open: %v", cut, err)
	}
	// The interrupted entry: there (the sample, chained to the acked head)
	// or absent; whatever Open appended comes after.
	p, err := l2.Page(acked, 1)
	must(t, err)
	outcome = "absent"
	if l == nil {
		outcome = "open"
	}
	if l != nil && len(p.Entries) == 1 {
		e := p.Entries[0]
		want := sample(int(acked))
		landed := e.Event == want.Event && e.Time == want.Time && e.Status == want.Status
		if landed {
			outcome = "landed"
		}
		if !landed && e.Event != EventPowerCutRecovered {
			t.Fatalf("cut %d: entry %d after reboot is %+v", cut, acked, e)
		}
		if !bytes.Equal(e.PrevHash, ackedHead) {
			t.Fatalf("cut %d: entry %d does not chain to the acknowledged head", cut, acked)
		}
	}
	// Every acknowledged retained entry is unchanged, and the reader
	// carries on.
	all, _ := readAll(t, l2, &c, 16)
	for _, e := range all {
		observe(e)
	}
	for s := l2.Oldest(); s < acked; s++ {
		if _, ok := seen[s]; !ok {
			t.Fatalf("cut %d: acknowledged entry %d not read back", cut, s)
		}
	}
	if l2.Next() < acked {
		t.Fatalf("cut %d: next %d below the %d acknowledged entries", cut, l2.Next(), acked)
	}
	// The log still works, through another reboot.
	appendN(t, l2, 100, 5)
	st.Close()
	st, err = flash.Open(path, fo)
	must(t, err)
	l3 := openLog(t, st, crashRing, lockA)
	all, _ = readAll(t, l3, &c, 16)
	for _, e := range all {
		observe(e)
	}
	if c.Next != l3.Next() {
		t.Fatalf("cut %d: reader at %d, log at %d", cut, c.Next, l3.Next())
	}
	st.Close()
	return outcome
}
