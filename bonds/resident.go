package bonds

import (
	"syscall"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// A read through a file mapping leaves the page it read mapped into the
// process, and counted in its resident set, until the kernel reclaims it:
// a pass over every record of a 350 MB file (the page walk at Open, the
// journal's IDs, the start-up reads) makes the process 350 MB large,
// though every one of those pages is a clean page of the file that the
// page cache holds anyway (issue 14). residentWindow bounds that: after a
// pass has touched budget bytes of the mapping, in the 64 KiB blocks the
// kernel maps at a time around a fault (fault-around), it releases the
// whole mapping (MADV_DONTNEED). For a read-only shared mapping of a file
// that changes nothing but residency: a later read maps the page again
// from the page cache. It must only run while the mapping cannot be
// replaced (bbolt remaps only with no read transaction open, so inside
// one).
type residentWindow struct {
	base, size uintptr  // the mapping's part in use
	blocks     []uint64 // bit i: block i touched since the last release
	touched    int      // blocks set in blocks
	budget     int      // blocks touched before a release
	releases   int
}

// The budget is counted in blocks of the kernel's fault-around (one fault
// maps the pages of the page cache around it, 64 KiB), so a pass keeps
// about residentBudget resident. A file system with large folios (ext4
// since Linux 6.x) may map a whole folio at a fault, up to residentFolio:
// on a pass in file order that adds at most one folio, measured
// (TestResidentWindowBoundsMapping); a walk that jumps around could map
// more between releases, which the benchmarks' resident set would show.
const (
	residentBlock  = 64 << 10 // the kernel's fault-around
	residentBudget = 4 << 20  // bytes of a pass kept resident before a release
	residentFolio  = 2 << 20  // the largest folio a fault maps whole (a PMD)
)

func newResidentWindow(base, size uintptr) *residentWindow {
	n := (size + residentBlock - 1) / residentBlock
	return &residentWindow{base: base, size: size, blocks: make([]uint64, (n+63)/64), budget: residentBudget / residentBlock}
}

// txWindow is the window over bbolt's mapping of the pages tx can read
// (its high-water mark), or nil if there is nothing to bound. tx must stay
// open while the window is used. A write transaction gets none: bbolt
// may remap while it runs (growing the file), and a release of the old
// range could then hit whatever was mapped there next.
func txWindow(tx *bolt.Tx) *residentWindow {
	size := tx.Size()
	if size <= residentBudget || tx.Writable() {
		return nil
	}
	return newResidentWindow(tx.DB().Info().Data, uintptr(size))
}

// touch records a read of b (a slice of the mapping) and releases the
// mapping once budget blocks were touched. A nil window does nothing.
func (w *residentWindow) touch(b []byte) {
	if w == nil || len(b) == 0 {
		return
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if start < w.base || start >= w.base+w.size {
		return // not in the mapping (an inline value copied by bbolt, say)
	}
	first, last := (start-w.base)/residentBlock, (start-w.base+uintptr(len(b))-1)/residentBlock
	for i := first; i <= last && i < uintptr(len(w.blocks))*64; i++ {
		if w.blocks[i/64]&(1<<(i%64)) == 0 {
			w.blocks[i/64] |= 1 << (i % 64)
			w.touched++
		}
	}
	if w.touched >= w.budget {
		w.release()
	}
}

// release drops the mapping's pages from the process (they stay in the
// page cache). Errors are ignored: residency is only a matter of size.
func (w *residentWindow) release() {
	if w == nil {
		return
	}
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, w.base, w.size, syscall.MADV_DONTNEED)
	clear(w.blocks)
	w.touched = 0
	w.releases++
}

// forEachResident is b.ForEach (b a bucket of tx) with the pass's resident
// part of the mapping bounded by a residentWindow, and released at the
// end: a pass over every record leaves none of them resident.
func forEachResident(tx *bolt.Tx, b *bolt.Bucket, fn func(k, v []byte) error) error {
	w := txWindow(tx)
	defer w.release()
	return b.ForEach(func(k, v []byte) error {
		w.touch(k)
		w.touch(v)
		return fn(k, v)
	})
}

// releaseMapped drops the pages of bbolt's mapping that reads left
// resident since the last release (lookups, writes' reads of the pages
// they change): the background loop calls it once a SeenFlushInterval,
// so what a running daemon keeps of the file is what it read in that
// time, not everything it ever read. Nothing changes but residency.
func (db *DB) releaseMapped() {
	_ = db.view(func(tx *bolt.Tx) error {
		txWindow(tx).release()
		return nil
	})
}
