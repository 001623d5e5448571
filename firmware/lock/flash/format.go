package flash

import (
	"encoding/binary"
	"hash/crc32"
	"math/bits"
)

// The on-flash format. Every multi-byte field is little-endian (the
// nRF52832's byte order); every write is whole 32-bit words at word-aligned
// offsets; an erased byte reads 0xFF.
const (
	// WordSize is the flash's programming unit, in bytes.
	WordSize = 4

	// PageHeaderSize is the size of a page header: 8 words.
	PageHeaderSize = 32
	// RecordHeaderSize is the size of a record header: 3 words.
	RecordHeaderSize = 12

	// PageMagic is word 0 of every formatted page: the bytes "LCKF".
	PageMagic uint32 = 0x464B434C
	// Tombstone is the length field of a deletion record, which has no
	// data.
	Tombstone = 0xFFFF
	// ReservedKey (0xFFFF) is the erased pattern: no record may use it.
	ReservedKey uint16 = 0xFFFF

	// DefaultPageSize is the nRF52832's erase page, 4 KiB.
	DefaultPageSize = 4096
	// DefaultPages is the number of flash pages the store uses by default.
	DefaultPages = 8
	// MaxData is the largest value Put accepts with the default page size
	// (4052 bytes), and the limit of [Mem]. In general it is
	// PageSize - PageHeaderSize - RecordHeaderSize.
	MaxData = DefaultPageSize - PageHeaderSize - RecordHeaderSize

	erasedWord uint32 = 0xFFFFFFFF
	noPage     uint16 = 0xFFFF
	noGen      uint32 = 0xFFFFFFFF
	doneWord   uint32 = 0 // the value of a written commit or src_erased word

	// Offsets in the page header.
	offMagic     = 0
	offGen       = 4
	offSrcGen    = 8
	offSrcPage   = 12 // u16, then log2(PageSize) u8, then Pages u8
	offSeqFloor  = 16
	offHdrCRC    = 20
	offCommitted = 24
	offSrcErased = 28
	hdrCRCLen    = 20 // the header CRC covers bytes 0..19
	formatLen    = 24 // the format write: words 0..5
)

var crcTable = crc32.IEEETable

// header is a decoded page header.
type header struct {
	gen       uint32
	srcGen    uint32 // noGen: a fresh page
	srcPage   uint16 // noPage: a fresh page
	log2Size  uint8
	pages     uint8
	seqFloor  uint32
	committed bool
	srcErased bool
}

func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }

// encodeHeader returns the format write of a page: words 0..5, with the
// header CRC. The commit and src_erased words are written later, one each.
func encodeHeader(h header) []byte {
	b := make([]byte, formatLen)
	binary.LittleEndian.PutUint32(b[offMagic:], PageMagic)
	binary.LittleEndian.PutUint32(b[offGen:], h.gen)
	binary.LittleEndian.PutUint32(b[offSrcGen:], h.srcGen)
	binary.LittleEndian.PutUint16(b[offSrcPage:], h.srcPage)
	b[offSrcPage+2] = h.log2Size
	b[offSrcPage+3] = h.pages
	binary.LittleEndian.PutUint32(b[offSeqFloor:], h.seqFloor)
	binary.LittleEndian.PutUint32(b[offHdrCRC:], crc32.Checksum(b[:hdrCRCLen], crcTable))
	return b
}

// parseHeader decodes the header of page p. ok is false when the magic or
// the header CRC is wrong (an unformatted, torn or damaged header).
func parseHeader(p []byte) (h header, ok bool) {
	if le32(p, offMagic) != PageMagic || le32(p, offHdrCRC) != crc32.Checksum(p[:hdrCRCLen], crcTable) {
		return header{}, false
	}
	h = header{
		gen:      le32(p, offGen),
		srcGen:   le32(p, offSrcGen),
		srcPage:  binary.LittleEndian.Uint16(p[offSrcPage:]),
		log2Size: p[offSrcPage+2],
		pages:    p[offSrcPage+3],
		seqFloor: le32(p, offSeqFloor),
		// Any programmed bit counts: the commit word is written only once
		// the copy is complete, and src_erased only once the erase is, so
		// a word torn half-way still tells the truth (doc.go).
		committed: le32(p, offCommitted) != erasedWord,
		srcErased: le32(p, offSrcErased) != erasedWord,
	}
	return h, true
}

func log2(n int) uint8 { return uint8(bits.TrailingZeros(uint(n))) }

// pad4 rounds n up to a multiple of the word size.
func pad4(n int) int { return (n + WordSize - 1) &^ (WordSize - 1) }

// recordSize is the flash footprint of a record with n data bytes (0 for
// a tombstone).
func recordSize(n int) int { return RecordHeaderSize + pad4(n) }

// record is a record found in a page.
type record struct {
	key  uint16
	seq  uint32
	off  int // offset in the page
	size int // footprint: header + padded data
	dlen int // data length (0 for a tombstone)
	tomb bool
}

// encodeRecord returns the bytes of a record: header, data, 0xFF padding.
func encodeRecord(key uint16, seq uint32, data []byte, tomb bool) []byte {
	n := len(data)
	ln := uint16(n)
	if tomb {
		n, ln = 0, Tombstone
	}
	b := make([]byte, recordSize(n))
	binary.LittleEndian.PutUint16(b[0:], key)
	binary.LittleEndian.PutUint16(b[2:], ln)
	binary.LittleEndian.PutUint32(b[4:], seq)
	copy(b[RecordHeaderSize:], data[:n])
	for i := RecordHeaderSize + n; i < len(b); i++ {
		b[i] = 0xFF
	}
	crc := crc32.Update(crc32.Checksum(b[:8], crcTable), crcTable, b[RecordHeaderSize:RecordHeaderSize+n])
	binary.LittleEndian.PutUint32(b[8:], crc)
	return b
}

// claimedSize is the footprint the record header at off claims, if it is
// plausible (a non-reserved key and a length that fits in the page), or 0.
func claimedSize(p []byte, off int) int {
	if off+RecordHeaderSize > len(p) {
		return 0
	}
	key := binary.LittleEndian.Uint16(p[off:])
	ln := int(binary.LittleEndian.Uint16(p[off+2:]))
	if key == ReservedKey {
		return 0
	}
	if ln == Tombstone {
		return RecordHeaderSize
	}
	if off+recordSize(ln) > len(p) {
		return 0
	}
	return recordSize(ln)
}

// parseRecord decodes the record at off of page p; ok is false unless the
// header is plausible, the sequence number is not the erased pattern and
// the CRC matches.
func parseRecord(p []byte, off int) (r record, ok bool) {
	size := claimedSize(p, off)
	if size == 0 {
		return record{}, false
	}
	ln := int(binary.LittleEndian.Uint16(p[off+2:]))
	r = record{
		key:  binary.LittleEndian.Uint16(p[off:]),
		seq:  le32(p, off+4),
		off:  off,
		size: size,
		dlen: ln,
		tomb: ln == Tombstone,
	}
	if r.tomb {
		r.dlen = 0
	}
	if r.seq == noGen {
		return record{}, false
	}
	crc := crc32.Update(crc32.Checksum(p[off:off+8], crcTable), crcTable, p[off+RecordHeaderSize:off+RecordHeaderSize+r.dlen])
	if crc != le32(p, off+8) {
		return record{}, false
	}
	return r, true
}

// allErased reports whether b holds only 0xFF.
func allErased(b []byte) bool {
	for _, c := range b {
		if c != 0xFF {
			return false
		}
	}
	return true
}

// logScan is the result of reading a page's record log.
type logScan struct {
	recs  []record // the valid records, in order
	end   int      // offset just after the last valid record
	clean bool     // p[end:] is erased: records may be appended at end
	torn  bool     // a non-erased record that is not valid starts at end
	// strayFrom is where anything after the log starts: the end of the
	// torn record's claimed extent, or end.
	strayFrom int
}

// scanLog reads the records of page p sequentially from the header on, up
// to the first word that starts no valid record.
func scanLog(p []byte) logScan {
	pos := PageHeaderSize
	var s logScan
	for pos+RecordHeaderSize <= len(p) && le32(p, pos) != erasedWord {
		r, ok := parseRecord(p, pos)
		if !ok {
			s.torn = true
			skip := claimedSize(p, pos)
			if skip == 0 {
				skip = WordSize
			}
			s.end, s.strayFrom = pos, pos+skip
			s.clean = false
			return s
		}
		s.recs = append(s.recs, r)
		pos += r.size
	}
	s.end, s.strayFrom = pos, pos
	s.clean = allErased(p[pos:])
	return s
}

// bruteScan finds every valid record at a word-aligned offset of p from
// from on, skipping the extent of each one found (so data that happens to
// contain a record image inside a valid record is not reported).
func bruteScan(p []byte, from int) []record {
	var out []record
	pos := pad4(from)
	for pos+RecordHeaderSize <= len(p) {
		if r, ok := parseRecord(p, pos); ok {
			out = append(out, r)
			pos += r.size
			continue
		}
		pos += WordSize
	}
	return out
}
