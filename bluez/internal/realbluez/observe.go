package realbluez

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
)

// What the differential test compares besides steps and property types
// (issue 13): the values of the properties the client relies on, the
// order of the signals it waits on, and the D-Bus error names. The facts
// are recorded here, on both sides, by the same code.

// recorder records the Device1 changes of the lock's device the client
// waits on (Connected, ServicesResolved, Paired, Bonded, Trusted), in
// the order the bus delivered them, and marks where a method reply came
// (by the connection's sequence numbers, which order replies and signals
// as they were read).
type recorder struct {
	conn  *dbus.Conn
	ch    chan *dbus.Signal
	opts  []dbus.MatchOption
	start time.Time

	mu     sync.Mutex
	events []event
	done   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

type event struct {
	seq  dbus.Sequence
	name string
	at   time.Duration
}

// watched are the Device1 properties whose changes are recorded.
var watched = []string{"Connected", "ServicesResolved", "Paired", "Bonded", "Trusted"}

// record starts recording the lock's device's changes.
func (r *Run) record() *recorder {
	rec := &recorder{conn: r.env.Conn, ch: make(chan *dbus.Signal, 64), start: time.Now(), done: make(chan struct{}),
		opts: []dbus.MatchOption{dbus.WithMatchSender(bluez.BusName), dbus.WithMatchObjectPath(r.dev),
			dbus.WithMatchInterface("org.freedesktop.DBus.Properties"), dbus.WithMatchMember("PropertiesChanged")}}
	if err := rec.conn.AddMatchSignal(rec.opts...); err != nil {
		rec.opts = nil // the client's own rules cover the device: record what arrives
	}
	rec.conn.Signal(rec.ch)
	path := r.dev
	rec.wg.Go(func() {
		for {
			select {
			case <-rec.done:
				return
			case s := <-rec.ch:
				if s == nil || s.Path != path || s.Name != "org.freedesktop.DBus.Properties.PropertiesChanged" || len(s.Body) < 2 {
					continue
				}
				if iface, _ := s.Body[0].(string); iface != bluez.IfaceDevice {
					continue
				}
				changed, _ := s.Body[1].(map[string]dbus.Variant)
				for _, n := range watched {
					if x, ok := changed[n]; ok {
						rec.add(s.Sequence, fmt.Sprintf("%s=%v", n, x.Value()))
					}
				}
			}
		}
	})
	return rec
}

func (rec *recorder) add(seq dbus.Sequence, name string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.events = append(rec.events, event{seq: seq, name: name, at: time.Since(rec.start)})
}

// reply marks a method reply (its ResponseSequence) among the signals.
func (rec *recorder) reply(call *dbus.Call, name string) {
	if call != nil {
		rec.add(call.ResponseSequence, name)
	}
}

// stop ends the recording, after a short wait for signals still in
// flight.
func (rec *recorder) stop() {
	rec.once.Do(func() {
		time.Sleep(50 * time.Millisecond)
		rec.conn.RemoveSignal(rec.ch)
		if rec.opts != nil {
			_ = rec.conn.RemoveMatchSignal(rec.opts...)
		}
		close(rec.done)
		rec.wg.Wait()
	})
}

// facts adds "signals" (the events in bus order, comma-separated) and
// "resolve_gap_ms" (from Connected=true to ServicesResolved=true, -1 when
// not both seen) to f.
func (rec *recorder) facts(f map[string]any) map[string]any {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	evs := append([]event(nil), rec.events...)
	// Sort by sequence: the recorder's channel and the call's return are
	// not ordered with each other, the sequences are.
	for i := 1; i < len(evs); i++ {
		for j := i; j > 0 && evs[j].seq < evs[j-1].seq; j-- {
			evs[j], evs[j-1] = evs[j-1], evs[j]
		}
	}
	var names []string
	var connected, resolved time.Duration = -1, -1
	for _, e := range evs {
		names = append(names, e.name)
		switch e.name {
		case "Connected=true":
			if connected < 0 {
				connected = e.at
			}
		case "ServicesResolved=true":
			if resolved < 0 {
				resolved = e.at
			}
		}
	}
	f["signals"] = strings.Join(names, ",")
	f["resolve_gap_ms"] = int64(-1)
	if connected >= 0 && resolved >= 0 {
		f["resolve_gap_ms"] = (resolved - connected).Milliseconds()
	}
	return f
}

// ErrorName is the D-Bus error name behind err ("" if none): what BlueZ
// answered.
func ErrorName(err error) string {
	var be *bluez.Error
	if errors.As(err, &be) {
		return be.Name
	}
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name
	}
	var dep *dbus.Error
	if errors.As(err, &dep) {
		return dep.Name
	}
	return ""
}

// linkDropped waits up to 5 s for the lock's device to report Connected
// false: whether a failed pairing dropped the link.
func (r *Run) linkDropped(ctx context.Context) bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, err := r.deviceFacts(ctx, "Connected")
		if err == nil && f["Connected"] == false {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// storedDevice reports whether bluetoothd, just restarted, lists the
// lock's device before any advertisement of it: loaded from storage (no
// RSSI yet). It waits for the adapter to be back.
func (r *Run) storedDevice(ctx context.Context) (stored bool, err error) {
	for {
		var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = r.env.Conn.Object(bluez.BusName, "/").CallWithContext(cctx, "org.freedesktop.DBus.ObjectManager.GetManagedObjects", 0).Store(&objs)
		cancel()
		if err == nil {
			if _, ok := objs[dbus.ObjectPath("/org/bluez/"+r.env.Adapter)][bluez.IfaceAdapter]; ok {
				dev, ok := objs[r.dev][bluez.IfaceDevice]
				if !ok {
					return false, nil
				}
				_, seen := dev["RSSI"]
				return !seen, nil
			}
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("adapter not back after the restart: %w", errors.Join(err, ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// valueFacts records the values of the Device1 properties the client
// relies on and the Inbox characteristic's MTU, as "Name=value" facts
// prefixed "v:" (compared by TestDifferential).
func (r *Run) valueFacts(ctx context.Context, f map[string]any) error {
	dv, err := r.deviceFacts(ctx, "Address", "AddressType", "Paired", "Bonded", "Trusted", "Connected", "ServicesResolved")
	if err != nil {
		return err
	}
	for k, x := range dv {
		f["v:"+k] = fmt.Sprint(x)
	}
	return nil
}
