// Package flash is the lock's persistent storage: a small key → record
// store, log-structured like Nordic's FDS, on a model of the nRF52832's
// flash. It owns the flash model, the on-flash format and the power-cut
// protocol that docs/protocol.md §14.2 specifies for the C firmware.
//
// The consumer sees only [Store]: Get, Put, Delete and Keys on 16-bit keys.
// Put and Delete are atomic (after a power cut, Get returns the old value or
// the new one, never a mix, and no other key changes) and durable when they
// return nil. [NewMem] is a Store in a map for unit tests; [Open] is the
// real one, a [File] holding a flash image.
//
// # Flash model
//
// The flash is Pages erase pages of PageSize bytes (default 8 × 4096).
// Erased flash reads 0xFF. A write programs whole 32-bit words at aligned
// offsets and may only program erased words: nothing is ever overwritten
// without erasing its page first. A power cut tears the operation in
// progress: a write leaves a prefix of its words programmed, and perhaps
// one more word with only some of its bits; an erase leaves part of the page
// erased, or every cell part-way. [Faults] injects such cuts, reproducibly
// from a seed, before any device operation ([Op], [Step]).
//
// # Format (all fields little-endian)
//
// Page header, 32 bytes:
//
//	off  0  magic      u32  0x464B434C ("LCKF")
//	off  4  gen        u32  page generation: 1 + the highest generation ever
//	                        seen in the image when the page was formatted
//	off  8  src_gen    u32  generation of the page this one replaces (GC), or 0xFFFFFFFF
//	off 12  src_page   u16  index of that page, or 0xFFFF for a fresh page
//	off 14  log2_size  u8   log2(PageSize)
//	off 15  pages      u8   Pages
//	off 16  seq_floor  u32  the store's next sequence number when formatted
//	off 20  hdr_crc    u32  CRC-32 (IEEE) of bytes 0..19
//	off 24  committed  u32  0xFFFFFFFF until the page is complete, then 0
//	off 28  src_erased u32  0xFFFFFFFF until page src_page has been erased, then 0
//
// Bytes 0..23 are written in one operation (the format); committed and
// src_erased are each written once, later, as single words. A commit or
// src_erased word counts as written if any bit of it is programmed: each is
// written only after what it certifies is complete, so a torn one still
// tells the truth.
//
// Records follow the header back to back, each word-aligned:
//
//	off 0   key  u16   0x0000..0xFFFE (0xFFFF is the erased pattern)
//	off 2   len  u16   data length; 0xFFFF marks a tombstone (Delete), no data
//	off 4   seq  u32   store-wide sequence number, 0..0xFFFFFFFE
//	off 8   crc  u32   CRC-32 (IEEE) of bytes 0..7 then the len data bytes
//	off 12  data, padded with 0xFF to a multiple of 4
//
// Every record gets the next sequence number; a garbage collection copies
// records unchanged (same seq). The value of a key is its record with the
// highest seq among the live pages' valid records; a tombstone there means
// "no value". Sequence numbers are never reused: a page's seq_floor keeps
// the counter above records that a collection dropped.
//
// # Writing
//
// A Put appends one record (one write) to the append page, then fsyncs.
// When the record does not fit: another live page with room takes it;
// else, while two or more pages are not live, a fresh page is formatted
// (header write, then commit write); else a garbage collection frees room;
// else Put fails with ErrFull. One page is always left non-live: the spare.
// A Delete that finds no room for its tombstone, in a store whose other
// pages hold no older record of the key, collects the key's page without
// the key: the commit of the new page is then the deletion. So a full
// store can always be emptied.
//
// # Garbage collection (power-cut safe at every step)
//
// The victim V is the live page whose live records are fewest in bytes
// (it must free room for the record that needs it; ties: oldest page).
// Its live records are the newest record of each key it holds, and each
// newest tombstone for which another live page still holds an older record
// of that key (else the tombstone is dropped). Into the spare page S:
//
//  1. erase S if it is not erased (StepEraseSpare);
//  2. write S's header: gen = highest + 1, src_gen = V.gen, src_page = V,
//     seq_floor = next seq (StepFormat);
//  3. copy V's live records, byte for byte (StepCopy, one per record); sync;
//  4. write S.committed (StepCommit); sync. S now replaces V;
//  5. erase V (StepEraseVictim); sync;
//  6. write S.src_erased (StepMarkErased); sync. V is the new spare.
//
// A cut before step 4 leaves S uncommitted: Open erases it, and V is
// intact. A cut at or after step 4 leaves S committed with src_erased
// unwritten: Open treats page src_page as obsolete whatever it holds (even
// a header torn by the erase), erases it again and writes src_erased. So
// either V or S is valid at every instant, never neither, and never both
// counted (they would agree anyway: same records, same seqs).
//
// # Mount (Open)
//
//  1. Read every page: erased, valid header (magic, CRC, geometry), or
//     garbage. A header of another geometry is ErrGeometry.
//  2. From the newest committed page down, each committed page with
//     src_erased unwritten marks page src_page obsolete (a header found
//     there must carry src_gen).
//  3. Live pages are committed, valid and not obsolete. Read each log up
//     to the first invalid record; an invalid record there is a torn write:
//     the page takes no more appends. Index the records; two different
//     records with one key and one seq are ErrCorrupt.
//  4. Every other non-erased page (uncommitted, garbage) and anything
//     after a live page's log (after the claimed length of a torn record:
//     that is the torn write's own data) is scanned for valid records, at
//     every word offset. Each must be
//     obsolete: the index holds the same record or a newer one of its key.
//     If not, Open fails with ErrCorrupt naming the page and offset: it
//     never drops a valid record it cannot prove obsolete. (Obsolete pages
//     of step 2 are exempt: the committed copy proves them obsolete.)
//  5. Repair: finish the unfinished erases, erase the leftover pages, and
//     compact (collect) any live page with a torn tail. [File.Recovery]
//     reports what was done.
//
// Open's repairs follow the same protocol, so a cut during them is handled
// by the next Open.
//
// The package may import only the standard library.
package flash
