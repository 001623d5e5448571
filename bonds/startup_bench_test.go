package bonds

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkStartup measures what the daemon does with the database before
// READY, without BlueZ (issue 14): Open (schema, page walk, bbolt's
// check, the command-ID index from the journal's keys), then the reads
// the parts make as they start: the reconciler's first run (Reconcile and
// Evict against a Paired holding every bonded lock's bond), the
// scheduler's Pending, the outbox's Outbox and the audit publisher's
// AuditOutbox. The file holds n locks (half bonded) and n journal entries
// (finished and acknowledged, as a busy replay window holds them).
//
// Metrics per op: open-ms and ready-ms (Open, and Open plus the reads);
// alloc-MB (bytes allocated); heap-MB (HeapInuse at READY, before any
// GC, an upper bound of the live heap then); rss-MB (the process's peak
// resident set, VmHWM, reset before each op through /proc/self/clear_refs:
// it includes the file's pages the page walk and bbolt's check touch,
// file-MB being the file's size).
// Run one size per process for clean rss figures:
//
//	go test -run '^$' -bench 'Startup/records=100000$' -benchtime 3x ./bonds
func BenchmarkStartup(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			path, err := startupFile(n)
			if err != nil {
				b.Fatal(err)
			}
			p := &benchPaired{}
			for i := 0; i < n; i += 2 {
				p.addrs = append(p.addrs, benchAddr(i))
			}
			var openNs, readyNs, alloc, heap, rss float64
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				runtime.GC()
				resetHWM()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				b.StartTimer()
				t0 := time.Now()
				db, err := Open(path, Options{PruneInterval: -1})
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := startupReads(db, p); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				b.StopTimer()
				runtime.ReadMemStats(&m1)
				openNs += float64(t1.Sub(t0))
				readyNs += float64(t2.Sub(t0))
				alloc += float64(m1.TotalAlloc - m0.TotalAlloc)
				heap = max(heap, float64(m1.HeapInuse))
				rss = max(rss, hwm())
				_ = db.Close()
				b.StartTimer()
			}
			N := float64(b.N)
			b.ReportMetric(openNs/N/1e6, "open-ms")
			b.ReportMetric(readyNs/N/1e6, "ready-ms")
			b.ReportMetric(alloc/N/(1<<20), "alloc-MB")
			b.ReportMetric(heap/(1<<20), "heap-MB")
			if fi, err := os.Stat(path); err == nil {
				b.ReportMetric(float64(fi.Size())/(1<<20), "file-MB")
			}
			if rss > 0 {
				b.ReportMetric(rss/(1<<20), "rss-MB")
			}
		})
	}
}

// startupReads is what the daemon's parts read from db as they start.
func startupReads(db *DB, p Paired) error {
	ctx := context.Background()
	if _, err := db.Reconcile(ctx, p, Policy{}); err != nil {
		return err
	}
	if _, err := db.Evict(ctx, p, 30*24*time.Hour); err != nil {
		return err
	}
	if _, err := db.Pending(ctx); err != nil {
		return err
	}
	if _, err := db.Outbox(ctx); err != nil {
		return err
	}
	_, err := db.AuditOutbox(ctx, 64)
	return err
}

type benchPaired struct{ addrs []string }

func (p *benchPaired) PairedDevices(context.Context) ([]string, error) { return p.addrs, nil }
func (p *benchPaired) RemoveBond(context.Context, string) error        { return nil }

func benchAddr(i int) string {
	return fmt.Sprintf("C0:%02X:%02X:%02X:%02X:%02X", byte(i>>32), byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

var startupFiles = map[int]string{}

// startupFile makes, once per process and size, the file BenchmarkStartup
// opens.
func startupFile(n int) (string, error) {
	if p, ok := startupFiles[n]; ok {
		return p, nil
	}
	now := time.Now().UTC()
	path, err := buildBenchFile(fmt.Sprintf("startup%d.db", n), 2*n, func(db *DB, tx *bolt.Tx, i int) error {
		if i < n {
			l := Lock{ID: lock100k(i), Credential: make([]byte, 180), Address: benchAddr(i),
				Bond: BondNone, LastSeen: now, RSSI: -60, Battery: 80, Firmware: "1.4.2",
				Counters: map[string]uint64{"a1b2c3d4": uint64(i)}, CreatedAt: now, UpdatedAt: now}
			if i%2 == 0 {
				l.Bond, l.BondedAt = BondBonded, now
			}
			return putLock(tx, &l)
		}
		i -= n
		at := now.Add(time.Duration(i-n) * time.Millisecond)
		c := benchCommand(uint64(i) + 1)
		binary.BigEndian.PutUint64(c.ID[8:], uint64(i)+1)
		e := Entry{Command: c, ReceivedAt: at, UpdatedAt: at, State: StateSucceeded, Attempts: 1,
			Result: &Result{CommandID: c.ID, LockID: c.LockID, Operation: "unlock", State: StateSucceeded, Status: "ok",
				Payload: make([]byte, 120), Attempts: 1, FinishedAt: at}, AckedAt: at}
		if err := putEntry(tx, &e); err != nil {
			return err
		}
		db.txIDs[e.ID] = at.UnixNano()
		return nil
	})
	if err == nil {
		startupFiles[n] = path
	}
	return path, err
}

// resetHWM resets the process's peak resident set (Linux 4.0 and later);
// where it cannot, rss-MB is the peak since the process started.
func resetHWM() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// hwm returns VmHWM in bytes, 0 if unknown.
func hwm() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}
