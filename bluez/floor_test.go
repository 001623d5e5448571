package bluez_test

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/frame"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// busLog records the messages of one D-Bus connection: the method calls
// it sends, and the signals it receives (godbus's interceptors see every
// message the connection writes or reads).
type busLog struct {
	mu      sync.Mutex
	on      bool
	calls   []string
	signals []*dbus.Message
}

func (l *busLog) out(m *dbus.Message) {
	if m.Type != dbus.TypeMethodCall {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.on {
		return
	}
	iface, _ := m.Headers[dbus.FieldInterface].Value().(string)
	member, _ := m.Headers[dbus.FieldMember].Value().(string)
	name := iface[strings.LastIndex(iface, ".")+1:] + "." + member
	if member == "WriteValue" && len(m.Body) == 2 {
		b, _ := m.Body[0].([]byte)
		name += fmt.Sprintf("[%d]", len(b))
	}
	if member == "Get" && len(m.Body) == 2 {
		name += fmt.Sprintf("(%v)", m.Body[1])
	}
	l.calls = append(l.calls, name)
}

func (l *busLog) in(m *dbus.Message) {
	if m.Type != dbus.TypeSignal {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.on {
		l.signals = append(l.signals, m)
	}
}

func (l *busLog) start() {
	l.mu.Lock()
	l.on, l.calls, l.signals = true, nil, nil
	l.mu.Unlock()
}

func (l *busLog) stop() (calls []string, signals []*dbus.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on = false
	return l.calls, l.signals
}

// TestOneCommandSessionRoundTrips counts the D-Bus traffic of a real
// one-command session as gatewayd runs it (internal/bluelink: Dial is
// Adapter.Connect, Handshake is channel.Dial over the fragment transport
// with the gateway's credential by value, Do is one signed unlock, Close
// sends the protected close frame and closes the device) against the
// emulator at zero link latency, the second session to the lock (the
// first also reads the GATT tree), and checks that BenchmarkLinkCycle's
// cycle makes the same method calls and waits for as many signals, and
// that the floor of the link-cycle benchmarks (sessionRoundTrips) is that
// count: one round trip a call, half one a signal waited for.
func TestOneCommandSessionRoundTrips(t *testing.T) {
	log := &busLog{}
	w := newBenchWorld(t, dbus.WithIncomingInterceptor(log.in), dbus.WithOutgoingInterceptor(log.out))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gw, op := w.fleet.Gateway(t, "gw-dock-1"), w.fleet.Operator(t, "otto", cred.RoleOperator)
	session := func(n uint64) {
		t.Helper()
		dev, err := w.ad.Connect(ctx, bluez.DeviceOptions{Path: w.info.Path})
		if err != nil {
			t.Fatal(err)
		}
		ch, err := channel.Dial(ctx, channel.NewFragmentTransport(dev, fragment.Options{}), w.fleet.GatewayConfig(gw))
		if err != nil {
			t.Fatal(err)
		}
		signed, err := command.Sign(op.Key, op.Cert.Raw, command.Body{LockID: w.lock.ID(), Op: command.OpUnlock,
			CommandID: [16]byte{15: byte(n)}, NotAfter: w.fleet.Now.Add(time.Hour), Counter: n})
		if err != nil {
			t.Fatal(err)
		}
		if r, err := lockclient.New(ch).Signed(ctx, command.OpUnlock, signed); err != nil || r.Status != command.StatusOK {
			t.Fatalf("unlock: %v %v", r, err)
		}
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		_ = ch.Close(cctx, frame.CloseNormal)
		ccancel()
		if err := dev.Close(); err != nil {
			t.Fatal(err)
		}
	}
	count := func(what string, run func()) (calls []string, waited int) {
		log.start()
		run()
		calls, signals := log.stop()
		kinds := map[string]int{}
		for _, s := range signals {
			path, _ := s.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
			if !strings.HasPrefix(string(path), string(w.info.Path)) || len(s.Body) < 2 {
				continue
			}
			ch, _ := s.Body[1].(map[string]dbus.Variant)
			var ks []string
			for k, v := range ch {
				switch k {
				case "ManufacturerData", "RSSI": // the radio's adverts
				case "Value":
					ks = append(ks, k)
					waited++ // ReadPacket's notification
				default:
					ks = append(ks, fmt.Sprintf("%s=%v", k, v.Value()))
					if k == "Connected" && v.Value() == false {
						waited++ // Close waits for the link to go down
					}
				}
			}
			if len(ks) > 0 {
				sort.Strings(ks)
				kinds[strings.TrimPrefix(string(path), string(w.info.Path))+" "+strings.Join(ks, ",")]++
			}
		}
		t.Logf("%s: %d method calls: %s", what, len(calls), strings.Join(calls, ", "))
		t.Logf("%s: signals received: %v; %d waited for", what, kinds, waited)
		return calls, waited
	}
	session(1) // the first finds the characteristics (GetManagedObjects)
	calls, waited := count("session", func() { session(2) })
	var id uint8
	cycleCalls, cycleWaited := count("BenchmarkLinkCycle's cycle", func() { w.cycle(t, &id) })
	strip := func(c []string) string { // the writes' sizes differ
		return regexp.MustCompile(`\[[0-9]+\]`).ReplaceAllString(strings.Join(c, ", "), "")
	}
	if strip(calls) != strip(cycleCalls) || waited != cycleWaited {
		t.Errorf("the benchmark's cycle makes calls %s and waits for %d signals; a real session %s and %d",
			strip(cycleCalls), cycleWaited, strip(calls), waited)
	}
	if rt := float64(len(calls)) + float64(waited)/2; rt != sessionRoundTrips {
		t.Errorf("a real session makes %d calls and waits for %d signals, %.1f round trips; the floor counts %.1f (sessionRoundTrips)",
			len(calls), waited, rt, sessionRoundTrips)
	}
}
