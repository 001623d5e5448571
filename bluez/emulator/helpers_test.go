package emulator

import (
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez/internal/dbustest"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
)

const gwAddr = "00:11:22:33:44:55"

// world is a bus, a fleet and a client connection.
type world struct {
	t      *testing.T
	bus    *dbustest.Bus
	fleet  *channeltest.Fleet
	client *dbus.Conn
	sigs   *sigWatch
}

func newWorld(t *testing.T) *world {
	t.Helper()
	b := dbustest.Start(t)
	w := &world{t: t, bus: b, fleet: channeltest.NewFleet(t, "acme"), client: b.Conn(t)}
	w.sigs = watchSignals(t, w.client)
	return w
}

func (w *world) start(o Options) *Emulator {
	w.t.Helper()
	o.Addr = w.bus.Addr
	if o.RadioInterval == 0 {
		o.RadioInterval = 20 * time.Millisecond
	}
	e, err := Start(context.Background(), o)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = e.Close() })
	return e
}

type testLock struct {
	l   *lock.Lock
	act *locktest.Actuator
}

func (w *world) lock(n uint64) testLock {
	w.t.Helper()
	p := w.fleet.Lock(w.t, n)
	act := &locktest.Actuator{}
	l, err := lock.New(lock.Options{Cert: p.Cert, Key: p.Key, Roots: w.fleet.Roots, Store: locktest.NewStore(),
		Actuator: act, RTC: func() time.Time { return w.fleet.Now }, Rand: rand.Reader})
	if err != nil {
		w.t.Fatal(err)
	}
	return testLock{l, act}
}

func addrOf(n int) string {
	return fmt.Sprintf("C0:00:00:00:%02X:%02X", n>>8&0xff, n&0xff)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (w *world) call(path dbus.ObjectPath, method string, args ...any) *dbus.Call {
	return w.client.Object("org.bluez", path).CallWithContext(ctxT(w.t), method, 0, args...)
}

func (w *world) mustCall(path dbus.ObjectPath, method string, args ...any) *dbus.Call {
	w.t.Helper()
	c := w.call(path, method, args...)
	if c.Err != nil {
		w.t.Fatalf("%s on %s: %v", method, path, c.Err)
	}
	return c
}

func errName(err error) string {
	if de, ok := err.(dbus.Error); ok {
		return de.Name
	}
	if de, ok := err.(*dbus.Error); ok {
		return de.Name
	}
	return fmt.Sprintf("not a D-Bus error: %v", err)
}

func wantErr(t *testing.T, err error, name string) {
	t.Helper()
	if err == nil || errName(err) != name {
		t.Fatalf("error %v (%s), want %s", err, errName(err), name)
	}
}

func (w *world) discover(uuids ...string) {
	w.t.Helper()
	if len(uuids) > 0 {
		w.mustCall("/org/bluez/hci0", ifaceAdapter+".SetDiscoveryFilter",
			map[string]dbus.Variant{"UUIDs": v(uuids), "Transport": v("le")})
	}
	w.mustCall("/org/bluez/hci0", ifaceAdapter+".StartDiscovery")
}

func (w *world) objects() map[dbus.ObjectPath]map[string]map[string]dbus.Variant {
	w.t.Helper()
	var out map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	if err := w.client.Object("org.bluez", "/").CallWithContext(ctxT(w.t), ifaceOM+".GetManagedObjects", 0).Store(&out); err != nil {
		w.t.Fatal(err)
	}
	return out
}

func (w *world) devices() map[dbus.ObjectPath]map[string]dbus.Variant {
	out := map[dbus.ObjectPath]map[string]dbus.Variant{}
	for p, in := range w.objects() {
		if d, ok := in[ifaceDevice]; ok {
			out[p] = d
		}
	}
	return out
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sigWatch records the org.bluez signals the client receives.
type sigWatch struct {
	mu   sync.Mutex
	sigs []*dbus.Signal
	cond chan struct{}
}

func watchSignals(t *testing.T, c *dbus.Conn) *sigWatch {
	t.Helper()
	if err := c.AddMatchSignal(dbus.WithMatchSender("org.bluez")); err != nil {
		t.Fatal(err)
	}
	w := &sigWatch{cond: make(chan struct{}, 1)}
	ch := make(chan *dbus.Signal, 4096)
	c.Signal(ch)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case s := <-ch:
				w.mu.Lock()
				w.sigs = append(w.sigs, s)
				w.mu.Unlock()
				select {
				case w.cond <- struct{}{}:
				default:
				}
			case <-done:
				return
			}
		}
	})
	t.Cleanup(func() { c.RemoveSignal(ch); close(done); wg.Wait() })
	return w
}

// wait returns the first signal (from index 0) that pred accepts.
func (w *sigWatch) wait(t *testing.T, what string, pred func(*dbus.Signal) bool) *dbus.Signal {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		w.mu.Lock()
		for _, s := range w.sigs {
			if pred(s) {
				w.mu.Unlock()
				return s
			}
		}
		w.mu.Unlock()
		select {
		case <-w.cond:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for signal: %s", what)
		}
	}
}

func isPropsChanged(s *dbus.Signal, path dbus.ObjectPath, iface, prop string) bool {
	if s.Path != path || s.Name != ifaceProps+".PropertiesChanged" || len(s.Body) < 2 || s.Body[0] != iface {
		return false
	}
	ch, _ := s.Body[1].(map[string]dbus.Variant)
	_, ok := ch[prop]
	return ok
}

// settleGoroutines waits until the goroutine count is at most n.
func settleGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, trimStacks(string(buf)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func trimStacks(s string) string {
	if len(s) > 20000 {
		return s[:20000] + strings.Repeat(".", 3)
	}
	return s
}

// waitTicks waits until the radio has ticked n more times.
func waitTicks(t *testing.T, e *Emulator, n uint64) {
	t.Helper()
	e.mu.Lock()
	until := e.ticks + n
	e.mu.Unlock()
	waitFor(t, "radio ticks", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.ticks >= until
	})
}

// connect connects dev (Device1.Connect) and waits, as a client must,
// for ServicesResolved: Connect returns before it (Options.ResolveDelay).
func (w *world) connect(dev dbus.ObjectPath) {
	w.t.Helper()
	w.mustCall(dev, ifaceDevice+".Connect")
	waitFor(w.t, "ServicesResolved", func() bool {
		r, _ := w.devices()[dev]["ServicesResolved"].Value().(bool)
		return r
	})
}
