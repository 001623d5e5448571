package flash

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
)

// Options configure a File. The zero value is the nRF52832 layout: 8 pages
// of 4 KiB.
type Options struct {
	// PageSize is the erase page in bytes: a power of two, 256..32768.
	// Default DefaultPageSize (4096).
	PageSize int
	// Pages is the number of pages, 2..255; one of them is always kept
	// erased for garbage collection. Default DefaultPages (8).
	Pages int
	// Faults injects power cuts, for tests.
	Faults Faults
}

func (o *Options) normalize() error {
	if o.PageSize == 0 {
		o.PageSize = DefaultPageSize
	}
	if o.Pages == 0 {
		o.Pages = DefaultPages
	}
	if o.PageSize < 256 || o.PageSize > 32768 || o.PageSize&(o.PageSize-1) != 0 {
		return fmt.Errorf("%w: PageSize %d, want a power of two in 256..32768", ErrBadOptions, o.PageSize)
	}
	if o.Pages < 2 || o.Pages > 255 {
		return fmt.Errorf("%w: Pages %d, want 2..255", ErrBadOptions, o.Pages)
	}
	return nil
}

// File is a Store kept in a flash image file (the flash model of doc.go).
// Reads are served from memory; every write goes to the file, and Put and
// Delete fsync before they return.
type File struct {
	mu      sync.Mutex
	dev     *device
	ps      int // page size
	pages   []pageState
	index   map[uint16]loc // newest record of each key, tombstones included
	nextSeq uint32
	maxGen  uint32
	active  int   // page that takes appends, or -1
	err     error // sticky: ErrPowerCut, ErrClosed, ErrProgram or an I/O error
	rec     Recovery
}

// pageState is what the store knows of one page.
type pageState struct {
	live bool // committed, not replaced: its records count
	gen  uint32
	recs []record
	end  int  // append offset
	open bool // the flash from end on is erased: records may be appended
}

// loc is where a record is.
type loc struct {
	page int
	rec  record
}

// Open opens the flash image at path, creating it erased (all 0xFF) if it
// does not exist, and mounts it: it reads every page, finishes or undoes a
// garbage collection that a power cut interrupted, erases leftovers and
// compacts a page that ends in a torn record (see Recovery). A corrupt
// image is an error wrapping ErrCorrupt that names the page; Open never
// drops a valid record it cannot prove obsolete.
func Open(path string, opts Options) (*File, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	size := int64(opts.PageSize) * int64(opts.Pages)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("flash: open: %w", err)
	}
	buf, err := readImage(f, size)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("flash: open %s: %w", path, err)
	}
	s, err := mount(newDevice(buf, f, opts.PageSize, opts.Faults))
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("flash: open %s: %w", path, err)
	}
	return s, nil
}

// readImage reads the whole image, after creating it erased if the file is
// empty.
func readImage(f *os.File, size int64) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 {
		// A new image is factory-erased flash.
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xFF}, int(size)), 0); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
	} else if st.Size() != size {
		return nil, fmt.Errorf("%w: image is %d bytes, options say %d", ErrGeometry, st.Size(), size)
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, size), buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// openImage mounts an in-memory image (tests and fuzzing): buf is the
// flash and is modified in place.
func openImage(buf []byte, opts Options) (*File, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	if len(buf) != opts.PageSize*opts.Pages {
		return nil, fmt.Errorf("%w: image is %d bytes, options say %d", ErrGeometry, len(buf), opts.PageSize*opts.Pages)
	}
	return mount(newDevice(buf, nil, opts.PageSize, opts.Faults))
}

// mount reads the image and brings it to a clean state (doc.go, "Mount").
func mount(dev *device) (*File, error) {
	n, ps := dev.pages, dev.pageSize
	s := &File{dev: dev, ps: ps, pages: make([]pageState, n), index: make(map[uint16]loc), active: -1}

	var (
		hdrs     = make([]header, n)
		valid    = make([]bool, n)
		blank    = make([]bool, n)
		seqFloor uint32
		maxSeq   uint32
		seenSeq  bool
	)
	noteSeq := func(seq uint32) {
		if !seenSeq || seq > maxSeq {
			maxSeq, seenSeq = seq, true
		}
	}

	// 1. Classify the pages by their headers.
	for p := range n {
		pg := dev.page(p)
		if allErased(pg) {
			blank[p] = true
			continue
		}
		h, ok := parseHeader(pg)
		if !ok {
			continue
		}
		if h.log2Size != log2(ps) || int(h.pages) != n {
			return nil, fmt.Errorf("%w: page %d was formatted for %d pages of 2^%d bytes", ErrGeometry, p, h.pages, h.log2Size)
		}
		if h.gen == noGen {
			return nil, fmt.Errorf("%w: page %d: generation 0xffffffff", ErrCorrupt, p)
		}
		hdrs[p], valid[p] = h, true
		s.maxGen = max(s.maxGen, h.gen)
		seqFloor = max(seqFloor, h.seqFloor)
	}

	// 2. Unfinished erases: a committed page whose src_erased word is not
	// written names the page it replaced, which is obsolete whatever it
	// holds. Newest claims first, so that an obsolete page claims nothing.
	var claimers []int
	for p := range n {
		if valid[p] && hdrs[p].committed {
			claimers = append(claimers, p)
		}
	}
	slices.SortFunc(claimers, func(a, b int) int { return cmp.Compare(hdrs[b].gen, hdrs[a].gen) })
	obsolete := make([]bool, n)
	type claim struct{ victim, by int }
	var pending []claim
	for _, c := range claimers {
		h := hdrs[c]
		if obsolete[c] || h.srcPage == noPage || h.srcErased {
			continue
		}
		v := int(h.srcPage)
		if v >= n || v == c || h.srcGen >= h.gen {
			return nil, fmt.Errorf("%w: page %d (generation %d) names page %d, generation %d, as the page it replaced", ErrCorrupt, c, h.gen, v, h.srcGen)
		}
		if valid[v] && hdrs[v].gen != h.srcGen {
			return nil, fmt.Errorf("%w: page %d holds generation %d, but page %d replaced generation %d there and has not seen it erased", ErrCorrupt, v, hdrs[v].gen, c, h.srcGen)
		}
		obsolete[v] = true
		pending = append(pending, claim{v, c})
	}

	// 3. Read the live pages' logs and index their records.
	var strays []loc
	torn := make([]bool, n)
	for p := range n {
		if !valid[p] || !hdrs[p].committed || obsolete[p] {
			continue
		}
		pg := dev.page(p)
		sc := scanLog(pg)
		s.pages[p] = pageState{live: true, gen: hdrs[p].gen, recs: sc.recs, end: sc.end, open: sc.clean}
		torn[p] = !sc.clean
		if !sc.clean {
			for _, r := range bruteScan(pg, sc.strayFrom) {
				strays = append(strays, loc{p, r})
			}
		}
		for _, r := range sc.recs {
			noteSeq(r.seq)
			if err := s.insert(loc{p, r}); err != nil {
				return nil, err
			}
		}
	}

	// 4. Every other page is about to be erased. Whatever valid record it
	// holds must be accounted for: a page whose erase is unfinished is
	// obsolete by proof (step 2); anything else may be dropped only if the
	// live records hold the same record or a newer one of the same key.
	var discard []int
	for p := range n {
		switch {
		case blank[p] || s.pages[p].live:
		case obsolete[p]:
			for _, r := range bruteScan(dev.page(p), PageHeaderSize) {
				noteSeq(r.seq)
			}
		default:
			discard = append(discard, p)
			pg := dev.page(p)
			from := PageHeaderSize
			if valid[p] {
				sc := scanLog(pg)
				for _, r := range sc.recs {
					strays = append(strays, loc{p, r})
				}
				from = sc.strayFrom
			}
			for _, r := range bruteScan(pg, from) {
				strays = append(strays, loc{p, r})
			}
		}
	}
	for _, st := range strays {
		noteSeq(st.rec.seq)
		if !s.dominated(st) {
			return nil, fmt.Errorf("%w: page %d offset %d: valid record (key %#04x, seq %d) outside the page's log, newer than the store's copy; refusing to drop it",
				ErrCorrupt, st.page, st.rec.off, st.rec.key, st.rec.seq)
		}
	}
	s.nextSeq = seqFloor
	if seenSeq && maxSeq+1 > s.nextSeq {
		s.nextSeq = maxSeq + 1
	}

	// 5. Repairs, each as power-cut safe as the protocol itself: finish
	// the unfinished erases, erase the leftovers, compact torn pages.
	for _, c := range pending {
		if !allErased(dev.page(c.victim)) {
			if err := dev.erase(c.victim, StepEraseVictim); err != nil {
				return nil, err
			}
			if err := dev.sync(); err != nil {
				return nil, err
			}
			s.rec.PagesErased++
		}
		if le32(dev.page(c.by), offSrcErased) == erasedWord {
			if err := dev.write(c.by, offSrcErased, make([]byte, WordSize), StepMarkErased); err != nil {
				return nil, err
			}
		}
		s.rec.UnfinishedErase = true
	}
	for _, p := range discard {
		if err := dev.erase(p, StepEraseSpare); err != nil {
			return nil, err
		}
		s.rec.PagesErased++
		s.rec.InterruptedGC = true
	}
	if err := dev.sync(); err != nil {
		return nil, err
	}
	s.pickActive()
	for p := range n {
		if !torn[p] {
			continue
		}
		s.rec.TornRecord = true
		if s.spare() >= 0 {
			if err := s.collect(p); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// insert indexes a live record; two different records with one key and one
// sequence number are corruption.
func (s *File) insert(l loc) error {
	cur, ok := s.index[l.rec.key]
	switch {
	case !ok || l.rec.seq > cur.rec.seq:
		s.index[l.rec.key] = l
	case l.rec.seq == cur.rec.seq && !bytes.Equal(s.raw(l), s.raw(cur)):
		return fmt.Errorf("%w: page %d offset %d: record (key %#04x, seq %d) differs from the one at page %d offset %d",
			ErrCorrupt, l.page, l.rec.off, l.rec.key, l.rec.seq, cur.page, cur.rec.off)
	}
	return nil
}

// dominated reports whether the live state makes the record at l obsolete:
// it holds the same record, or a newer one of the same key.
func (s *File) dominated(l loc) bool {
	cur, ok := s.index[l.rec.key]
	return ok && (cur.rec.seq > l.rec.seq || cur.rec.seq == l.rec.seq && bytes.Equal(s.raw(l), s.raw(cur)))
}

// raw returns the bytes of the record at l.
func (s *File) raw(l loc) []byte {
	return s.dev.page(l.page)[l.rec.off : l.rec.off+l.rec.size]
}

// pickActive makes the newest open live page the append page.
func (s *File) pickActive() {
	s.active = -1
	for p, ps := range s.pages {
		if ps.live && ps.open && (s.active < 0 || ps.gen > s.pages[s.active].gen) {
			s.active = p
		}
	}
}

// spare returns the lowest non-live page, or -1.
func (s *File) spare() int {
	for p, ps := range s.pages {
		if !ps.live {
			return p
		}
	}
	return -1
}

// capacity is the record space of a page.
func (s *File) capacity() int { return s.ps - PageHeaderSize }

// maxData is the largest value of this geometry.
func (s *File) maxData() int { return s.capacity() - RecordHeaderSize }

// keep lists the records of live page v that a collection must copy: the
// newest record of each key, except a tombstone that no other live page
// needs (no older record of its key is left anywhere else).
func (s *File) keep(v int) []record { return s.keepBut(v, -1) }

// keepBut is keep without the record of key drop (-1: none).
func (s *File) keepBut(v int, drop int) []record {
	var out []record
	for _, r := range s.pages[v].recs {
		cur := s.index[r.key]
		if cur.page != v || cur.rec.off != r.off || int(r.key) == drop {
			continue // superseded, or being deleted
		}
		if r.tomb && !s.heldElsewhere(r.key, v) {
			continue
		}
		out = append(out, r)
	}
	return out
}

func (s *File) heldElsewhere(key uint16, v int) bool {
	for p, ps := range s.pages {
		if p == v || !ps.live {
			continue
		}
		for _, r := range ps.recs {
			if r.key == key {
				return true
			}
		}
	}
	return false
}

func (s *File) liveBytes(v int) int {
	n := 0
	for _, r := range s.keep(v) {
		n += r.size
	}
	return n
}

// room returns a page that can take size more bytes, formatting a fresh
// page or collecting garbage if it must.
func (s *File) room(size int) (int, error) {
	if a := s.active; a >= 0 && s.pages[a].open && s.pages[a].end+size <= s.ps {
		return a, nil
	}
	best := -1
	spares := 0
	for p, ps := range s.pages {
		switch {
		case !ps.live:
			spares++
		case ps.open && ps.end+size <= s.ps && (best < 0 || ps.gen > s.pages[best].gen):
			best = p
		}
	}
	if best >= 0 {
		s.active = best
		return best, nil
	}
	if spares >= 2 {
		if err := s.formatFresh(s.spare()); err != nil {
			return -1, err
		}
		return s.active, nil
	}
	victim, bestFree := -1, -1
	for p, ps := range s.pages {
		if !ps.live {
			continue
		}
		free := s.capacity() - s.liveBytes(p)
		if free >= size && (free > bestFree || free == bestFree && ps.gen < s.pages[victim].gen) {
			victim, bestFree = p, free
		}
	}
	if victim < 0 || spares == 0 {
		return -1, ErrFull
	}
	if err := s.collect(victim); err != nil {
		return -1, err
	}
	return s.active, nil
}

// nextGen returns the generation of the next formatted page.
func (s *File) nextGen() (uint32, error) {
	if s.maxGen >= noGen-1 {
		return 0, ErrExhausted
	}
	return s.maxGen + 1, nil
}

// prepare erases page p unless it is erased already.
func (s *File) prepare(p int) error {
	if allErased(s.dev.page(p)) {
		return nil
	}
	return s.dev.erase(p, StepEraseSpare)
}

func (s *File) header(gen uint32, srcGen uint32, srcPage uint16) []byte {
	return encodeHeader(header{gen: gen, srcGen: srcGen, srcPage: srcPage,
		log2Size: log2(s.ps), pages: uint8(len(s.pages)), seqFloor: s.nextSeq})
}

// formatFresh turns the erased page p into an empty live page.
func (s *File) formatFresh(p int) error {
	gen, err := s.nextGen()
	if err != nil {
		return err
	}
	if err := s.prepare(p); err != nil {
		return s.fail(err)
	}
	if err := s.dev.write(p, 0, s.header(gen, noGen, noPage), StepFormat); err != nil {
		return s.fail(err)
	}
	if err := s.dev.sync(); err != nil {
		return s.fail(err)
	}
	if err := s.dev.write(p, offCommitted, make([]byte, WordSize), StepCommit); err != nil {
		return s.fail(err)
	}
	if err := s.dev.sync(); err != nil {
		return s.fail(err)
	}
	s.maxGen = gen
	s.pages[p] = pageState{live: true, gen: gen, end: PageHeaderSize, open: true}
	s.active = p
	return nil
}

// collect is the garbage collection of live page v into the spare page
// (doc.go, "Garbage collection"). The new page becomes the append page.
func (s *File) collect(v int) error { return s.collectBut(v, -1) }

// collectBut collects v without the newest record of key drop (-1: none),
// which deletes that key at the commit: the caller makes sure no other
// live page holds a record of it.
func (s *File) collectBut(v int, drop int) error {
	sp := s.spare()
	if sp < 0 {
		return ErrFull
	}
	gen, err := s.nextGen()
	if err != nil {
		return err
	}
	keep := s.keepBut(v, drop)
	steps := []func() error{
		func() error { return s.prepare(sp) },
		func() error { return s.dev.write(sp, 0, s.header(gen, s.pages[v].gen, uint16(v)), StepFormat) },
	}
	s.maxGen = gen
	moved := make([]record, len(keep))
	pos := PageHeaderSize
	for i, r := range keep {
		data := bytes.Clone(s.raw(loc{v, r}))
		at := pos
		steps = append(steps, func() error { return s.dev.write(sp, at, data, StepCopy) })
		moved[i] = r
		moved[i].off = pos
		pos += r.size
	}
	steps = append(steps,
		s.dev.sync,
		func() error { return s.dev.write(sp, offCommitted, make([]byte, WordSize), StepCommit) },
		s.dev.sync,
		func() error { return s.dev.erase(v, StepEraseVictim) },
		s.dev.sync,
		func() error { return s.dev.write(sp, offSrcErased, make([]byte, WordSize), StepMarkErased) },
		s.dev.sync,
	)
	for _, step := range steps {
		if err := step(); err != nil {
			return s.fail(err)
		}
	}
	// The index follows the moved records; dropped tombstones leave it.
	kept := make(map[int]record, len(keep))
	for i, r := range keep {
		kept[r.off] = moved[i]
	}
	for _, r := range s.pages[v].recs {
		cur := s.index[r.key]
		if cur.page != v || cur.rec.off != r.off {
			continue
		}
		if m, ok := kept[r.off]; ok {
			s.index[r.key] = loc{sp, m}
		} else {
			delete(s.index, r.key)
		}
	}
	s.pages[sp] = pageState{live: true, gen: gen, recs: moved, end: pos, open: true}
	s.pages[v] = pageState{}
	s.active = sp
	return nil
}

// fail makes a device error sticky: after a power cut or an I/O error the
// in-memory state no longer matches the flash.
func (s *File) fail(err error) error {
	if s.err == nil {
		s.err = err
	}
	return err
}

// write appends one record for key (a tombstone if tomb) and syncs.
func (s *File) write(key uint16, data []byte, tomb bool) error {
	if s.nextSeq >= noGen {
		return ErrExhausted
	}
	n := len(data)
	if tomb {
		n = 0
	}
	p, err := s.room(recordSize(n))
	if err != nil {
		return err
	}
	b := encodeRecord(key, s.nextSeq, data, tomb)
	off := s.pages[p].end
	if err := s.dev.write(p, off, b, StepRecord); err != nil {
		return s.fail(err)
	}
	if err := s.dev.sync(); err != nil {
		return s.fail(err)
	}
	r := record{key: key, seq: s.nextSeq, off: off, size: len(b), dlen: n, tomb: tomb}
	s.pages[p].recs = append(s.pages[p].recs, r)
	s.pages[p].end += len(b)
	s.index[key] = loc{p, r}
	s.nextSeq++
	return nil
}

// Get returns a copy of the value of key.
func (s *File) Get(key uint16) ([]byte, bool, error) {
	if key == ReservedKey {
		return nil, false, fmt.Errorf("flash: get %#04x: %w", key, ErrBadKey)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, false, fmt.Errorf("flash: get %#04x: %w", key, s.err)
	}
	cur, ok := s.index[key]
	if !ok || cur.rec.tomb {
		return nil, false, nil
	}
	at := cur.rec.off + RecordHeaderSize
	return bytes.Clone(s.dev.page(cur.page)[at : at+cur.rec.dlen]), true, nil
}

// Put stores data under key: one record appended, after a garbage
// collection if the store needs room, then fsync.
func (s *File) Put(key uint16, data []byte) error {
	if key == ReservedKey {
		return fmt.Errorf("flash: put %#04x: %w", key, ErrBadKey)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return fmt.Errorf("flash: put %#04x: %w", key, s.err)
	}
	if len(data) > s.maxData() {
		return fmt.Errorf("flash: put %#04x: %d bytes, limit %d: %w", key, len(data), s.maxData(), ErrTooLarge)
	}
	if err := s.write(key, data, false); err != nil {
		return fmt.Errorf("flash: put %#04x: %w", key, err)
	}
	return nil
}

// Delete removes key: a tombstone record, unless the key has no value.
func (s *File) Delete(key uint16) error {
	if key == ReservedKey {
		return fmt.Errorf("flash: delete %#04x: %w", key, ErrBadKey)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return fmt.Errorf("flash: delete %#04x: %w", key, s.err)
	}
	cur, ok := s.index[key]
	if !ok || cur.rec.tomb {
		return nil
	}
	err := s.write(key, nil, true)
	if errors.Is(err, ErrFull) && !s.heldElsewhere(key, cur.page) && s.spare() >= 0 {
		// No room for a tombstone: collect the key's page without the key.
		// The commit of the new page is the deletion, as atomic as a
		// record write, and frees at least the record's space.
		err = s.collectBut(cur.page, int(key))
	}
	if err != nil {
		return fmt.Errorf("flash: delete %#04x: %w", key, err)
	}
	return nil
}

// Keys returns the keys with a value, ascending; nil once the store has
// failed.
func (s *File) Keys() []uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil
	}
	keys := make([]uint16, 0, len(s.index))
	for k, l := range s.index {
		if !l.rec.tomb {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// Recovery reports what Open found and repaired.
func (s *File) Recovery() Recovery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rec
}

// Close syncs and closes the image file. The File fails every call
// afterwards with ErrClosed. Closing a File that a power cut killed only
// releases the file.
func (s *File) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if errors.Is(s.err, ErrClosed) {
		return fmt.Errorf("flash: close: %w", ErrClosed)
	}
	var err error
	if s.err == nil {
		err = s.dev.sync()
	}
	if s.dev.f != nil {
		if cerr := s.dev.f.Close(); err == nil {
			err = cerr
		}
	}
	s.err = ErrClosed
	if err != nil {
		return fmt.Errorf("flash: close: %w", err)
	}
	return nil
}
