package bluez

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/internal/dbustest"
	"github.com/godbus/dbus/v5"
)

// settleGoroutines waits until the goroutine count is at most want.
func settleGoroutines(t *testing.T, want int) int {
	t.Helper()
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(5 * time.Second); n > want && time.Now().Before(deadline); n = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	return n
}

func matchRules(t *testing.T, bus *dbustest.Bus, via, c *dbus.Conn) uint32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := bus.MatchRules(ctx, via, c.Names()[0])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDispatcherSubscribeCyclesLeakNothing(t *testing.T) {
	bus := dbustest.Start(t)
	c := bus.Conn(t)
	via := bus.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	g0 := runtime.NumGoroutine()
	d := NewDispatcher(c, 5*time.Second)
	rules0 := matchRules(t, bus, via, c)
	g1 := runtime.NumGoroutine()
	for i := range 1000 {
		m := Match{Sender: "org.bluez", PathNamespace: "/org/bluez/hci0", Interface: "org.freedesktop.DBus.Properties", Member: "PropertiesChanged"}
		if i%2 == 1 {
			m = Match{Path: dbus.ObjectPath("/org/bluez/hci0/dev_00_11_22_33_44_55"), Interface: "org.freedesktop.DBus.Properties"}
		}
		s, err := d.Subscribe(ctx, m, 4)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, ok := <-s.C(); ok {
			t.Fatal("C not closed")
		}
	}
	if got := matchRules(t, bus, via, c); got != rules0 {
		t.Fatalf("match rules after 1000 cycles: %d, before %d", got, rules0)
	}
	if n := settleGoroutines(t, g1); n > g1 {
		t.Fatalf("goroutines after 1000 cycles: %d, before %d", n, g1)
	}
	// Close removes the rules of live subscriptions and its goroutine.
	for range 10 {
		if _, err := d.Subscribe(ctx, Match{PathNamespace: "/org/bluez"}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if got := matchRules(t, bus, via, c); got != rules0+10 {
		t.Fatalf("match rules with 10 live: %d, want %d", got, rules0+10)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := matchRules(t, bus, via, c); got != rules0 {
		t.Fatalf("match rules after Close: %d, want %d", got, rules0)
	}
	if n := settleGoroutines(t, g0); n > g0 {
		t.Fatalf("goroutines after Close: %d, before NewDispatcher %d", n, g0)
	}
	if _, err := d.Subscribe(ctx, Match{}, 0); err != ErrClosed {
		t.Fatalf("Subscribe after Close: %v", err)
	}
}

func TestDispatcherFilterAndSlowSubscriber(t *testing.T) {
	bus := dbustest.Start(t)
	c := bus.Conn(t)
	emitter := bus.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := NewDispatcher(c, 5*time.Second)
	defer d.Close()

	slow, err := d.Subscribe(ctx, Match{PathNamespace: "/a", Interface: "x.Y", Member: "Z"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := d.Subscribe(ctx, Match{Path: "/a/b", Interface: "x.Y"}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	other, err := d.Subscribe(ctx, Match{Path: "/c", Sender: emitter.Names()[0]}, 10)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := range n {
		if err := emitter.Emit("/a/b", "x.Y.Z", int32(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := emitter.Emit("/ab", "x.Y.Z", int32(-1)); err != nil { // not in namespace /a
		t.Fatal(err)
	}
	if err := emitter.Emit("/c", "p.Q.R", "hello"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		select {
		case s := <-fast.C():
			if s.Body[0].(int32) != int32(i) {
				t.Fatalf("fast got %v, want %d", s.Body, i)
			}
		case <-ctx.Done():
			t.Fatalf("fast got %d of %d signals", i, n)
		}
	}
	select {
	case s := <-other.C():
		if s.Name != "p.Q.R" || s.Path != "/c" {
			t.Fatalf("other got %v", s)
		}
	case <-ctx.Done():
		t.Fatal("other got nothing")
	}
	// The slow subscriber kept its first 2 and dropped the rest; nothing
	// from /ab reached it.
	if got := slow.Dropped(); got != n-2 {
		t.Fatalf("slow dropped %d, want %d", got, n-2)
	}
	for i := range 2 {
		s := <-slow.C()
		if s.Body[0].(int32) != int32(i) {
			t.Fatalf("slow got %v", s.Body)
		}
	}
	select {
	case s := <-slow.C():
		t.Fatalf("slow got extra %v", s.Body)
	default:
	}
}

func TestMatchRule(t *testing.T) {
	m := Match{Sender: "org.bluez", PathNamespace: "/org/bluez", Interface: "org.freedesktop.DBus.ObjectManager", Member: "InterfacesAdded"}
	want := "type='signal',sender='org.bluez',path_namespace='/org/bluez',interface='org.freedesktop.DBus.ObjectManager',member='InterfacesAdded'"
	if got := m.Rule(); got != want {
		t.Fatalf("Rule = %s", got)
	}
}

// TestSubscribeUnder: a subscription under another adds no match rule,
// receives what its own match selects among the parent's signals, and is
// closed with its parent.
func TestSubscribeUnder(t *testing.T) {
	bus := dbustest.Start(t)
	c, src, via := bus.Conn(t), bus.Conn(t), bus.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := NewDispatcher(c, 5*time.Second)
	defer d.Close()
	parent, err := d.Subscribe(ctx, Match{Sender: src.Names()[0], PathNamespace: "/org/bluez", Interface: "org.freedesktop.DBus.Properties"}, 16)
	if err != nil {
		t.Fatal(err)
	}
	rules := matchRules(t, bus, via, c)
	child, err := d.SubscribeUnder(parent, Match{PathNamespace: "/org/bluez/hci0/dev_A", Interface: "org.freedesktop.DBus.Properties"}, 16)
	if err != nil {
		t.Fatal(err)
	}
	if got := matchRules(t, bus, via, c); got != rules {
		t.Fatalf("SubscribeUnder added rules: %d, before %d", got, rules)
	}
	for _, p := range []dbus.ObjectPath{"/org/bluez/hci0/dev_B", "/org/bluez/hci0/dev_A/char000d"} {
		if err := src.Emit(p, "org.freedesktop.DBus.Properties.PropertiesChanged", "x", map[string]dbus.Variant{}, []string{}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case s := <-child.C():
		if s.Path != "/org/bluez/hci0/dev_A/char000d" {
			t.Fatalf("child got %s", s.Path)
		}
	case <-ctx.Done():
		t.Fatal("child got nothing")
	}
	if _, err := d.SubscribeUnder(child, Match{}, 0); !errors.Is(err, ErrInvalidArguments) {
		t.Fatalf("under a rule-less subscription: %v", err)
	}
	if err := parent.Close(); err != nil {
		t.Fatal(err)
	}
	for range child.C() { // drained, then closed with its parent
	}
	if err := child.Close(); err != nil {
		t.Fatal(err)
	}
	if got := matchRules(t, bus, via, c); got != rules-1 {
		t.Fatalf("rules after closing both: %d, want %d", got, rules-1)
	}
	if _, err := d.SubscribeUnder(parent, Match{}, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("under a closed parent: %v", err)
	}
}
