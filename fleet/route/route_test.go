package route

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/fleet/operator"
)

var (
	lockA = bonds.LockID{1, 2, 3, 4, 5, 6, 7, 8}
	lockB = bonds.LockID{9, 9, 9, 9, 9, 9, 9, 9}
	t0    = time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
)

func locks(t *testing.T, tb *Table, gw string, seen ...operator.SeenLock) {
	t.Helper()
	p, err := json.Marshal(operator.LocksMessage{GatewayID: gw, UpdatedAt: t0, Locks: seen})
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Handle("gatewayd/v1/gw/"+gw+"/locks", p); err != nil {
		t.Fatal(err)
	}
}

func status(t *testing.T, tb *Table, gw, state string) {
	t.Helper()
	if err := tb.Handle("gatewayd/v1/gw/"+gw+"/status", []byte(`{"state":"`+state+`"}`)); err != nil {
		t.Fatal(err)
	}
}

func route(t *testing.T, tb *Table, l bonds.LockID) string {
	t.Helper()
	gw, err := tb.Route(l)
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

// TestRoute: the rules of docs/mqtt.md "A lock heard by several gateways":
// online gateways only, verified before unverified, strongest signal
// beyond RSSIMargin, else freshest last_seen; and a lock that roams moves
// its route with the next presence messages.
func TestRoute(t *testing.T) {
	tb := New("")
	if _, err := tb.Route(lockA); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("empty table: %v", err)
	}
	locks(t, tb, "dock-1", operator.SeenLock{LockID: lockA, RSSI: -70, LastSeen: t0, Verified: true})
	locks(t, tb, "dock-2", operator.SeenLock{LockID: lockA, RSSI: -50, LastSeen: t0, Verified: true})
	if gw := route(t, tb, lockA); gw != "dock-2" {
		t.Fatalf("strongest signal: %s", gw)
	}
	// Within the margin, the fresher wins.
	locks(t, tb, "dock-1", operator.SeenLock{LockID: lockA, RSSI: -52, LastSeen: t0.Add(time.Second), Verified: true})
	if gw := route(t, tb, lockA); gw != "dock-1" {
		t.Fatalf("fresher within margin: %s", gw)
	}
	// An unverified loud entry loses to a verified weak one.
	locks(t, tb, "dock-3", operator.SeenLock{LockID: lockA, RSSI: -30, LastSeen: t0.Add(time.Hour)})
	if gw := route(t, tb, lockA); gw == "dock-3" {
		t.Fatal("unverified entry preferred")
	}
	if c := tb.Candidates(lockA); len(c) != 3 || c[2] != "dock-3" {
		t.Fatalf("candidates = %v", c)
	}
	// Offline gateways are not routed to.
	status(t, tb, "dock-1", "offline")
	status(t, tb, "dock-3", "offline")
	if gw := route(t, tb, lockA); gw != "dock-2" {
		t.Fatalf("with dock-1 offline: %s", gw)
	}
	status(t, tb, "dock-2", "offline")
	if _, err := tb.Route(lockA); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("all offline: %v", err)
	}

	// Roaming: lock B leaves dock-4 and appears at dock-5; Wait sees it.
	locks(t, tb, "dock-4", operator.SeenLock{LockID: lockB, LastSeen: t0, Verified: true})
	if gw := route(t, tb, lockB); gw != "dock-4" {
		t.Fatalf("lock B at %s", gw)
	}
	done := make(chan string)
	go func() {
		gw, _ := tb.Wait(context.Background(), lockB, "dock-4")
		done <- gw
	}()
	locks(t, tb, "dock-4")
	locks(t, tb, "dock-5", operator.SeenLock{LockID: lockB, LastSeen: t0, Verified: false})
	if gw := <-done; gw != "dock-5" {
		t.Fatalf("re-routed to %q", gw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := tb.Wait(ctx, lockB, "dock-5"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with no other route: %v", err)
	}
}

// TestHandleRefuses: foreign topics, malformed payloads and a presence
// message naming another gateway are refused and change nothing.
func TestHandleRefuses(t *testing.T) {
	tb := New("p")
	for _, c := range []struct {
		topic, payload string
		want           error
	}{
		{"q/gw/dock-1/locks", `{}`, ErrTopic},
		{"p/gw/dock-1/result", `{}`, ErrTopic},
		{"p/gw/+/locks", `{}`, ErrTopic},
		{"p/gw/dock-1/locks", `{`, ErrPayload},
		{"p/gw/dock-1/status", `[`, ErrPayload},
		{"p/gw/dock-1/locks", `{"gateway_id":"dock-2","locks":[{"lock_id":"0102030405060708"}]}`, ErrPayload},
	} {
		if err := tb.Handle(c.topic, []byte(c.payload)); !errors.Is(err, c.want) {
			t.Errorf("%s %s: %v, want %v", c.topic, c.payload, err, c.want)
		}
	}
	if w := tb.Where(lockA); len(w) != 0 {
		t.Fatalf("refused input changed the table: %v", w)
	}
	if f := tb.Filters(); f[0] != "p/gw/+/status" || f[1] != "p/gw/+/locks" {
		t.Fatalf("filters = %v", f)
	}
}
