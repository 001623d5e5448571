package bonds

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// corruptFixture writes a database with enough in it for branch, leaf and
// overflow pages in several buckets, closes it and returns its bytes and
// page size.
func corruptFixture(t *testing.T) ([]byte, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatewayd.db")
	db, err := Open(path, Options{NoSync: true, PruneInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		c := testCommand(uint64(i + 1))
		if i%50 == 0 {
			c.Payload = bytes.Repeat([]byte{byte(i)}, 9000) // overflow pages
		}
		if _, err := db.Append(bg, c); err != nil {
			t.Fatal(err)
		}
		if err := db.PutLock(bg, Lock{ID: lid(uint64(i + 100)), Address: "C0:00:00:00:00:01", Bond: BondNone}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b, int(binary.NativeEndian.Uint32(b[16+8:]))
}

// corruptions are ways a page goes bad on an SD card or in a bad copy:
// its header's flags, its element count, its elements (page numbers,
// offsets, key sizes), or the whole page.
var corruptions = []struct {
	name string
	fn   func(p []byte)
}{
	{"flags", func(p []byte) { binary.NativeEndian.PutUint16(p[8:], 0x77) }},
	{"count", func(p []byte) { binary.NativeEndian.PutUint16(p[10:], 0xffff) }},
	{"elements", func(p []byte) {
		for i := 16; i < 16+200 && i < len(p); i++ {
			p[i] = 0xee
		}
	}},
	{"overflow", func(p []byte) { binary.NativeEndian.PutUint32(p[12:], 0x7fffffff) }},
	{"page", func(p []byte) {
		for i := range p {
			p[i] = 0xff
		}
	}},
}

// TestAttackCorruptPageRefusedAtOpen: every page of a real database
// (branch, leaf, overflow, freelist), garbled in each of the ways above:
// Open never panics or dies of a fault; it either refuses the file with
// ErrCorrupt and the commands that fix it, or the page was not in use
// (a free page) and the database reads and checks clean. db check and db
// export on the same file report, never crash.
func TestAttackCorruptPageRefusedAtOpen(t *testing.T) {
	good, ps := corruptFixture(t)
	pages := len(good) / ps
	if pages < 20 {
		t.Fatalf("fixture has %d pages; want branch and overflow pages", pages)
	}
	dir := t.TempDir()
	refused := map[string]int{}
	for _, c := range corruptions {
		for pg := 2; pg < pages; pg++ {
			b := bytes.Clone(good)
			c.fn(b[pg*ps : (pg+1)*ps])
			// A file of its own: a panic inside bolt.Open leaves bbolt's
			// descriptor, and with it the file lock, behind.
			path := filepath.Join(dir, fmt.Sprintf("%s-%d.db", c.name, pg))
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := Open(path, Options{NoSync: true, PruneInterval: -1, Timeout: -1})
			if err != nil {
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "gatewayd db check -db "+path) ||
					!strings.Contains(err.Error(), "restore") {
					t.Fatalf("%s of page %d: Open = %v, want ErrCorrupt naming db check and restore", c.name, pg, err)
				}
				refused[c.name]++
				if got, _ := os.ReadFile(path); !bytes.Equal(got, b) {
					t.Fatalf("%s of page %d: the refused file was modified", c.name, pg)
				}
				if err := CheckFile(bg, path, Options{Timeout: -1}); err == nil {
					t.Errorf("%s of page %d: Open refuses the file but db check passes it", c.name, pg)
				}
				_ = ExportFile(bg, path, io.Discard, Options{Timeout: -1})
				continue
			}
			// A free page, which nothing reads, or garbled bytes inside a
			// value (an overflow page has no header): the structure is
			// sound, bbolt keeps no checksums of values, and a record that
			// no longer decodes or holds a value out of range is an error
			// of the call that reads it, and a problem db check reports.
			_, _ = db.Pending(bg)
			if err := db.Check(bg); err != nil && !errors.Is(err, ErrCheck) {
				t.Errorf("%s of page %d: opened; Check = %v, want nil or ErrCheck", c.name, pg, err)
			} else if err != nil && strings.Contains(err.Error(), "bbolt: ") {
				// Open's walk must refuse whatever bbolt's check finds.
				t.Errorf("%s of page %d: Open accepted a file bbolt's check refuses: %v", c.name, pg, err)
			}
			select {
			case <-db.Failed():
				t.Errorf("%s of page %d: opened, then failed: %v", c.name, pg, db.Err())
			default:
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range corruptions {
		if refused[c.name] < pages/2 {
			t.Errorf("%s: only %d of %d pages refused", c.name, refused[c.name], pages-2)
		}
	}
	t.Logf("%d pages; refused: %v", pages, refused)
}

// TestAttackCorruptPageWhileOpen: pages that go bad under a running
// daemon (the file is changed behind bbolt's back) make the reads and
// writes that meet them return ErrCorrupt, not panic; the database then
// fails as a whole (Failed closes, every later call returns the same
// error naming db check), and Close still works.
func TestAttackCorruptPageWhileOpen(t *testing.T) {
	db, path := openTest(t, Options{NoSync: true, PruneInterval: -1})
	for i := range 100 {
		if _, err := db.Append(bg, testCommand(uint64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	ps := int64(os.Getpagesize())
	var hdr [16]byte
	for off := 2 * ps; off < fi.Size(); off += ps {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			t.Fatal(err)
		}
		binary.NativeEndian.PutUint16(hdr[8:], 0x77) // no page type
		if _, err := f.WriteAt(hdr[:], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-db.Failed():
		t.Fatal("failed before anything read the bad pages")
	default:
	}
	_, err = db.Pending(bg)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "gatewayd db check -db "+path) {
		t.Fatalf("Pending over bad pages = %v, want ErrCorrupt naming db check", err)
	}
	select {
	case <-db.Failed():
	default:
		t.Fatal("Failed not closed")
	}
	if _, err := db.Append(bg, testCommand(1000)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Append after the failure = %v, want ErrCorrupt", err)
	}
	if err := db.Check(bg); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Check after the failure = %v, want ErrCorrupt", err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	// The file stays corrupt: the cleanup's check would fail; a fresh
	// one for it.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	good, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = good.Close()
}

// TestAttackFreelistAndKeyOrderRefusedAtOpen: the structural faults that
// only bbolt's own check used to find at Open (it no longer runs there;
// checkPages finds them in the same walk): a page both in use and in the
// freelist (the next commit would overwrite it), a page freed twice, a
// page neither in use nor free, a tree reached from two buckets (walked
// by two goroutines), and keys out of order (a lookup would miss them). Each is refused with ErrCorrupt naming the fault, and the
// file is not modified.
func TestAttackFreelistAndKeyOrderRefusedAtOpen(t *testing.T) {
	good, ps := corruptFixture(t)
	path := filepath.Join(t.TempDir(), "meta.db")
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := bestMeta(f)
	_ = f.Close()
	if !ok {
		t.Fatal("fixture: no meta page")
	}
	ne := binary.NativeEndian
	fl := good[int(m.freelist)*ps:]
	free := int(ne.Uint16(fl[10:]))
	if free < 2 || free == 0xFFFF {
		t.Fatalf("fixture: freelist of %d entries, want a few", free)
	}
	entry := func(b []byte, i int) []byte { return b[int(m.freelist)*ps+pageHeaderSize+8*i:] }
	for _, c := range []struct {
		name, want string
		fn         func(b []byte)
	}{
		{"page in use and free", "in the freelist", func(b []byte) { ne.PutUint64(entry(b, 0), m.root) }},
		{"page freed twice", "freed twice", func(b []byte) { ne.PutUint64(entry(b, 1), ne.Uint64(entry(b, 0))) }},
		{"page neither in use nor free", "neither in use nor free", func(b []byte) {
			ne.PutUint16(b[int(m.freelist)*ps+10:], uint16(free-1))
		}},
		{"a tree shared by two buckets", "reached twice", func(b []byte) {
			// The locks bucket's root made the journal's: the buckets are
			// walked at the same time, each with its own bitset.
			p := b[int(m.root)*ps:]
			roots := map[string]int{} // bucket name: offset of its root page number
			for i := range int(ne.Uint16(p[10:])) {
				e := pageHeaderSize + i*elementSize
				pos, ks := int(ne.Uint32(p[e+4:])), int(ne.Uint32(p[e+8:]))
				roots[string(p[e+pos:e+pos+ks])] = e + pos + ks
			}
			lo, jo := roots[string(bucketLocks)], roots[string(bucketJournal)]
			if lo == 0 || jo == 0 || ne.Uint64(p[jo:]) == 0 {
				t.Fatalf("fixture: buckets %v", roots)
			}
			copy(p[lo:lo+8], p[jo:jo+8])
		}},
		{"keys out of order", "not above the one before it", func(b []byte) {
			// The root bucket's leaf: the buckets by name; the first
			// one's name made to sort last.
			p := b[int(m.root)*ps:]
			if ne.Uint16(p[8:]) != flagLeaf || ne.Uint16(p[10:]) < 2 {
				t.Fatalf("fixture: root page is not a leaf of buckets")
			}
			pos, ks := int(ne.Uint32(p[pageHeaderSize+4:])), int(ne.Uint32(p[pageHeaderSize+8:]))
			for i := range ks {
				p[pageHeaderSize+pos+i] = 'z'
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(good)
			c.fn(b)
			path := filepath.Join(t.TempDir(), "gatewayd.db")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := Open(path, Options{NoSync: true, PruneInterval: -1, Timeout: -1})
			if err == nil {
				_ = db.Close()
				t.Fatalf("Open accepted it")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open = %v, want ErrCorrupt saying %q", err, c.want)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, b) {
				t.Fatal("the refused file was modified")
			}
			if err := CheckFile(bg, path, Options{Timeout: -1}); !errors.Is(err, ErrCorrupt) {
				t.Errorf("db check = %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestWalkBuildsIDIndex: the ID index the page walk builds on its way
// is loadIDs' (an inline journal bucket of one entry, and one of
// branch and leaf pages), and it is used only for the commit it walked:
// after one more commit, sameCommit says no and Open reads it again.
func TestWalkBuildsIDIndex(t *testing.T) {
	for _, n := range []int{0, 1, 3000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			db, path := openTest(t, Options{NoSync: true, PruneInterval: -1})
			for i := range n {
				if _, err := db.Append(bg, testCommand(uint64(i+1))); err != nil {
					t.Fatal(err)
				}
			}
			db = reopen(t, db, Options{NoSync: true, PruneInterval: -1})
			ix := &idIndex{ids: map[CommandID]int64{}}
			if err := checkPages(path, ix); err != nil || !ix.ok {
				t.Fatalf("checkPages = %v, ok %v", err, ix.ok)
			}
			want, err := loadIDs(db.bolt, path)
			if err != nil {
				t.Fatal(err)
			}
			if len(ix.ids) != n || len(want) != n {
				t.Fatalf("walk indexed %d, loadIDs %d, want %d", len(ix.ids), len(want), n)
			}
			for id, ns := range want {
				if got, ok := ix.ids[id]; !ok || got != ns {
					t.Fatalf("command %s: walk %d %v, loadIDs %d", id, got, ok, ns)
				}
			}
			if !sameCommit(db.bolt, ix) {
				t.Error("sameCommit = false on the commit walked")
			}
			if _, err := db.Append(bg, testCommand(uint64(n+1))); err != nil {
				t.Fatal(err)
			}
			if sameCommit(db.bolt, ix) {
				t.Error("sameCommit = true after another commit")
			}
		})
	}
}
