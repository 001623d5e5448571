package bonds

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkStartup measures what the daemon does with the database as it
// starts, without BlueZ or MQTT (issue 14). Before READY=1 the daemon
// waits for Open (schema, the page walk with the command-ID index) and
// the scheduler's Pending (internal/daemon: sched.Start); that is
// ready-ms. Its other start-up reads run in goroutines of their own, the
// last of them started just before READY, on the same two cores: the
// reconciler's first run (one pass, reconcile and evict, against a
// Paired holding every bonded lock's bond), the outbox's Outbox, the
// audit publisher's AuditOutbox, and the sweep of unproven lock records
// (UnprovenLocks). settled-ms adds them, run one after the other (the
// daemon runs them at the same time as each other and as its first
// work). The file holds n locks (half bonded) and n journal entries
// (finished and acknowledged, as a busy replay window holds them).
//
// Metrics per op, in this process: open-ms, ready-ms and settled-ms;
// ready-cpu-ms and cpu-ms (the process's CPU time, user and system, all
// goroutines, to READY and for all of it: on a loaded machine the wall
// time includes waiting for a core, this does not); alloc-MB (bytes
// allocated). And once per run, in a fresh process doing the same
// (startupChild): rss-MB, its peak resident set over its whole life
// (VmHWM: the Go runtime, Open and all the reads), and when settled its
// anonymous (rss-anon-MB: heap, stacks) and file-backed (rss-file-MB: the
// binary and the database's mapped pages) resident parts, heap-MB
// (HeapInuse, before any GC: an upper bound of the live heap) and live-MB
// (HeapAlloc after a GC: what the daemon keeps, mostly the command-ID
// index). file-MB is the file's size.
//
//	go test -run '^$' -bench 'Startup' -benchtime 3x ./bonds
func BenchmarkStartup(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			path, err := startupFile(n)
			if err != nil {
				b.Fatal(err)
			}
			p := startupPaired(n)
			var openNs, readyNs, settledNs, readyCPU, cpuNs, alloc float64
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				runtime.GC()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				c0 := cpuTime()
				b.StartTimer()
				t0 := time.Now()
				db, err := Open(path, Options{PruneInterval: -1})
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := readyReads(db); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				c2 := cpuTime()
				if err := settleReads(db, p); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				c1 := cpuTime()
				b.StopTimer()
				runtime.ReadMemStats(&m1)
				openNs += float64(t1.Sub(t0))
				readyNs += float64(t2.Sub(t0))
				settledNs += float64(t3.Sub(t0))
				cpuNs += float64(c1 - c0)
				readyCPU += float64(c2 - c0)
				alloc += float64(m1.TotalAlloc - m0.TotalAlloc)
				_ = db.Close()
				b.StartTimer()
			}
			b.StopTimer()
			N := float64(b.N)
			b.ReportMetric(openNs/N/1e6, "open-ms")
			b.ReportMetric(readyNs/N/1e6, "ready-ms")
			b.ReportMetric(settledNs/N/1e6, "settled-ms")
			b.ReportMetric(readyCPU/N/1e6, "ready-cpu-ms")
			b.ReportMetric(cpuNs/N/1e6, "cpu-ms")
			b.ReportMetric(alloc/N/(1<<20), "alloc-MB")
			if fi, err := os.Stat(path); err == nil {
				b.ReportMetric(float64(fi.Size())/(1<<20), "file-MB")
			}
			rss, err := startupRSS(path, n)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(rss.hwm/(1<<20), "rss-MB")
			b.ReportMetric(rss.anon/(1<<20), "rss-anon-MB")
			b.ReportMetric(rss.file/(1<<20), "rss-file-MB")
			b.ReportMetric(rss.heap/(1<<20), "heap-MB")
			b.ReportMetric(rss.live/(1<<20), "live-MB")
		})
	}
}

// readyReads is what the daemon reads from db before READY, after Open.
func readyReads(db *DB) error {
	_, err := db.Pending(context.Background())
	return err
}

// settleReads is what the daemon's parts read from db as they start,
// besides readyReads: the reconciler's first run (as its runOnce makes
// it), the outbox, the audit publisher and the unproven-records sweep.
func settleReads(db *DB, p Paired) error {
	ctx := context.Background()
	if _, err := db.reconcile(ctx, p, &Policy{}, 30*24*time.Hour); err != nil {
		return err
	}
	if _, err := db.Outbox(ctx); err != nil {
		return err
	}
	if _, err := db.AuditOutbox(ctx, 64); err != nil {
		return err
	}
	_, err := db.UnprovenLocks(ctx)
	return err
}

// startupPaired is BlueZ holding the bond of every bonded lock of
// startupFile(n).
func startupPaired(n int) *benchPaired {
	p := &benchPaired{}
	for i := 0; i < n; i += 2 {
		p.addrs = append(p.addrs, benchAddr(i))
	}
	return p
}

const startupChildEnv = "BONDS_STARTUP_CHILD"

type rssFigures struct{ hwm, anon, file, heap, live float64 }

// startupRSS runs Open and the start-up reads on path, startupFile(n), in
// a fresh process (this test binary, through TestMain and startupChild)
// and returns its resident set figures.
func startupRSS(path string, n int) (rssFigures, error) {
	exe, err := os.Executable()
	if err != nil {
		return rssFigures{}, err
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%s", startupChildEnv, n, path))
	out, err := cmd.Output()
	if err != nil {
		return rssFigures{}, fmt.Errorf("start-up child: %w: %s", err, out)
	}
	var r rssFigures
	if _, err := fmt.Sscan(string(out), &r.hwm, &r.anon, &r.file, &r.heap, &r.live); err != nil {
		return rssFigures{}, fmt.Errorf("start-up child said %q: %w", out, err)
	}
	return r, nil
}

// startupChild is the fresh process of startupRSS (arg: "n:path"): it
// opens path, makes the start-up reads, and prints VmHWM, RssAnon and
// RssFile, HeapInuse, and HeapAlloc after a GC, in bytes.
func startupChild(arg string) int {
	ns, path, _ := strings.Cut(arg, ":")
	n, err := strconv.Atoi(ns)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	p := startupPaired(n)
	db, err := Open(path, Options{PruneInterval: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := readyReads(db); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := settleReads(db, p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	st := procStatus()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	heap := m.HeapInuse
	runtime.GC()
	runtime.ReadMemStats(&m)
	fmt.Println(st["VmHWM"], st["RssAnon"], st["RssFile"], heap, m.HeapAlloc)
	if err := db.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
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

// procStatus returns the kB figures of /proc/self/status, in bytes.
func procStatus() map[string]float64 {
	m := map[string]float64{}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if v, isKB := strings.CutSuffix(strings.TrimSpace(v), " kB"); ok && isKB {
			kb, _ := strconv.ParseFloat(v, 64)
			m[k] = kb * 1024
		}
	}
	return m
}

// cpuTime is the process's CPU time so far (user and system), in ns.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
