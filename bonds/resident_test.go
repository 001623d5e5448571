package bonds

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// mappingRSS returns the resident bytes of the mapping starting at base
// (/proc/self/smaps).
func mappingRSS(t *testing.T, base uintptr) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	in := false
	for s.Scan() {
		line := s.Text()
		if r, _, ok := strings.Cut(line, " "); ok && strings.Contains(r, "-") && !strings.HasSuffix(r, ":") {
			lo, _, _ := strings.Cut(r, "-")
			v, err := strconv.ParseUint(lo, 16, 64)
			in = err == nil && uintptr(v) == base
			continue
		}
		if v, ok := strings.CutPrefix(line, "Rss:"); ok && in {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no mapping at %#x in /proc/self/smaps", base)
	return 0
}

// TestResidentWindowBoundsMapping: a pass reading every page of a 32 MiB
// file mapping through a residentWindow keeps at most the budget (plus
// one large folio the last fault mapped whole) of it resident, and none
// after the release;
// without the window, the whole file stays resident. What was read
// reads the same after a release.
func TestResidentWindowBoundsMapping(t *testing.T) {
	const size = 32 << 20
	path := filepath.Join(t.TempDir(), "file")
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i / 4096)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, window := range []bool{false, true} {
		t.Run(fmt.Sprintf("window=%v", window), func(t *testing.T) {
			m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = syscall.Munmap(m) }()
			base := uintptr(unsafe.Pointer(unsafe.SliceData(m)))
			var w *residentWindow
			if window {
				w = newResidentWindow(base, size)
			}
			peak := int64(0)
			for off := 0; off < size; off += 4096 {
				p := m[off : off+4096]
				w.touch(p)
				if p[7] != byte(off/4096) {
					t.Fatalf("page %d reads %d", off/4096, p[7])
				}
				if off%(1<<20) == 0 {
					peak = max(peak, mappingRSS(t, base))
				}
			}
			peak = max(peak, mappingRSS(t, base))
			if !window {
				if peak < size/2 {
					t.Fatalf("without the window, %d bytes resident after reading %d: the test measures nothing", peak, size)
				}
				return
			}
			if peak > residentBudget+residentFolio {
				t.Errorf("%d bytes resident, budget %d", peak, residentBudget)
			}
			if w.releases < size/residentBudget-1 {
				t.Errorf("%d releases for %d bytes", w.releases, size)
			}
			w.release()
			if got := mappingRSS(t, base); got != 0 {
				t.Errorf("%d bytes resident after the release", got)
			}
			if m[5*4096+1] != 5 {
				t.Error("a page reads differently after the release")
			}
		})
	}
}

// TestReleaseMappedDropsLookups: pages that lookups left resident in
// bbolt's mapping are dropped by releaseMapped (which the background
// loop runs once a SeenFlushInterval), and the records read the same
// afterwards.
func TestReleaseMappedDropsLookups(t *testing.T) {
	db, _ := openTest(t, Options{NoSync: true, PruneInterval: -1})
	const n = 20_000 // about 8 MB: more than the window's budget
	for start := 0; start < n; start += 2000 {
		err := db.write(bg, func(tx *bolt.Tx) error {
			for i := start; i < start+2000; i++ {
				if err := putLock(tx, &Lock{ID: lid(uint64(i + 1)), Credential: make([]byte, 300), Bond: BondNone}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	base := db.bolt.Info().Data
	db.releaseMapped()
	for i := range n {
		if _, err := db.Lock(bg, lid(uint64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	before := mappingRSS(t, base)
	if before < 4<<20 {
		t.Fatalf("%d bytes resident after reading every lock: the test measures nothing", before)
	}
	db.releaseMapped()
	if after := mappingRSS(t, base); after > residentBlock {
		t.Errorf("%d bytes resident after releaseMapped (%d before)", after, before)
	}
	if l, err := db.Lock(bg, lid(n)); err != nil || l.ID != lid(n) {
		t.Errorf("Lock after the release = %v, %v", l.ID, err)
	}
}
