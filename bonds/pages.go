package bonds

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	mathbits "math/bits"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

// checkPages walks the file's page structure the way bbolt will, but
// checking every bound first, so it can neither panic nor fault: from the
// meta page bbolt would use, every branch and leaf page of every bucket
// (page numbers below the high-water mark, no page reached twice, a known
// page type, element counts and key and value extents inside the page and
// its overflow, keys in order within each page and within the range its
// parent gives it) and the freelist (its entries below the high-water
// mark, none twice, none a page in use); and every page below the
// high-water mark must be either in use or free. That is what bbolt's own
// check (tx.Check) finds, in one pass without a map per page; bbolt's
// check runs in a goroutine of its own, where a fault on a garbled key
// extent kills the process, so it only ever runs after this one (db
// check). So Open and db check run checkPages first, and hand the file to
// bbolt only once its structure is sound. It returns nil for a file with
// no valid meta page: bbolt refuses those itself.
//
// It reads through a read-only mapping whose resident part it keeps
// within residentBudget (residentWindow): the walk's memory does not grow
// with the file (issue 14). With ix, it also builds the journal's ID index
// from the journal's keys as it passes them (what loadIDs does in a pass
// of its own), notes the entries that are not finished (what Pending
// looks for, so that its first call reads only those), and records which
// commit it walked.
func checkPages(path string, ix *idIndex) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	m, ok := bestMeta(f)
	if !ok {
		return nil
	}
	ps := int64(m.pageSize)
	if m.pgid < 2 || m.pgid > uint64(fi.Size()/ps) {
		return fmt.Errorf("meta page: high-water mark %d pages of %d bytes, file %d bytes", m.pgid, ps, fi.Size())
	}
	// Read through a private read-only mapping of the pages below the
	// high-water mark: every access below is bounds-checked against it,
	// the file lock keeps it from shrinking meanwhile, and guard turns a
	// fault (the file cut short under us regardless) into an error.
	data, err := syscall.Mmap(int(f.Fd()), 0, int(int64(m.pgid)*ps), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	defer func() { _ = syscall.Munmap(data) }()
	words := (m.pgid + 63) / 64
	w := &pageWalker{data: data, ps: ps, hwm: m.pgid, seen: make([]uint64, words), ix: ix,
		win: newResidentWindow(uintptr(unsafe.Pointer(unsafe.SliceData(data))), uintptr(len(data)))}
	return guard(func() error {
		synced := m.freelist != ^uint64(0)
		if synced {
			w.free = make([]uint64, words)
			if err := w.freelist(m.freelist); err != nil {
				return err
			}
		}
		// The root bucket's tree first; the buckets' own trees after it,
		// at the same time (walkJobs).
		w.jobs = &[]walkJob{}
		if _, err := w.tree(m.root, 0, nil, nil, walkRoot); err != nil {
			return err
		}
		if err := w.walkJobs(); err != nil {
			return err
		}
		if synced {
			for i := uint64(2); i < m.pgid; i++ {
				if (w.seen[i/64]|w.free[i/64])&(1<<(i%64)) == 0 {
					return fmt.Errorf("page %d: neither in use nor free", i)
				}
			}
		} // else bbolt rebuilds the freelist from what is not in use
		if ix != nil {
			ix.txid, ix.size, ix.ok = m.txid, int64(m.pgid)*ps, true
		}
		return nil
	})
}

// meta is what checkPages and checkLength need of a bbolt meta page.
type meta struct {
	pageSize                   uint32
	root, freelist, pgid, txid uint64
	ok                         bool
}

// bbolt's on-disk layout (go.etcd.io/bbolt/internal/common), native byte
// order.
const (
	pageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	elementSize    = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	bucketHeader   = 16 // root pgid u64, sequence u64
	flagBranch     = 0x01
	flagLeaf       = 0x02
	flagFreelist   = 0x10
	leafBucketFlag = 0x01
	maxTreeDepth   = 64
)

// readMeta reads the meta page at off; ok is false unless its magic,
// version and checksum are right.
func readMeta(f *os.File, off int64) meta {
	var b [pageHeaderSize + 64]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return meta{}
	}
	m := b[pageHeaderSize:]
	ne := binary.NativeEndian
	if ne.Uint32(m[0:]) != 0xED0CDAED || ne.Uint32(m[4:]) != 2 {
		return meta{}
	}
	h := fnv.New64a()
	_, _ = h.Write(m[:56])
	if h.Sum64() != ne.Uint64(m[56:]) {
		return meta{}
	}
	return meta{pageSize: ne.Uint32(m[8:]), root: ne.Uint64(m[16:]), freelist: ne.Uint64(m[32:]),
		pgid: ne.Uint64(m[40:]), txid: ne.Uint64(m[48:]), ok: true}
}

// bestMeta is the meta page bbolt uses: of the two valid ones, the one
// with the higher transaction ID.
func bestMeta(f *os.File) (meta, bool) {
	m0 := readMeta(f, 0)
	ps := int64(m0.pageSize)
	if !m0.ok || ps < 512 || ps > 1<<20 {
		ps = int64(os.Getpagesize())
	}
	m1 := readMeta(f, ps)
	best := m0
	if m1.ok && (!m0.ok || m1.txid > m0.txid) {
		best = m1
	}
	if !best.ok || best.pageSize < 512 || best.pageSize > 1<<20 {
		return meta{}, false
	}
	return best, true
}

type pageWalker struct {
	data []byte // the pages below hwm
	ps   int64
	hwm  uint64
	seen []uint64 // bit i: page i reached (a map cost two thirds of the walk)
	free []uint64 // bit i: page i in the freelist (nil: no freelist synced)
	win  *residentWindow
	ix   *idIndex // nil: no index wanted
	// jobs, if not nil, collects the root bucket's buckets instead of
	// walking them at once (walkJobs).
	jobs *[]walkJob
}

// walkJob is a bucket of the root bucket: its tree's root page.
type walkJob struct {
	root  uint64
	depth int
	kind  walkKind
}

// walkJobs walks the trees of the root bucket's buckets (the locks, the
// journal, ...) in GOMAXPROCS goroutines at most, each with a walker of
// its own (its own reached-pages bitset and resident window; all read
// the same mapping and freelist), under guard each; then a page reached
// by two of them is reached twice, as in one walk. On two cores the two
// large buckets are walked at the same time (issue 14: time to READY). A
// worker takes the jobs i, i+n, i+2n... and stops at its first error; the
// error of the first bucket in order that has one is returned (which jobs
// run depends on the errors only, not on timing).
func (w *pageWalker) walkJobs() error {
	var jobs []walkJob
	if w.jobs != nil {
		jobs = *w.jobs
	}
	w.jobs = nil
	n := min(len(jobs), runtime.GOMAXPROCS(0))
	walkers := make([]*pageWalker, n)
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for k := range n {
		jw := &pageWalker{data: w.data, ps: w.ps, hwm: w.hwm, seen: make([]uint64, len(w.seen)), free: w.free,
			win: newResidentWindow(w.win.base, w.win.size)}
		walkers[k] = jw
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer jw.win.release()
			for i := k; i < len(jobs); i += n {
				j := jobs[i]
				jw.ix = nil
				if j.kind == walkJournal {
					jw.ix = w.ix
				}
				if errs[i] = guard(func() error {
					_, err := jw.tree(j.root, j.depth, nil, nil, j.kind)
					return err
				}); errs[i] != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	for _, jw := range walkers {
		for i, set := range jw.seen {
			if both := w.seen[i] & set; both != 0 {
				return fmt.Errorf("page %d: reached twice", uint64(i)*64+uint64(mathbits.TrailingZeros64(both)))
			}
			w.seen[i] |= set
		}
	}
	return nil
}

// What a tree is to the walk: the root bucket's, the journal's (whose keys
// go to the ID index), or another bucket's.
type walkKind int

const (
	walkRoot walkKind = iota
	walkJournal
	walkOther
)

// idIndex is the journal's ID index as checkPages builds it (loadIDs'
// map), the keys of its unfinished entries, and the commit it walked (txid, and size: the high-water mark in
// bytes), for Open to use only if bbolt then opens the same commit.
type idIndex struct {
	ids map[CommandID]int64
	// pending holds the keys of the entries Pending would not skip by
	// their state (pendingHint).
	pending [][]byte
	txid    uint64
	size    int64
	ok      bool
}

func bit(set []uint64, i uint64) bool { return set != nil && set[i/64]&(1<<(i%64)) != 0 }

// page reads page id with its overflow pages, after checking they lie
// below the high-water mark and were not reached before.
func (w *pageWalker) page(id uint64) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("page %d: out of range [2, %d)", id, w.hwm)
	}
	off := int64(id) * w.ps
	hdr := w.data[off : off+pageHeaderSize]
	ne := binary.NativeEndian
	if got := ne.Uint64(hdr[0:]); got != id {
		return nil, fmt.Errorf("page %d: header says page %d", id, got)
	}
	over := uint64(ne.Uint32(hdr[12:]))
	if id+over >= w.hwm {
		return nil, fmt.Errorf("page %d: %d overflow pages run past the high-water mark %d", id, over, w.hwm)
	}
	for i := id; i <= id+over; i++ {
		if bit(w.seen, i) {
			return nil, fmt.Errorf("page %d: reached twice", i)
		}
		w.seen[i/64] |= 1 << (i % 64)
	}
	b := w.data[off : off+int64(over+1)*w.ps]
	w.win.touch(b)
	return b, nil
}

func (w *pageWalker) freelist(id uint64) error {
	b, err := w.page(id)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	ne := binary.NativeEndian
	if fl := ne.Uint16(b[8:]); fl != flagFreelist {
		return fmt.Errorf("freelist page %d: flags %#x", id, fl)
	}
	idx, n := uint64(0), uint64(ne.Uint16(b[10:]))
	if n == 0xFFFF {
		if len(b) < pageHeaderSize+8 {
			return fmt.Errorf("freelist page %d: too short", id)
		}
		idx, n = 1, ne.Uint64(b[pageHeaderSize:])
	}
	if (idx+n)*8 > uint64(len(b)-pageHeaderSize) {
		return fmt.Errorf("freelist page %d: %d entries do not fit in %d bytes", id, n, len(b))
	}
	for i := idx; i < idx+n; i++ {
		p := ne.Uint64(b[pageHeaderSize+8*i:])
		if p < 2 || p >= w.hwm {
			return fmt.Errorf("freelist page %d: free page %d out of range [2, %d)", id, p, w.hwm)
		}
		if bit(w.free, p) {
			return fmt.Errorf("freelist page %d: page %d freed twice", id, p)
		}
		w.free[p/64] |= 1 << (p % 64)
	}
	return nil
}

// tree checks the bucket tree whose root page is id, its keys at least lo
// (nil: no bound) and below hi (nil: none). It returns the largest key.
func (w *pageWalker) tree(id uint64, depth int, lo, hi []byte, kind walkKind) ([]byte, error) {
	if depth > maxTreeDepth {
		return nil, fmt.Errorf("page %d: tree deeper than %d", id, maxTreeDepth)
	}
	b, err := w.page(id)
	if err != nil {
		return nil, err
	}
	if bit(w.free, id) {
		return nil, fmt.Errorf("page %d: in use and in the freelist", id)
	}
	return w.node(b, id, depth, lo, hi, kind)
}

// node checks one branch or leaf page (b, whole with its overflow; or an
// inline bucket's page inside a value) and what it points to, as tree.
// As bbolt's check: keys strictly increase within a page; a page's first
// key is at least lo (for a branch element's child, the element's key;
// for the elements after the first, above the largest key of the
// previous child's subtree), and every key is below hi (the next
// element's key in the parent).
func (w *pageWalker) node(b []byte, id uint64, depth int, lo, hi []byte, kind walkKind) ([]byte, error) {
	ne := binary.NativeEndian
	if len(b) < pageHeaderSize {
		return nil, fmt.Errorf("page %d: %d bytes, shorter than a page header", id, len(b))
	}
	flags, n := ne.Uint16(b[8:]), uint64(ne.Uint16(b[10:]))
	size := uint64(len(b))
	if pageHeaderSize+n*elementSize > size {
		return nil, fmt.Errorf("page %d: %d elements do not fit in %d bytes", id, n, size)
	}
	if flags != flagBranch && flags != flagLeaf {
		return nil, fmt.Errorf("page %d: flags %#x, not a branch or leaf page", id, flags)
	}
	// Every key's extent first: a branch element's key bounds the
	// element before it.
	for i := range n {
		off := pageHeaderSize + i*elementSize
		e := b[off : off+elementSize]
		if flags == flagBranch {
			if pos, ks := uint64(ne.Uint32(e[0:])), uint64(ne.Uint32(e[4:])); off+pos+ks > size {
				return nil, fmt.Errorf("page %d: branch element %d's key runs past the page", id, i)
			}
		} else if pos, ks, vs := uint64(ne.Uint32(e[4:])), uint64(ne.Uint32(e[8:])), uint64(ne.Uint32(e[12:])); off+pos+ks+vs > size {
			return nil, fmt.Errorf("page %d: leaf element %d's key and value run past the page", id, i)
		}
	}
	key := func(i uint64) []byte {
		off := pageHeaderSize + i*elementSize
		e := b[off : off+elementSize]
		if flags == flagBranch {
			pos, ks := uint64(ne.Uint32(e[0:])), uint64(ne.Uint32(e[4:]))
			return b[off+pos : off+pos+ks]
		}
		pos, ks := uint64(ne.Uint32(e[4:])), uint64(ne.Uint32(e[8:]))
		return b[off+pos : off+pos+ks]
	}
	var last []byte
	for i := range n {
		off := pageHeaderSize + i*elementSize
		e := b[off : off+elementSize]
		k := key(i)
		switch {
		case i == 0 && lo != nil && bytes.Compare(k, lo) < 0:
			return nil, fmt.Errorf("page %d: key %d (%x) below its parent's bound (%x)", id, i, k, lo)
		case i > 0 && bytes.Compare(k, last) <= 0:
			return nil, fmt.Errorf("page %d: key %d (%x) not above the one before it (%x)", id, i, k, last)
		case hi != nil && bytes.Compare(k, hi) >= 0:
			return nil, fmt.Errorf("page %d: key %d (%x) not below its parent's bound (%x)", id, i, k, hi)
		}
		last = k
		if flags == flagBranch {
			next := hi
			if i+1 < n {
				next = key(i + 1)
			}
			top, err := w.tree(ne.Uint64(e[8:]), depth+1, k, next, kind)
			if err != nil {
				return nil, err
			}
			if top != nil {
				last = top
			}
			continue
		}
		fl, pos, ks, vs := ne.Uint32(e[0:]), uint64(ne.Uint32(e[4:])), uint64(ne.Uint32(e[8:])), uint64(ne.Uint32(e[12:]))
		if fl&leafBucketFlag == 0 {
			if kind == walkJournal && w.ix != nil {
				if err := w.ix.addEntry(k, b[off+pos+ks:off+pos+ks+vs]); err != nil {
					return nil, err
				}
			}
			continue
		}
		sub := walkOther
		if kind == walkRoot && bytes.Equal(k, bucketJournal) {
			sub = walkJournal
		}
		v := b[off+pos+ks : off+pos+ks+vs]
		if len(v) < bucketHeader {
			return nil, fmt.Errorf("page %d: bucket element %d is %d bytes", id, i, len(v))
		}
		if root := ne.Uint64(v); root != 0 && kind == walkRoot && w.jobs != nil {
			*w.jobs = append(*w.jobs, walkJob{root, depth + 1, sub})
		} else if root != 0 {
			if _, err := w.tree(root, depth+1, nil, nil, sub); err != nil {
				return nil, err
			}
		} else if _, err := w.node(v[bucketHeader:], id, depth+1, nil, nil, sub); err != nil {
			return nil, fmt.Errorf("inline bucket: %w", err)
		}
	}
	return last, nil
}

// add indexes one journal key, with loadIDs' checks.
func (ix *idIndex) add(k []byte) error {
	ns, id, ok := splitJournalKey(k)
	if !ok {
		return fmt.Errorf("journal key %x is %d bytes, want %d", k, len(k), journalKeyLen)
	}
	if _, dup := ix.ids[id]; dup {
		return fmt.Errorf("command %s is in the journal twice", id)
	}
	ix.ids[id] = ns
	return nil
}

// addEntry indexes one journal entry (add), and keeps its key in pending
// unless its state, read as Pending reads it, is terminal.
func (ix *idIndex) addEntry(k, v []byte) error {
	if err := ix.add(k); err != nil {
		return err
	}
	if !finished(v) { // as Pending
		ix.pending = append(ix.pending, bytes.Clone(k))
	}
	return nil
}
