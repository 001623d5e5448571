package flash

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
)

// gcSteps are the steps a collection runs; a crash test must cut at every
// one of them.
var gcSteps = []Step{StepRecord, StepFormat, StepCopy, StepCommit, StepEraseVictim, StepMarkErased}

// TestCrashAtEveryOp is the crash test: a seeded run of Puts and Deletes
// on a small flash (many collections), with the power cut at EVERY device
// operation of the run in turn, each with its own tear. After each cut the
// image is rebooted and checked: every acknowledged op is visible, the
// interrupted one is all old or all new, no other key changed, and the store
// keeps working through another reboot.
func TestCrashAtEveryOp(t *testing.T) {
	t.Parallel()
	t.Run("hot-keys", func(t *testing.T) { crashEveryOp(t, workload(42, 300, 6, 40)) })
	// 9 keys of about 44 bytes: 504 of the 672 bytes of 3 pages are live,
	// so every collection copies.
	t.Run("ring", func(t *testing.T) { crashEveryOp(t, ringWorkload(42, 200, 9, 44)) })
}

func crashEveryOp(t *testing.T, ops []op) {
	o := small
	steps := countOps(t, o, ops)
	for cut := range steps {
		img, model, failed := crashOnce(t, o, ops, cut, uint64(cut))
		verifyAfter(t, o, img, model, ops, failed, "cut at "+steps[cut].String())
	}
	all := make([]int, len(steps))
	for i := range all {
		all[i] = i
	}
	counts := stepCounts(steps, all)
	for _, st := range gcSteps {
		if counts[st] == 0 {
			t.Errorf("no cut during step %s", st)
		}
	}
	t.Logf("%d cut points: %s", len(steps), fmtCounts(counts))
}

// TestCrashTears: the same cut points with other seeds, i.e. other tears
// (how many words of a write land, how much of an erase), at every
// operation that is not a plain record append (and every fourth append).
func TestCrashTears(t *testing.T) {
	t.Parallel()
	o := small
	ops := append(workload(43, 100, 5, 50), ringWorkload(43, 100, 9, 44)...)
	steps := countOps(t, o, ops)
	n := 0
	for cut, st := range steps {
		if st == StepRecord && cut%4 != 0 {
			continue
		}
		for seed := range uint64(3) {
			img, model, failed := crashOnce(t, o, ops, cut, 1000+seed*7919+uint64(cut))
			verifyAfter(t, o, img, model, ops, failed, "tear of "+st.String())
			n++
		}
	}
	t.Logf("%d cut points (3 tears each of %d ops)", n, n/3)
}

// TestCrashDuringRecovery: a second power cut during the reboot's own
// repairs (finishing an erase, erasing leftovers, compacting a torn page),
// at every operation of them.
func TestCrashDuringRecovery(t *testing.T) {
	t.Parallel()
	o := small
	ops := append(workload(44, 120, 6, 40), ringWorkload(44, 120, 9, 44)...)
	steps := countOps(t, o, ops)
	n := 0
	seen := map[Step]int{}
	for cut := range steps {
		img, model, failed := crashOnce(t, o, ops, cut, uint64(cut)*3)
		// Count the reboot's operations.
		var rsteps []Step
		ro := o
		ro.Faults.Cut = func(op Op) bool { rsteps = append(rsteps, op.Step); return false }
		if _, err := openImage(slices.Clone(img), ro); err != nil {
			t.Fatalf("cut %d: reboot: %v", cut, err)
		}
		for j, st := range rsteps {
			img2 := slices.Clone(img)
			ro := o
			ro.Faults = Faults{Cut: CutAt(j), Seed: uint64(cut*100 + j)}
			if _, err := openImage(img2, ro); !errors.Is(err, ErrPowerCut) {
				t.Fatalf("cut %d, recovery cut %d: Open = %v, want ErrPowerCut", cut, j, err)
			}
			m := make(map[uint16][]byte, len(model))
			for k, v := range model {
				m[k] = v
			}
			verifyAfter(t, o, img2, m, ops, failed, "recovery cut at "+st.String())
			seen[st]++
			n++
		}
	}
	for _, st := range []Step{StepEraseSpare, StepEraseVictim, StepMarkErased, StepFormat, StepCopy, StepCommit} {
		if seen[st] == 0 {
			t.Errorf("no recovery cut during step %s", st)
		}
	}
	t.Logf("%d recovery cut points: %s", n, fmtCounts(seen))
}

// TestCrashDefaultGeometry: the nRF52832 layout (8 × 4 KiB), a long run
// with many collections: a cut at every operation of the collections and
// at 60 seeded record appends.
func TestCrashDefaultGeometry(t *testing.T) {
	t.Parallel()
	o := Options{}
	// The audit log's shape: 200 slots of about 100 bytes (22 of the
	// 28 KiB of 7 pages live), rewritten in turn, then random keys.
	ops := append(ringWorkload(45, 500, 200, 100), workload(45, 200, 24, 200)...)
	steps := countOps(t, o, ops)
	var points []int
	var records []int
	for i, st := range steps {
		if st == StepRecord {
			records = append(records, i)
		} else {
			points = append(points, i)
		}
	}
	rng := rand.New(rand.NewPCG(45, 1))
	for range 60 {
		j := rng.IntN(len(records))
		points = append(points, records[j])
		records = slices.Delete(records, j, j+1)
	}
	slices.Sort(points)
	for _, cut := range points {
		img, model, failed := crashOnce(t, o, ops, cut, uint64(cut))
		verifyAfter(t, o, img, model, ops, failed, "cut at "+steps[cut].String())
	}
	counts := stepCounts(steps, points)
	for _, st := range gcSteps {
		if counts[st] == 0 {
			t.Errorf("no cut during step %s", st)
		}
	}
	t.Logf("%d device ops, %d cut points: %s", len(steps), len(points), fmtCounts(counts))
}

// TestCrashFile: the same through real files, fsync and all: the power cut
// tears the file, and reopening the file is the reboot.
func TestCrashFile(t *testing.T) {
	t.Parallel()
	o := Options{PageSize: 512, Pages: 3}
	ops := workload(46, 120, 4, 60)
	steps := countOps(t, o, ops)
	dir := t.TempDir()
	n := 0
	for cut, st := range steps {
		if st == StepRecord && cut%5 != 0 {
			continue
		}
		n++
		path := filepath.Join(dir, "flash.img")
		fo := o
		fo.Faults = Faults{Cut: CutAt(cut), Seed: uint64(cut)}
		s, err := Open(path, fo)
		if err != nil {
			t.Fatal(err)
		}
		model := map[uint16][]byte{}
		failed, err := apply(s, ops, model)
		if !errors.Is(err, ErrPowerCut) {
			t.Fatalf("cut %d: %v", cut, err)
		}
		s.Close()
		s, err = Open(path, o)
		if err != nil {
			t.Fatalf("cut %d: reopen: %v", cut, err)
		}
		in := ops[failed]
		checkModel(t, s, model, int(in.key))
		got, ok, _ := s.Get(in.key)
		old, hadOld := model[in.key]
		isOld := ok == hadOld && string(got) == string(old)
		isNew := in.del && !ok || !in.del && ok && string(got) == string(in.val)
		if !isOld && !isNew {
			t.Fatalf("cut %d: interrupted %v: got %x, %v", cut, in, got, ok)
		}
		if err := s.Put(0x77, []byte("after")); err != nil {
			t.Fatalf("cut %d: Put after reboot: %v", cut, err)
		}
		s.Close()
		s, err = Open(path, o)
		if err != nil {
			t.Fatal(err)
		}
		if v, _, _ := s.Get(0x77); string(v) != "after" {
			t.Fatalf("cut %d: Put after reboot lost", cut)
		}
		s.Close()
		must(t, removeFile(path))
	}
	t.Logf("%d cut points through files", n)
}
