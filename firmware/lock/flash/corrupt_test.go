package flash

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// filled returns an image of small with a few records on pages 0 and 1, and
// the model.
func filled(t *testing.T) ([]byte, map[uint16][]byte) {
	t.Helper()
	img := blankImage(small)
	s, err := openImage(img, small)
	if err != nil {
		t.Fatal(err)
	}
	model := map[uint16][]byte{}
	for i := range 8 {
		v := bytes.Repeat([]byte{byte(0x10 + i)}, 30)
		must(t, s.Put(uint16(1+i), v))
		model[uint16(1+i)] = v
	}
	if !s.pages[0].live || !s.pages[1].live {
		t.Fatal("expected pages 0 and 1 in use")
	}
	return img, model
}

func wantCorrupt(t *testing.T, img []byte, page string) {
	t.Helper()
	_, err := openImage(img, small)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), page) {
		t.Fatalf("Open = %v, want ErrCorrupt naming %q", err, page)
	}
}

// TestCorruptHeaderKeepsRecords: a bit flip in a page header makes the
// header invalid, but the page still holds valid records the store has no
// other copy of: Open must refuse, naming the page, not drop them.
func TestCorruptHeaderKeepsRecords(t *testing.T) {
	img, _ := filled(t)
	img[small.PageSize+offGen] ^= 0x01 // page 1's header CRC no longer matches
	wantCorrupt(t, img, "page 1 offset 32")
}

// TestCorruptRecordInTheMiddle: a bit flip in a record that valid records
// follow is not a torn tail.
func TestCorruptRecordInTheMiddle(t *testing.T) {
	img, _ := filled(t)
	img[PageHeaderSize+RecordHeaderSize+3] ^= 0x80 // data of page 0's first record
	wantCorrupt(t, img, "page 0 offset")
}

// TestCorruptDuplicateSeq: two records with the same key and seq but other
// data.
func TestCorruptDuplicateSeq(t *testing.T) {
	img, _ := filled(t)
	// Append to page 1 a record that repeats page 0's first record's key
	// and seq with other data.
	r, ok := parseRecord(img[:small.PageSize], PageHeaderSize)
	if !ok {
		t.Fatal("no record at page 0")
	}
	s, err := openImage(bytes.Clone(img), small)
	if err != nil {
		t.Fatal(err)
	}
	p := s.pages[1]
	dup := encodeRecord(r.key, r.seq, []byte("other"), false)
	copy(img[small.PageSize+p.end:], dup)
	wantCorrupt(t, img, "page 1 offset")
}

// TestCorruptClaims: a committed page whose erase claim contradicts the
// page it names.
func TestCorruptClaims(t *testing.T) {
	img, _ := filled(t)
	// Rewrite page 1's header as a GC target of page 0 with a wrong
	// generation, committed, erase unfinished.
	h, _ := parseHeader(img[small.PageSize:])
	h.srcPage, h.srcGen = 0, 0 // page 0 holds generation 1
	copy(img[small.PageSize:], encodeHeader(h))
	wantCorrupt(t, img, "page 0 holds generation 1")
	h.srcPage, h.srcGen = 0, h.gen+1 // a source newer than the copy
	copy(img[small.PageSize:], encodeHeader(h))
	wantCorrupt(t, img, "page 1")
	h.srcPage, h.srcGen = 1, h.gen-1 // names itself
	copy(img[small.PageSize:], encodeHeader(h))
	wantCorrupt(t, img, "page 1")
}

// TestTornTailIsNotCorruption: a torn record at the end of the log (any
// prefix of its words, the last one half-programmed) is expected, whatever
// its data holds, even the image of a valid record.
func TestTornTailIsNotCorruption(t *testing.T) {
	img, model := filled(t)
	s, err := openImage(bytes.Clone(img), small)
	if err != nil {
		t.Fatal(err)
	}
	p, end := s.active, s.pages[s.active].end
	// The data embeds a valid record image of a key the store does not
	// have, with a huge seq.
	inner := encodeRecord(0x0BAD, 0xFFFFFF00, []byte("evil"), false)
	full := encodeRecord(9, s.nextSeq, inner, false)
	for words := 0; words < len(full)/4; words++ {
		for _, half := range []bool{false, true} {
			im := bytes.Clone(img)
			at := p*small.PageSize + end
			copy(im[at:], full[:words*4])
			if half {
				for i := range 4 {
					im[at+words*4+i] = full[words*4+i] | 0x55
				}
			}
			s, err := openImage(im, small)
			if err != nil {
				t.Fatalf("torn after %d words (half %v): %v", words, half, err)
			}
			checkModel(t, s, model, 9)
			if _, ok, _ := s.Get(0x0BAD); ok {
				t.Fatal("a record image inside torn data became a record")
			}
			if words > 0 && !s.Recovery().TornRecord {
				t.Fatalf("torn after %d words: Recovery = %+v", words, s.Recovery())
			}
			checkInvariants(t, s)
		}
	}
}

// TestGarbagePageWithoutRecords: a page of noise (no valid record) is
// erased and the store opens.
func TestGarbagePageWithoutRecords(t *testing.T) {
	img, model := filled(t)
	for i := 3 * small.PageSize; i < 4*small.PageSize; i++ {
		img[i] = byte(i * 7)
	}
	s, err := openImage(img, small)
	if err != nil {
		t.Fatal(err)
	}
	checkModel(t, s, model, -1)
	if r := s.Recovery(); r.PagesErased != 1 {
		t.Fatalf("Recovery = %+v", r)
	}
}
