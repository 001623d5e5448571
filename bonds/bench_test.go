package bonds

import (
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Benchmarks (scripts/bench.sh pairs JournalAppend with FloorUpdateFsync):
//
//   - JournalAppend: one writer, durable Append (one commit, one fsync).
//   - FloorUpdateFsync: the floor, a raw bbolt Update putting a record of
//     the same size as a journal entry, which fsyncs the same way.
//   - JournalAppendParallel: many writers; reports fsyncs/op, which group
//     commit keeps below 1.
//   - BoltBatchSingle: bbolt's db.Batch with one writer, to show why it is
//     not used: each call waits out MaxBatchDelay.
//   - Open100kLocks, LockLookup100k: a file with 100,000 locks; Open
//     walks and checks every page in use (checkPages), so it is linear
//     in the file.
//   - Startup (startup_bench_test.go): Open and the start-up reads at
//     1,000, 10,000 and 100,000 locks and entries; time, CPU, heap, and
//     the resident set of a fresh process (scripts/bench.sh).

func benchCommand(n uint64) Command {
	c := testCommand(n)
	c.Payload = make([]byte, 200) // a signed command's size, roughly
	return c
}

func BenchmarkJournalAppend(b *testing.B) {
	db, _ := openTest(b, Options{PruneInterval: -1})
	start := db.Stats()
	b.ResetTimer()
	for i := range b.N {
		if _, err := db.Append(bg, benchCommand(uint64(i)+1)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	st := db.Stats()
	b.ReportMetric(float64(st.Commits-start.Commits)/float64(b.N), "fsyncs/op")
}

// entrySize is the encoded size of benchCommand's journal entry.
func entrySize(b *testing.B) int {
	now := time.Now().UTC()
	v, err := encode(&Entry{Command: benchCommand(1), ReceivedAt: now, UpdatedAt: now, State: StateReceived})
	if err != nil {
		b.Fatal(err)
	}
	return len(v)
}

func BenchmarkFloorUpdateFsync(b *testing.B) {
	path := filepath.Join(b.TempDir(), "floor.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucketJournal); return err }); err != nil {
		b.Fatal(err)
	}
	val := make([]byte, entrySize(b))
	_, _ = rand.Read(val)
	b.ResetTimer()
	for i := range b.N {
		key := cid(uint64(i) + 1)
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketJournal).Put(key[:], val) }); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJournalAppendParallel(b *testing.B) {
	db, _ := openTest(b, Options{PruneInterval: -1})
	var next atomic.Uint64
	start := db.Stats()
	b.SetParallelism(16) // 16 × GOMAXPROCS concurrent commands
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := db.Append(bg, benchCommand(next.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := db.Stats()
	b.ReportMetric(float64(st.Commits-start.Commits)/float64(b.N), "fsyncs/op")
}

// BenchmarkBoltBatchSingle: one writer through bbolt's db.Batch. With no
// other writer to fill the batch, each call waits for MaxBatchDelay.
func BenchmarkBoltBatchSingle(b *testing.B) {
	path := filepath.Join(b.TempDir(), "batch.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucketJournal); return err }); err != nil {
		b.Fatal(err)
	}
	val := make([]byte, entrySize(b))
	b.ResetTimer()
	for i := range b.N {
		key := cid(uint64(i) + 1)
		if err := db.Batch(func(tx *bolt.Tx) error { return tx.Bucket(bucketJournal).Put(key[:], val) }); err != nil {
			b.Fatal(err)
		}
	}
}

const locks100k = 100_000

var (
	file100kOnce sync.Once
	file100k     string
	file100kErr  error
)

// buildBenchFile makes a database file under a directory TestMain removes
// and writes n records into it, put(tx, i) for each, in transactions of
// 10,000 without fsync (outside any timer). put may use db's internals.
func buildBenchFile(name string, n int, put func(db *DB, tx *bolt.Tx, i int) error) (string, error) {
	dir, err := os.MkdirTemp("", "bonds-bench-")
	if err != nil {
		return "", err
	}
	benchDirs = append(benchDirs, dir)
	path := filepath.Join(dir, name)
	db, err := Open(path, Options{NoSync: true, PruneInterval: -1})
	if err != nil {
		return "", err
	}
	for start := 0; start < n && err == nil; start += 10_000 {
		err = db.write(bg, func(tx *bolt.Tx) error {
			for i := start; i < min(start+10_000, n); i++ {
				if err := put(db, tx, i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return path, err
}

// build100k makes, once per benchmark process, a database with 100,000
// locks and returns its path.
func build100k(b *testing.B) string {
	b.Helper()
	file100kOnce.Do(func() {
		now := time.Now().UTC()
		file100k, file100kErr = buildBenchFile("100k.db", locks100k, func(_ *DB, tx *bolt.Tx, i int) error {
			l := Lock{ID: lid(uint64(i)), Credential: make([]byte, 180), Address: "C0:00:00:00:00:00",
				Bond: BondBonded, BondedAt: now, LastSeen: now, RSSI: -60, Battery: 80, Firmware: "1.4.2",
				Counters: map[string]uint64{"a1b2c3d4": uint64(i)}, CreatedAt: now, UpdatedAt: now}
			binary.BigEndian.PutUint32(l.ID[4:], uint32(i))
			return putLock(tx, &l)
		})
	})
	if file100kErr != nil {
		b.Fatal(file100kErr)
	}
	return file100k
}

var benchDirs []string

func TestMain(m *testing.M) {
	if path := os.Getenv(startupChildEnv); path != "" {
		os.Exit(startupChild(path)) // BenchmarkStartup's fresh process
	}
	code := m.Run()
	for _, d := range benchDirs {
		_ = os.RemoveAll(d)
	}
	os.Exit(code)
}

func lock100k(i int) LockID {
	l := lid(uint64(i))
	binary.BigEndian.PutUint32(l[4:], uint32(i))
	return l
}

func BenchmarkOpen100kLocks(b *testing.B) {
	path := build100k(b)
	b.ResetTimer()
	for range b.N {
		db, err := Open(path, Options{PruneInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = db.Close()
		b.StartTimer()
	}
}

func BenchmarkLockLookup100k(b *testing.B) {
	path := build100k(b)
	db, err := Open(path, Options{PruneInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.ResetTimer()
	for i := range b.N {
		if _, err := db.Lock(bg, lock100k((i*7919)%locks100k)); err != nil {
			b.Fatal(err)
		}
	}
}

var (
	journal100kOnce sync.Once
	journal100k     string
	journal100kErr  error
)

// BenchmarkOpenJournal100k: Open with 100,000 journal entries, which
// builds the in-memory command-ID index from the journal's keys. It is
// the price of keying the journal by time (docs/database.md).
func BenchmarkOpenJournal100k(b *testing.B) {
	journal100kOnce.Do(func() {
		now := time.Now().UTC()
		journal100k, journal100kErr = buildBenchFile("journal100k.db", 100_000, func(db *DB, tx *bolt.Tx, i int) error {
			at := now.Add(time.Duration(i) * time.Millisecond)
			e := Entry{Command: benchCommand(uint64(i) + 1), ReceivedAt: at, UpdatedAt: at, State: StateReceived}
			if err := putEntry(tx, &e); err != nil {
				return err
			}
			db.txIDs[e.ID] = at.UnixNano()
			return nil
		})
	})
	if journal100kErr != nil {
		b.Fatal(journal100kErr)
	}
	b.ResetTimer()
	for range b.N {
		db, err := Open(journal100k, Options{PruneInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = db.Close()
		b.StartTimer()
	}
}
