package flash

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
)

// small is a geometry that makes garbage collection frequent.
var small = Options{PageSize: 256, Pages: 4}

func blankImage(o Options) []byte {
	if err := o.normalize(); err != nil {
		panic(err)
	}
	return bytes.Repeat([]byte{0xFF}, o.PageSize*o.Pages)
}

// op is one step of a workload.
type op struct {
	del bool
	key uint16
	val []byte
}

func (o op) String() string {
	if o.del {
		return fmt.Sprintf("delete %#04x", o.key)
	}
	return fmt.Sprintf("put %#04x (%d bytes)", o.key, len(o.val))
}

// workload returns n seeded operations on keys 1..keys with values of
// 0..maxLen bytes; every value is distinct, so a mix of two would show.
// Keys 1 and 2 are hot (three ops in four), so the others stay put long
// enough for collections to copy them.
func workload(seed uint64, n, keys, maxLen int) []op {
	rng := rand.New(rand.NewPCG(seed, 7))
	ops := make([]op, n)
	for i := range ops {
		k := uint16(1 + rng.IntN(keys))
		if rng.IntN(4) != 0 {
			k = uint16(1 + rng.IntN(2))
		}
		if rng.IntN(5) == 0 {
			ops[i] = op{del: true, key: k}
			continue
		}
		v := make([]byte, rng.IntN(maxLen+1))
		for j := range v {
			v[j] = byte(i*31 + j*7 + int(k))
		}
		if len(v) >= 2 {
			v[0], v[1] = byte(i), byte(i>>8)
		}
		ops[i] = op{key: k, val: v}
	}
	return ops
}

// apply runs ops on s, recording the acknowledged ones in model. It returns
// the index of the first op that failed (len(ops) if none) and its error.
func apply(s Store, ops []op, model map[uint16][]byte) (int, error) {
	for i, o := range ops {
		var err error
		if o.del {
			err = s.Delete(o.key)
		} else {
			err = s.Put(o.key, o.val)
		}
		if err != nil {
			return i, err
		}
		if o.del {
			delete(model, o.key)
		} else {
			model[o.key] = bytes.Clone(o.val)
		}
	}
	return len(ops), nil
}

// checkModel fails unless s holds exactly model, ignoring key skip (skip <
// 0 ignores nothing).
func checkModel(t testing.TB, s Store, model map[uint16][]byte, skip int) {
	t.Helper()
	var want []uint16
	for k := range model {
		if int(k) != skip {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	got := slices.DeleteFunc(s.Keys(), func(k uint16) bool { return int(k) == skip })
	if !slices.Equal(got, want) {
		t.Fatalf("Keys = %v, want %v", got, want)
	}
	for _, k := range want {
		v, ok, err := s.Get(k)
		if err != nil || !ok || !bytes.Equal(v, model[k]) {
			t.Fatalf("Get(%#04x) = %x, %v, %v; want %x", k, v, ok, err, model[k])
		}
	}
}

// countOps runs ops on a fresh image and returns the step of every device
// operation.
func countOps(t testing.TB, o Options, ops []op) []Step {
	t.Helper()
	var steps []Step
	o.Faults = Faults{Cut: func(op Op) bool { steps = append(steps, op.Step); return false }}
	s, err := openImage(blankImage(o), o)
	if err != nil {
		t.Fatal(err)
	}
	if i, err := apply(s, ops, map[uint16][]byte{}); err != nil {
		t.Fatalf("clean run: op %d: %v", i, err)
	}
	return steps
}

// crashOnce runs ops on a fresh image with a power cut at device operation
// cut, reboots, and checks the outcome: every acknowledged op is visible,
// the interrupted one is all old or all new, nothing else changed, and the
// store works afterwards. It returns the image after the cut (before the
// reboot) and the model at that point, with the interrupted key resolved.
func crashOnce(t testing.TB, o Options, ops []op, cut int, seed uint64) (img []byte, model map[uint16][]byte, interrupted int) {
	t.Helper()
	img = blankImage(o)
	fo := o
	fo.Faults = Faults{Cut: CutAt(cut), Seed: seed}
	s, err := openImage(img, fo)
	if err != nil {
		t.Fatal(err)
	}
	model = map[uint16][]byte{}
	failed, err := apply(s, ops, model)
	if !errors.Is(err, ErrPowerCut) {
		t.Fatalf("cut %d: op %d: got %v, want ErrPowerCut", cut, failed, err)
	}
	if err := s.Put(1, []byte("x")); !errors.Is(err, ErrPowerCut) {
		t.Fatalf("cut %d: dead store: Put = %v, want ErrPowerCut", cut, err)
	}
	return slices.Clone(img), model, failed
}

// verifyAfter reboots img and checks it against model, with ops[failed]
// allowed to be either done or not; then it runs more ops, reboots again
// and checks again.
func verifyAfter(t testing.TB, o Options, img []byte, model map[uint16][]byte, ops []op, failed int, what string) {
	t.Helper()
	s, err := openImage(img, o)
	if err != nil {
		t.Fatalf("%s: reboot: %v", what, err)
	}
	in := ops[failed]
	checkModel(t, s, model, int(in.key))
	old, hadOld := model[in.key]
	got, ok, err := s.Get(in.key)
	if err != nil {
		t.Fatalf("%s: Get: %v", what, err)
	}
	switch {
	case ok == hadOld && (!ok || bytes.Equal(got, old)):
		// old
	case in.del && !ok, !in.del && ok && bytes.Equal(got, in.val):
		// new
		if in.del {
			delete(model, in.key)
		} else {
			model[in.key] = bytes.Clone(in.val)
		}
	default:
		t.Fatalf("%s: interrupted %v: Get = %x, %v; want old (%x, %v) or new", what, in, got, ok, old, hadOld)
	}
	// The store still works: more ops, another reboot.
	more := ops[failed+1:]
	if len(more) > 40 {
		more = more[:40]
	}
	if i, err := apply(s, more, model); err != nil {
		t.Fatalf("%s: after reboot: op %d: %v", what, i, err)
	}
	checkModel(t, s, model, -1)
	s2, err := openImage(img, o)
	if err != nil {
		t.Fatalf("%s: second reboot: %v", what, err)
	}
	if !s2.Recovery().Clean() {
		t.Fatalf("%s: second reboot after a clean run reports %+v", what, s2.Recovery())
	}
	checkModel(t, s2, model, -1)
	checkInvariants(t, s2)
}

// checkInvariants checks the store's in-memory state against the image.
func checkInvariants(t testing.TB, s *File) {
	t.Helper()
	live := 0
	for p, ps := range s.pages {
		if !ps.live {
			if !allErased(s.dev.page(p)) {
				t.Fatalf("non-live page %d is not erased", p)
			}
			continue
		}
		live++
		if ps.open && !allErased(s.dev.page(p)[ps.end:]) {
			t.Fatalf("open page %d is not erased from %d", p, ps.end)
		}
	}
	if live >= len(s.pages) {
		t.Fatalf("%d live pages of %d: no spare", live, len(s.pages))
	}
	for k, l := range s.index {
		if !s.pages[l.page].live || l.rec.key != k {
			t.Fatalf("index of %#04x points to page %d (live %v)", k, l.page, s.pages[l.page].live)
		}
	}
}

func stepCounts(steps []Step, idx []int) map[Step]int {
	m := map[Step]int{}
	for _, i := range idx {
		m[steps[i]]++
	}
	return m
}

func fmtCounts(m map[Step]int) string {
	keys := slices.Sorted(maps.Keys(m))
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, m[k])
	}
	return b.String()
}

func removeFile(path string) error { return os.Remove(path) }

// ringWorkload models the audit log: keys 1..keys rewritten in turn with
// values of size-8..size bytes, so the flash holds many live records and
// every collection copies some; one op in ten is a random Put or Delete.
func ringWorkload(seed uint64, n, keys, size int) []op {
	rng := rand.New(rand.NewPCG(seed, 9))
	ops := make([]op, n)
	for i := range ops {
		k := uint16(1 + i%keys)
		if rng.IntN(10) == 0 {
			k = uint16(1 + rng.IntN(keys))
			if rng.IntN(2) == 0 {
				ops[i] = op{del: true, key: k}
				continue
			}
		}
		v := make([]byte, size-8+rng.IntN(9))
		for j := range v {
			v[j] = byte(i*13 + j)
		}
		v[0], v[1] = byte(i), byte(i>>8)
		ops[i] = op{key: k, val: v}
	}
	return ops
}
