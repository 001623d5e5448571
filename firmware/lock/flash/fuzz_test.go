package flash

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"slices"
	"strings"
	"testing"
)

// oracle computes, independently of mount, what a store opened on img must
// hold: for each key, the newest record (by seq) among the records read in
// order from the start of each live page (committed, and not named by a
// newer committed page whose erase is unfinished) up to the first invalid
// one. A nil value with ok means a tombstone.
func oracle(img []byte, ps int) map[uint16][]byte {
	n := len(img) / ps
	type hdr struct {
		ok, committed, done bool
		gen, srcGen         uint32
		src                 int
	}
	hs := make([]hdr, n)
	var order []int
	for p := range n {
		b := img[p*ps : (p+1)*ps]
		u := func(off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
		if u(0) != 0x464B434C || crc32.ChecksumIEEE(b[:20]) != u(20) {
			continue
		}
		hs[p] = hdr{ok: true, committed: u(24) != 0xFFFFFFFF, done: u(28) != 0xFFFFFFFF,
			gen: u(4), srcGen: u(8), src: int(binary.LittleEndian.Uint16(b[12:]))}
		if hs[p].committed {
			order = append(order, p)
		}
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(hs[b].gen, hs[a].gen) })
	dead := make([]bool, n)
	for _, p := range order {
		if !dead[p] && hs[p].src != 0xFFFF && !hs[p].done && hs[p].src < n {
			dead[hs[p].src] = true
		}
	}
	type best struct {
		seq uint32
		val []byte
	}
	newest := map[uint16]best{}
	for _, p := range order {
		if dead[p] {
			continue
		}
		b := img[p*ps : (p+1)*ps]
		for pos := 32; pos+12 <= ps; {
			key := binary.LittleEndian.Uint16(b[pos:])
			ln := int(binary.LittleEndian.Uint16(b[pos+2:]))
			seq := binary.LittleEndian.Uint32(b[pos+4:])
			if key == 0xFFFF || seq == 0xFFFFFFFF {
				break
			}
			dl := ln
			if ln == 0xFFFF {
				dl = 0
			}
			size := 12 + (dl+3)/4*4
			if pos+size > ps {
				break
			}
			sum := crc32.ChecksumIEEE(append(bytes.Clone(b[pos:pos+8]), b[pos+12:pos+12+dl]...))
			if sum != binary.LittleEndian.Uint32(b[pos+8:]) {
				break
			}
			if cur, ok := newest[key]; !ok || seq > cur.seq {
				var v []byte
				if ln != 0xFFFF {
					v = append([]byte{}, b[pos+12:pos+12+dl]...)
				}
				newest[key] = best{seq, v}
			}
			pos += size
		}
	}
	out := map[uint16][]byte{}
	for k, b := range newest {
		if b.val != nil {
			out[k] = b.val
		}
	}
	return out
}

// fuzzSeeds are images of small: blank, in use, and cut at assorted steps.
func fuzzSeeds(t testing.TB) [][]byte {
	seeds := [][]byte{blankImage(small)}
	img := blankImage(small)
	s, err := openImage(img, small)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apply(s, ringWorkload(3, 40, 7, 30), map[uint16][]byte{}); err != nil {
		t.Fatal(err)
	}
	seeds = append(seeds, img)
	ops := append(workload(5, 60, 5, 40), ringWorkload(5, 60, 9, 44)...)
	steps := countOps(t, small, ops)
	for cut, st := range steps {
		if st != StepRecord || cut%40 == 0 {
			im, _, _ := crashOnce(t, small, ops, cut, uint64(cut))
			seeds = append(seeds, im)
		}
		if len(seeds) > 40 {
			break
		}
	}
	noise := blankImage(small)
	for i := range noise {
		noise[i] = byte(i*131 + i>>3)
	}
	return append(seeds, noise)
}

// FuzzOpen feeds arbitrary bytes as a flash image (4 pages of 256 bytes) to
// Open. It never panics; it either fails with ErrCorrupt or ErrGeometry
// naming a page, or returns a store that holds exactly what the oracle
// reads from the live pages (no valid record silently dropped), passes its
// invariants, takes a Put and a Delete, and reopens to the same content.
func FuzzOpen(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img := blankImage(small)
		copy(img, data)
		orig := bytes.Clone(img)
		s, err := openImage(img, small)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrGeometry) {
				t.Fatalf("Open: %v, want ErrCorrupt or ErrGeometry", err)
			}
			if !strings.Contains(err.Error(), "page ") {
				t.Fatalf("Open: %v names no page", err)
			}
			return
		}
		want := oracle(orig, small.PageSize)
		checkModel(t, s, want, -1)
		for p, ps := range s.pages {
			if !ps.live && !allErased(s.dev.page(p)) {
				t.Fatalf("non-live page %d not erased after Open", p)
			}
			if ps.live && ps.open && !allErased(s.dev.page(p)[ps.end:]) {
				t.Fatalf("open page %d not erased from %d", p, ps.end)
			}
		}
		// The store works: a Put and a Delete (ErrFull is allowed on a
		// crowded image), then a reboot shows the same content.
		if err := s.Put(0x4242, []byte("fuzz")); err == nil {
			want[0x4242] = []byte("fuzz")
		} else if !errors.Is(err, ErrFull) {
			t.Fatalf("Put: %v", err)
		}
		if keys := s.Keys(); len(keys) > 0 {
			if err := s.Delete(keys[0]); err == nil {
				delete(want, keys[0])
			} else if !errors.Is(err, ErrFull) {
				t.Fatalf("Delete: %v", err)
			}
		}
		checkModel(t, s, want, -1)
		s2, err := openImage(img, small)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		checkModel(t, s2, want, -1)
		if !s2.Recovery().Clean() {
			t.Fatalf("reopen after repairs reports %+v", s2.Recovery())
		}
	})
}
