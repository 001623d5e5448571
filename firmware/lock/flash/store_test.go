package flash

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// storeContract runs the Store contract on s.
func storeContract(t *testing.T, s Store) {
	t.Helper()
	if v, ok, err := s.Get(7); v != nil || ok || err != nil {
		t.Fatalf("Get(missing) = %x, %v, %v", v, ok, err)
	}
	in := []byte("hello")
	if err := s.Put(7, in); err != nil {
		t.Fatal(err)
	}
	in[0] = 'j' // the store keeps its own copy
	v, ok, err := s.Get(7)
	if err != nil || !ok || string(v) != "hello" {
		t.Fatalf("Get = %q, %v, %v", v, ok, err)
	}
	v[0] = 'y' // and hands out copies
	if v, _, _ := s.Get(7); string(v) != "hello" {
		t.Fatalf("Get after changing the returned slice = %q", v)
	}
	if err := s.Put(8, nil); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.Get(8); err != nil || !ok || len(v) != 0 {
		t.Fatalf("Get(empty value) = %x, %v, %v; want empty, true", v, ok, err)
	}
	big := bytes.Repeat([]byte{0xA5}, MaxData)
	if err := s.Put(9, big); err != nil {
		t.Fatalf("Put(MaxData bytes): %v", err)
	}
	if err := s.Put(10, make([]byte, MaxData+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Put(MaxData+1 bytes) = %v, want ErrTooLarge", err)
	}
	if err := s.Put(ReservedKey, nil); !errors.Is(err, ErrBadKey) {
		t.Fatalf("Put(0xFFFF) = %v, want ErrBadKey", err)
	}
	if _, _, err := s.Get(ReservedKey); !errors.Is(err, ErrBadKey) {
		t.Fatalf("Get(0xFFFF) = %v, want ErrBadKey", err)
	}
	if err := s.Delete(ReservedKey); !errors.Is(err, ErrBadKey) {
		t.Fatalf("Delete(0xFFFF) = %v, want ErrBadKey", err)
	}
	if got := s.Keys(); len(got) != 3 || got[0] != 7 || got[1] != 8 || got[2] != 9 {
		t.Fatalf("Keys = %v, want [7 8 9]", got)
	}
	if err := s.Delete(8); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(8); err != nil {
		t.Fatalf("Delete(missing) = %v", err)
	}
	if _, ok, _ := s.Get(8); ok {
		t.Fatal("deleted key still has a value")
	}
	if err := s.Put(0, []byte{0}); err != nil {
		t.Fatalf("Put(key 0): %v", err)
	}
	if got := s.Keys(); len(got) != 3 || got[0] != 0 {
		t.Fatalf("Keys = %v, want [0 7 9]", got)
	}
}

func TestMemContract(t *testing.T) { storeContract(t, NewMem()) }

func TestFileContract(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flash.img")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	storeContract(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(1, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close = %v, want ErrClosed", err)
	}
	if st, err := os.Stat(path); err != nil || st.Size() != DefaultPageSize*DefaultPages || st.Mode().Perm() != 0o600 {
		t.Fatalf("image: %v, %v", st, err)
	}
	// Reopen after a clean close: everything is there, nothing to repair.
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Recovery().Clean() {
		t.Fatalf("Recovery after a clean close = %+v", s.Recovery())
	}
	checkModel(t, s, map[uint16][]byte{0: {0}, 7: []byte("hello"), 9: bytes.Repeat([]byte{0xA5}, MaxData)}, -1)
}

func TestOpenOptions(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []Options{{PageSize: 100}, {PageSize: 128}, {PageSize: 65536}, {Pages: 1}, {Pages: 256}, {PageSize: 3000}} {
		if _, err := Open(filepath.Join(dir, "x"), o); !errors.Is(err, ErrBadOptions) {
			t.Errorf("Open(%+v) = %v, want ErrBadOptions", o, err)
		}
	}
	path := filepath.Join(dir, "flash.img")
	s, err := Open(path, Options{PageSize: 1024, Pages: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(1, []byte("a")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Same size, other split: the page headers disagree.
	if _, err := Open(path, Options{PageSize: 512, Pages: 8}); !errors.Is(err, ErrGeometry) || !strings.Contains(err.Error(), "page 0") {
		t.Fatalf("Open with another split = %v, want ErrGeometry naming page 0", err)
	}
	if _, err := Open(path, Options{PageSize: 1024, Pages: 5}); !errors.Is(err, ErrGeometry) {
		t.Fatalf("Open with another size = %v, want ErrGeometry", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dir"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(dir, "dir", "x"), Options{}); err == nil {
		t.Fatal("Open of an impossible path succeeded")
	}
}

// TestManyPutsForceGC: far more data than the flash holds, through many
// collections, then a reopen.
func TestManyPutsForceGC(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flash.img")
	var steps []Step
	o := small
	o.Faults.Cut = func(op Op) bool { steps = append(steps, op.Step); return false }
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	model := map[uint16][]byte{}
	ops := workload(1, 2000, 6, 40)
	if i, err := apply(s, ops, model); err != nil {
		t.Fatalf("op %d (%v): %v", i, ops[i], err)
	}
	checkModel(t, s, model, -1)
	checkInvariants(t, s)
	gcs := 0
	for _, st := range steps {
		if st == StepEraseVictim {
			gcs++
		}
	}
	if gcs < 50 {
		t.Fatalf("%d collections, want many", gcs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, small)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkModel(t, s, model, -1)
	t.Logf("%d ops, %d device ops, %d collections", len(ops), len(steps), gcs)
}

// TestDeletedStaysDeleted: a tombstone is kept while an older record of its
// key lives on another page, so a collection never resurrects the value.
func TestDeletedStaysDeleted(t *testing.T) {
	img := blankImage(small)
	s, err := openImage(img, small)
	if err != nil {
		t.Fatal(err)
	}
	// Key 1 lands on the first page; then churn key 2 so that key 1's
	// tombstone and the old record sit on different pages, through many
	// collections.
	must(t, s.Put(1, bytes.Repeat([]byte{1}, 100)))
	must(t, s.Put(3, bytes.Repeat([]byte{3}, 60)))
	for i := range 3 {
		must(t, s.Put(2, bytes.Repeat([]byte{byte(i)}, 50)))
	}
	must(t, s.Delete(1))
	for i := range 200 {
		must(t, s.Put(2, bytes.Repeat([]byte{byte(i)}, 20+i%60)))
		if _, ok, _ := s.Get(1); ok {
			t.Fatalf("after %d puts: deleted key 1 is back", i)
		}
	}
	s, err = openImage(img, small)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Get(1); ok {
		t.Fatal("after reboot: deleted key 1 is back")
	}
	if v, _, _ := s.Get(3); len(v) != 60 {
		t.Fatalf("key 3 = %x", v)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestFull: distinct keys until the store is full; the failed Put changes
// nothing, the store stays usable, and deleting makes room again.
func TestFull(t *testing.T) {
	img := blankImage(small)
	s, err := openImage(img, small)
	if err != nil {
		t.Fatal(err)
	}
	model := map[uint16][]byte{}
	var k uint16
	for {
		v := bytes.Repeat([]byte{byte(k)}, 30)
		err := s.Put(k, v)
		if errors.Is(err, ErrFull) {
			break
		}
		must(t, err)
		model[k] = v
		k++
		if k > 100 {
			t.Fatal("never full")
		}
	}
	checkModel(t, s, model, -1)
	if err := s.Put(k, make([]byte, s.maxData())); !errors.Is(err, ErrFull) {
		t.Fatalf("Put of a page-sized value in a full store = %v", err)
	}
	must(t, s.Delete(0))
	must(t, s.Delete(1))
	delete(model, 0)
	delete(model, 1)
	must(t, s.Put(k, []byte("fits now")))
	model[k] = []byte("fits now")
	checkModel(t, s, model, -1)
	s, err = openImage(img, small)
	if err != nil {
		t.Fatal(err)
	}
	checkModel(t, s, model, -1)
	checkInvariants(t, s)
}

// TestRecordFormat pins the record layout of docs/protocol.md §14.2.2.
func TestRecordFormat(t *testing.T) {
	got := encodeRecord(0x1001, 5, []byte{0xA1, 0x01, 0x02}, false)
	want := []byte{0x01, 0x10, 0x03, 0x00, 0x05, 0, 0, 0, 0, 0, 0, 0, 0xA1, 0x01, 0x02, 0xFF}
	// CRC-32/IEEE of 01 10 03 00 05 00 00 00 a1 01 02.
	want[8], want[9], want[10], want[11] = 0x9c, 0x9b, 0xbd, 0xc9
	if !bytes.Equal(got, want) {
		t.Fatalf("record = % x\nwant     % x", got, want)
	}
	tomb := encodeRecord(0x1001, 6, nil, true)
	if len(tomb) != 12 || tomb[2] != 0xFF || tomb[3] != 0xFF {
		t.Fatalf("tombstone = % x", tomb)
	}
	if _, ok := parseRecord(append(bytes.Clone(got), 0xFF, 0xFF, 0xFF, 0xFF), 0); !ok {
		t.Fatal("parseRecord refuses its own record")
	}
}
