package daemon

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/internal/fleetproc"
)

// Advertisement load of BenchmarkDockAdverts: 1,000 locks, 10 rounds a
// second (issue 14: "1,000 locks advertise 10 times a second").
const (
	advLocks    = 1000
	advInterval = 100 * time.Millisecond
	advWarmup   = 3 * time.Second  // after the 1,000 locks appeared
	advWindow   = 10 * time.Second // gatewayd's CPU is measured over this
)

// BenchmarkDockAdverts (issue 14) measures the CPU of the gatewayd
// process while 1,000 locks advertise 10 times a second, as a percentage
// of one core: the real binary (go build ./cmd/gatewayd, log level info)
// as its own process, on a private dbus-daemon, with the BlueZ emulator
// hosting 1,000 reference locks in this process and mosquitto as the
// broker. The radio is driven from here (emulator.Advertise every 100 ms),
// so the number of advertisements sent is known exactly: after gatewayd is
// READY (discovery on), the first round makes the 1,000 locks appear at
// once (1,000 InterfacesAdded), and every later round is one
// PropertiesChanged of Device1 per lock (ManufacturerData at every
// advertisement, DuplicateData, and RSSI when it changed), as bluetoothd
// 5.66 sends during discovery.
//
// gatewayd's CPU is utime+stime from /proc/PID/stat over advWindow, after
// advWarmup. Reported: gatewayd-%core (the goal: at most 15),
// adverts/s (what the radio achieved; 10,000 when this machine keeps up),
// and gatewayd-%core@10k/s (the CPU scaled to exactly 10,000
// advertisements a second; scripts/bench.sh's goal is on this one). It fails, not on time, but when an advertisement was lost:
// gatewayd must see all 1,000 locks, drop no event, resynchronise never,
// and, once the radio stops, have decoded exactly as many advertisements
// as were sent after the first round (gatewayd_bluez_adverts_decoded_total).
//
//	go test -run '^$' -bench BenchmarkDockAdverts -benchtime 1x ./internal/daemon
func BenchmarkDockAdverts(b *testing.B) {
	bin := buildGatewayd(b)
	d := newDock(b, 0, emulator.Options{RadioInterval: time.Hour})
	for i := range advLocks {
		lp := d.fleet.Lock(b, uint64(0x4c4b000000000001+i))
		l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: d.fleet.Roots, Store: locktest.NewStore(),
			Actuator: &locktest.Actuator{}, RTC: d.now, Rand: rand.Reader})
		if err != nil {
			b.Fatal(err)
		}
		addr := fmt.Sprintf("C0:00:00:00:%02X:%02X", (i+1)>>8, (i+1)&0xff)
		if err := d.emu.AddLock(l, addr, emulator.LockOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	port, err := fleetproc.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	metricsAddr := "127.0.0.1:" + strconv.Itoa(port)
	cfgPath := filepath.Join(d.dir, "gatewayd.toml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		b.Fatal(err)
	}
	// Presence's away timeout well above a round, the log as a dock runs it.
	s := strings.Replace(string(cfg), `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", metricsAddr), 1)
	s = strings.Replace(s, `level = "debug"`, `level = "info"`, 1)
	s = strings.Replace(s, `away_after = "5s"`, `away_after = "30s"`, 1)
	must(b, os.WriteFile(cfgPath, []byte(s), 0o644))

	ns, err := fleetproc.ListenNotify(filepath.Join(d.dir, "notify.sock"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ns.Close() })
	var procs fleetproc.Group
	b.Cleanup(procs.StopAll)
	w, logf, err := fleetproc.OpenLog(filepath.Join(d.dir, "gatewayd.log"), nil)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "-config", cfgPath)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.Path, "DBUS_SYSTEM_BUS_ADDRESS="+d.bus.Addr)
	p, err := procs.Start("gatewayd", cmd, w, logf)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	if _, err := ns.WaitReady(ctx, p, 60*time.Second); err != nil {
		b.Fatalf("%v (log: %s)", err, filepath.Join(d.dir, "gatewayd.log"))
	}
	scrape := func(name string) float64 {
		b.Helper()
		body, err := fleetproc.Scrape(ctx, metricsAddr, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		for l := range strings.SplitSeq(body, "\n") {
			if strings.HasPrefix(l, name+" ") || strings.HasPrefix(l, name+"{") {
				f, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
				if err != nil {
					b.Fatalf("%s: %v", l, err)
				}
				return f
			}
		}
		b.Fatalf("no %s in gatewayd's metrics", name)
		return 0
	}

	// The radio: a round every advInterval, counted. A round that cannot
	// start on time (a slow machine) is skipped by the ticker, not
	// queued: adverts/s says what was achieved.
	rounds := make(chan int, 1)
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(advInterval)
		defer t.Stop()
		n := 0
		d.emu.Advertise() // the 1,000 locks appear at once
		n++
		for {
			select {
			case <-stop:
				rounds <- n
				return
			case <-t.C:
				d.emu.Advertise()
				n++
			}
		}
	}()
	stopRadio := sync1(func() {
		close(stop)
	})
	b.Cleanup(stopRadio)

	// All 1,000 locks seen (the first round's InterfacesAdded), then a
	// warm-up, then the window.
	for deadline := time.Now().Add(60 * time.Second); scrape("gatewayd_bluez_locks_present") < advLocks; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("gatewayd sees %v locks of %d after 60 s", scrape("gatewayd_bluez_locks_present"), advLocks)
		}
	}
	time.Sleep(advWarmup)
	var cpu, wall time.Duration
	var decoded float64
	for b.Loop() {
		dec0 := scrape("gatewayd_bluez_adverts_decoded_total")
		c0, t0 := procCPU(b, p.Pid()), time.Now()
		time.Sleep(advWindow)
		c1, t1 := procCPU(b, p.Pid()), time.Now()
		decoded += scrape("gatewayd_bluez_adverts_decoded_total") - dec0
		cpu += c1 - c0
		wall += t1.Sub(t0)
	}
	stopRadio()
	sent := (<-rounds - 1) * advLocks // the first round's are InterfacesAdded

	// Nothing lost: wait until gatewayd has read everything sent.
	var got float64
	for deadline, last, same := time.Now().Add(60*time.Second), -1.0, 0; ; time.Sleep(200 * time.Millisecond) {
		got = scrape("gatewayd_bluez_adverts_decoded_total")
		if got == float64(sent) {
			break
		}
		if got == last {
			same++
		} else {
			last, same = got, 0
		}
		if same >= 10 || time.Now().After(deadline) {
			break
		}
	}
	dropped := scrape("gatewayd_bluez_events_dropped_total")
	resyncs := scrape("gatewayd_bluez_resyncs_total")
	present := scrape("gatewayd_bluez_locks_present")
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "gatewayd-%core")
	rate := decoded / wall.Seconds()
	b.ReportMetric(rate, "adverts/s")
	if rate > 0 {
		b.ReportMetric(100*cpu.Seconds()/wall.Seconds()*10000/rate, "gatewayd-%core@10k/s")
	}
	b.ReportMetric(float64(sent)-got, "adverts-lost")
	b.ReportMetric(dropped, "events-dropped")
	if got != float64(sent) || dropped != 0 || resyncs != 0 || present != advLocks {
		b.Fatalf("advertisements sent after the first round %d, decoded by gatewayd %v; events dropped %v, resyncs %v, locks present %v of %d",
			sent, got, dropped, resyncs, present, advLocks)
	}
}

// sync1 makes f callable more than once (it runs once).
func sync1(f func()) func() {
	done := false
	return func() {
		if !done {
			done = true
			f()
		}
	}
}

// procCPU is the user plus system CPU time of process pid so far
// (/proc/PID/stat utime and stime, in clock ticks of 1/100 s: USER_HZ
// is 100 on every Linux architecture gatewayd runs on).
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from the last ')'. utime and stime are fields 14 and 15.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// buildGatewayd builds cmd/gatewayd into a temporary directory, or
// returns $GATEWAYD_BENCH_BIN, a gatewayd built elsewhere (another
// commit's, to compare).
func buildGatewayd(b *testing.B) string {
	b.Helper()
	if bin := os.Getenv("GATEWAYD_BENCH_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(b.TempDir(), "gatewayd")
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/gatewayd/gatewayd/cmd/gatewayd").CombinedOutput()
	if err != nil {
		b.Fatalf("go build ./cmd/gatewayd: %v\n%s", err, out)
	}
	return bin
}
