package daemon

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/fleet/operator"
	"github.com/gatewayd/gatewayd/fleet/operator/operatortest"
)

// wakes counts Wake calls per lock.
type wakes struct {
	mu sync.Mutex
	n  map[bonds.LockID]int
}

func (w *wakes) Wake(id bonds.LockID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n[id]++
}

func (w *wakes) count(id bonds.LockID) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n[id]
}

// TestPresenceWakesOnEveryAdvertisement: a lock that stays in range is
// reported to the scheduler (Wake) with its advertisements, not only when
// it first appears: a lock whose backoff grew through radio faults while
// it never left range is tried again soon after it is heard.
func TestPresenceWakesOnEveryAdvertisement(t *testing.T) {
	d := newDock(t, 1, emulator.Options{})
	conn, err := dbus.Connect(d.bus.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ad, err := bluez.Open(ctx, conn, bluez.Options{CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ad.Close()
	db, err := bonds.Open(filepath.Join(d.dir, "presence.db"), bonds.Options{NoSync: true, PruneInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pres, err := operator.NewPresence(operator.PresenceOptions{Publisher: &operatortest.Publisher{}, Topics: d.topics})
	if err != nil {
		t.Fatal(err)
	}
	w := &wakes{n: map[bonds.LockID]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		presence(ctx, ad, db, w, pres, testLogger(t))
	}()
	defer func() { cancel(); <-done }()
	id := d.locks[0].id
	deadline := time.Now().Add(30 * time.Second)
	for w.count(id) < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("%d wakes for a lock advertising in range for 30 s, want one per advertisement", w.count(id))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
