package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/fleet/operator/operatortest"
)

var presenceT0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// presenceEnv is a Presence with a fake publisher and a settable clock.
type presenceEnv struct {
	p      *Presence
	pub    *operatortest.Publisher
	clock  *clock
	topics Topics
}

// newPresenceEnv starts a Presence (MinInterval 10ms, Refresh 1h unless
// opt changes them), closed at the end of the test.
func newPresenceEnv(t *testing.T, opt func(*PresenceOptions)) *presenceEnv {
	t.Helper()
	tp, err := NewTopics("", "gw-dock-7")
	if err != nil {
		t.Fatal(err)
	}
	e := &presenceEnv{pub: &operatortest.Publisher{}, clock: &clock{t: presenceT0}, topics: tp}
	o := PresenceOptions{Publisher: e.pub, Topics: tp, Now: e.clock.Now, MinInterval: 10 * time.Millisecond,
		Refresh: time.Hour}
	if opt != nil {
		opt(&o)
	}
	if e.p, err = NewPresence(o); err != nil {
		t.Fatal(err)
	}
	if err := e.p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.p.Close)
	return e
}

// msgs returns the snapshots published so far, checking that each was
// retained on the locks topic.
func (e *presenceEnv) msgs(t *testing.T) []LocksMessage {
	t.Helper()
	var out []LocksMessage
	for _, m := range e.pub.Messages("") {
		if m.Topic != e.topics.Locks || !m.Retain {
			t.Fatalf("published on %q retain=%v, want %q retained", m.Topic, m.Retain, e.topics.Locks)
		}
		var lm LocksMessage
		if err := json.Unmarshal(m.Payload, &lm); err != nil {
			t.Fatalf("payload %s: %v", m.Payload, err)
		}
		out = append(out, lm)
	}
	return out
}

// waitMsg waits until the latest snapshot published satisfies cond and
// returns all of them.
func (e *presenceEnv) waitMsg(t *testing.T, what string, cond func(LocksMessage) bool) []LocksMessage {
	t.Helper()
	var ms []LocksMessage
	waitFor(t, what, func() bool {
		ms = e.msgs(t)
		return len(ms) > 0 && cond(ms[len(ms)-1])
	})
	return ms
}

func lk(id byte, rssi, battery int, locked bool) SeenLock {
	return SeenLock{LockID: bonds.LockID{1, 2, 3, 4, 5, 6, 7, id}, Address: fmt.Sprintf("C0:00:00:00:00:%02X", id),
		RSSI: rssi, Battery: battery, Locked: locked, LastSeen: presenceT0.Add(-time.Second)}
}

// ids returns the last byte of each lock ID of m, in order.
func ids(m LocksMessage) []byte {
	var out []byte
	for _, l := range m.Locks {
		out = append(out, l.LockID[7])
	}
	return out
}

func TestPresenceFirstSnapshot(t *testing.T) {
	e := newPresenceEnv(t, nil)
	if e.topics.Locks != "gatewayd/v1/gw/gw-dock-7/locks" {
		t.Fatalf("locks topic %q", e.topics.Locks)
	}
	time.Sleep(30 * time.Millisecond)
	if n := e.pub.Attempts(); n != 0 {
		t.Fatalf("%d publications before the first Update", n)
	}
	b := lk(0x0b, 0, 12, false)
	b.LastSeen = time.Date(2026, 11, 25, 13, 0, 0, 500e6, time.FixedZone("CET", 3600))
	b.Verified = true
	e.p.Update([]SeenLock{b, lk(0x0a, -60, 87, true), {Address: "zero ID: dropped"}})
	waitFor(t, "the first snapshot", func() bool { return len(e.pub.Messages("")) == 1 })
	m := e.pub.Messages("")[0]
	const want = `{"gateway_id":"gw-dock-7","updated_at":"2026-11-25T12:00:00Z","locks":[` +
		`{"lock_id":"010203040506070a","address":"C0:00:00:00:00:0A","rssi":-60,"battery":87,"locked":true,"last_seen":"2026-11-25T11:59:59Z","verified":false},` +
		`{"lock_id":"010203040506070b","address":"C0:00:00:00:00:0B","battery":12,"locked":false,"last_seen":"2026-11-25T12:00:00.5Z","verified":true}` +
		`],"truncated":false}`
	if m.Topic != e.topics.Locks || !m.Retain || string(m.Payload) != want {
		t.Fatalf("published %q retain=%v:\n%s\nwant\n%s", m.Topic, m.Retain, m.Payload, want)
	}

	// No lock: an empty array, not null.
	e.clock.Set(presenceT0.Add(time.Minute))
	e.p.Update(nil)
	waitFor(t, "the empty snapshot", func() bool { return len(e.pub.Messages("")) == 2 })
	const empty = `{"gateway_id":"gw-dock-7","updated_at":"2026-11-25T12:01:00Z","locks":[],"truncated":false}`
	if got := string(e.pub.Messages("")[1].Payload); got != empty {
		t.Fatalf("empty snapshot %s, want %s", got, empty)
	}
}

func TestPresenceRSSIOnlyWaitsForRefresh(t *testing.T) {
	t.Run("not published", func(t *testing.T) {
		e := newPresenceEnv(t, nil) // Refresh 1h
		e.p.Update([]SeenLock{lk(1, -60, 87, true)})
		e.waitMsg(t, "the first snapshot", func(LocksMessage) bool { return true })
		l := lk(1, -75, 87, true)
		l.LastSeen = presenceT0
		l.Address = "C0:00:00:00:00:FF" // not a reason either
		for range 5 {
			e.p.Update([]SeenLock{l})
			time.Sleep(20 * time.Millisecond) // twice MinInterval
		}
		if n := e.pub.Attempts(); n != 1 {
			t.Fatalf("%d publications, want 1: RSSI and last_seen alone were published", n)
		}
	})
	t.Run("refresh publishes the latest", func(t *testing.T) {
		e := newPresenceEnv(t, func(o *PresenceOptions) { o.Refresh = 50 * time.Millisecond })
		e.p.Update([]SeenLock{lk(1, -60, 87, true)})
		e.waitMsg(t, "the first snapshot", func(LocksMessage) bool { return true })
		l := lk(1, -75, 87, true)
		l.LastSeen = presenceT0
		e.clock.Set(presenceT0.Add(time.Minute))
		e.p.Update([]SeenLock{l})
		m := e.waitMsg(t, "the refresh", func(m LocksMessage) bool { return m.Locks[0].RSSI == -75 })
		last := m[len(m)-1]
		if !last.Locks[0].LastSeen.Equal(presenceT0) || !last.UpdatedAt.Equal(presenceT0.Add(time.Minute)) {
			t.Fatalf("refreshed snapshot %+v", last)
		}
		// Unchanged: refreshed again all the same.
		n := len(m)
		e.waitMsg(t, "another refresh", func(LocksMessage) bool { return len(e.pub.Messages("")) > n })
	})
}

func TestPresenceChangesPublished(t *testing.T) {
	e := newPresenceEnv(t, nil)
	steps := []struct {
		name  string
		locks []SeenLock
		check func(LocksMessage) bool
	}{
		{"first", []SeenLock{lk(1, -60, 87, true)}, func(m LocksMessage) bool { return string(ids(m)) == "\x01" }},
		{"a lock appears", []SeenLock{lk(1, -60, 87, true), lk(2, -70, 50, false)},
			func(m LocksMessage) bool { return string(ids(m)) == "\x01\x02" }},
		{"locked flag", []SeenLock{lk(1, -60, 87, false), lk(2, -70, 50, false)},
			func(m LocksMessage) bool { return len(m.Locks) == 2 && !m.Locks[0].Locked }},
		{"battery", []SeenLock{lk(1, -60, 86, false), lk(2, -70, 50, false)},
			func(m LocksMessage) bool { return len(m.Locks) == 2 && m.Locks[0].Battery == 86 }},
		{"a lock disappears", []SeenLock{lk(2, -70, 50, false)},
			func(m LocksMessage) bool { return string(ids(m)) == "\x02" }},
		{"another takes its place", []SeenLock{lk(3, -70, 50, false)},
			func(m LocksMessage) bool { return string(ids(m)) == "\x03" }},
	}
	for i, s := range steps {
		e.p.Update(s.locks)
		ms := e.waitMsg(t, s.name, s.check)
		if len(ms) != i+1 {
			t.Fatalf("%s: %d publications, want %d", s.name, len(ms), i+1)
		}
	}
}

// TestAttackImpostorEntryInPresence: a device advertising a lock's ID
// from another address, louder, more recently and with another battery,
// never replaces the lock's verified entry in the snapshot; with only the
// impostor in range its entry is published, marked unverified, and the
// real lock's return is published at once (verified changed).
func TestAttackImpostorEntryInPresence(t *testing.T) {
	e := newPresenceEnv(t, nil)
	real := lk(1, -80, 87, true)
	real.Verified = true
	imp := lk(1, -30, 5, false)
	imp.Address, imp.LastSeen = "A0:00:00:00:00:01", presenceT0
	for _, order := range [][]SeenLock{{real, imp}, {imp, real}} {
		s := newSnapshot(order, 10)
		if len(s.locks) != 1 || s.locks[0] != real {
			t.Fatalf("snapshot of %+v: %+v, want only the verified entry", order, s.locks)
		}
	}
	e.p.Update([]SeenLock{imp, real})
	e.waitMsg(t, "the verified entry", func(m LocksMessage) bool {
		return len(m.Locks) == 1 && m.Locks[0].Verified && m.Locks[0].Address == real.Address && m.Locks[0].Battery == 87
	})
	e.p.Update([]SeenLock{imp})
	e.waitMsg(t, "the impostor's entry, unverified", func(m LocksMessage) bool {
		return len(m.Locks) == 1 && !m.Locks[0].Verified && m.Locks[0].Address == imp.Address
	})
	// The same battery and flag as the impostor's: verified alone is a change.
	back := real
	back.Battery, back.Locked = imp.Battery, imp.Locked
	e.p.Update([]SeenLock{imp, back})
	e.waitMsg(t, "the verified entry again", func(m LocksMessage) bool {
		return len(m.Locks) == 1 && m.Locks[0].Verified && m.Locks[0].Address == real.Address
	})
}

func TestPresenceBurstCoalesced(t *testing.T) {
	const interval = time.Second
	e := newPresenceEnv(t, func(o *PresenceOptions) { o.MinInterval = interval })
	var latest []SeenLock
	for i := range 100 {
		// Every one a change: a new battery, a lock more or less.
		latest = []SeenLock{lk(1, -60, i, i%2 == 0)}
		if i%3 == 0 {
			latest = append(latest, lk(2, -80, 100-i, true))
		}
		e.p.Update(latest)
	}
	ms := e.waitMsg(t, "the latest snapshot", func(m LocksMessage) bool {
		return len(m.Locks) == 2 && m.Locks[0].Battery == 99 && !m.Locks[0].Locked && m.Locks[1].Battery == 1
	})
	if len(ms) > 2 {
		t.Fatalf("%d publications for a burst within MinInterval, want at most 2", len(ms))
	}

	// A burst just after a publication: one more, after MinInterval.
	n := len(ms)
	for i := range 100 {
		latest = []SeenLock{lk(3, -60, i, i%2 == 0)}
		e.p.Update(latest)
	}
	ms = e.waitMsg(t, "the latest snapshot", func(m LocksMessage) bool {
		return string(ids(m)) == "\x03" && m.Locks[0].Battery == 99
	})
	if len(ms) != n+1 {
		t.Fatalf("%d publications for a burst within MinInterval after one, want 1", len(ms)-n)
	}
	time.Sleep(interval + interval/2) // nothing more to publish
	if got := e.pub.Attempts(); got != len(ms) {
		t.Fatalf("%d publications after the latest, want %d", got, len(ms))
	}
}

// TestPresenceCoalescedDuringPublication: what arrives while a
// publication is in flight is published once after it, the latest.
func TestPresenceCoalescedDuringPublication(t *testing.T) {
	e := newPresenceEnv(t, nil)
	e.pub.Block()
	e.p.Update([]SeenLock{lk(1, -60, 0, true)})
	waitFor(t, "the first attempt", func() bool { return e.pub.Attempts() == 1 })
	for i := range 100 {
		e.p.Update([]SeenLock{lk(1, -60, i+1, true)})
	}
	e.pub.Unblock()
	ms := e.waitMsg(t, "the latest snapshot", func(m LocksMessage) bool { return m.Locks[0].Battery == 100 })
	if len(ms) != 2 || ms[0].Locks[0].Battery != 0 {
		t.Fatalf("published %+v, want the first then the latest", ms)
	}
}

func TestPresenceFailureRepublishesLatest(t *testing.T) {
	e := newPresenceEnv(t, nil)
	e.pub.Fail(true)
	e.p.Update([]SeenLock{lk(1, -60, 87, true)})
	waitFor(t, "a retry", func() bool { return e.pub.Attempts() >= 2 })
	e.p.Update([]SeenLock{lk(1, -60, 87, false), lk(2, -60, 50, true)})
	e.pub.Fail(false)
	ms := e.waitMsg(t, "a publication", func(LocksMessage) bool { return true })
	if len(ms) != 1 || string(ids(ms[0])) != "\x01\x02" || ms[0].Locks[0].Locked {
		t.Fatalf("published %+v, want only the latest snapshot", ms)
	}
	if f := e.p.failures.Load(); f < 2 {
		t.Fatalf("%d failures counted", f)
	}

	// Later failures are retried the same way.
	e.pub.FailNext(1)
	e.p.Update([]SeenLock{lk(2, -60, 50, true)})
	e.waitMsg(t, "the retried publication", func(m LocksMessage) bool { return string(ids(m)) == "\x02" })
}

func TestPresenceMaxLocks(t *testing.T) {
	e := newPresenceEnv(t, func(o *PresenceOptions) { o.MaxLocks = 3 })
	dup := lk(4, -30, 10, true) // same lock, seen earlier: dropped
	dup.LastSeen = presenceT0.Add(-time.Hour)
	e.p.Update([]SeenLock{lk(1, -90, 1, true), lk(2, 0, 2, true), lk(3, -50, 3, true), lk(4, -70, 4, true),
		lk(5, -40, 5, true), lk(6, -80, 6, true), dup})
	ms := e.waitMsg(t, "the snapshot", func(LocksMessage) bool { return true })
	m := ms[0]
	// The strongest: 5 (-40), 3 (-50), 4 (-70; its -30 entry is older);
	// 2's unknown RSSI is the weakest. Sorted by lock ID.
	if string(ids(m)) != "\x03\x04\x05" || !m.Truncated || m.Locks[1].Battery != 4 {
		t.Fatalf("truncated snapshot %+v", m)
	}
	// Back under the limit: truncated is cleared.
	e.p.Update([]SeenLock{lk(3, -50, 3, true), lk(4, -70, 4, true), lk(5, -40, 5, true)})
	m = e.waitMsg(t, "untruncated", func(m LocksMessage) bool { return !m.Truncated })[1]
	if string(ids(m)) != "\x03\x04\x05" {
		t.Fatalf("snapshot %+v", m)
	}
}

func TestPresenceCloseWaitsGoroutinesFlat(t *testing.T) {
	if n := presenceGoroutines(); n != 0 {
		t.Fatalf("%d presence goroutines before the test", n)
	}
	tp, _ := NewTopics("", "gw-dock-7")
	for range 3 {
		pub := &operatortest.Publisher{}
		p, err := NewPresence(PresenceOptions{Publisher: pub, Topics: tp, MinInterval: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := p.Start(context.Background()); !errors.Is(err, ErrStarted) {
			t.Fatalf("second Start: %v", err)
		}
		pub.Block()
		p.Update([]SeenLock{lk(1, -60, 87, true)})
		waitFor(t, "a blocked publication", func() bool { return pub.Attempts() == 1 })
		p.Close() // abandons it
		p.Update([]SeenLock{lk(2, -60, 87, true)})
		pub.Unblock()
		time.Sleep(10 * time.Millisecond)
		if n := pub.Attempts(); n != 1 || len(pub.Messages("")) != 0 {
			t.Fatalf("after Close: %d attempts, %d published", n, len(pub.Messages("")))
		}
		p.Close() // idempotent
		if err := p.Start(context.Background()); !errors.Is(err, ErrStarted) {
			t.Fatalf("Start after Close: %v", err)
		}
	}
	// Also stopped by its context.
	p, _ := NewPresence(PresenceOptions{Publisher: &operatortest.Publisher{}, Topics: tp})
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	p.Close()
	deadline := time.Now().Add(10 * time.Second)
	for presenceGoroutines() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := presenceGoroutines(); n != 0 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d presence goroutines left after Close:\n%s", n, buf[:runtime.Stack(buf, true)])
	}
}

func presenceGoroutines() int {
	buf := make([]byte, 1<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "operator.(*Presence)") {
			n++
		}
	}
	return n
}

func TestPresenceMetrics(t *testing.T) {
	e := newPresenceEnv(t, nil)
	e.pub.FailNext(1)
	e.p.Update([]SeenLock{lk(1, -60, 87, true), lk(2, -60, 87, true)})
	waitFor(t, "the publication", func() bool { return len(e.pub.Messages("")) == 1 })
	problems, err := testutil.CollectAndLint(e.p)
	if err != nil || len(problems) != 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
	const want = `
# HELP gatewayd_presence_locks Locks in the gateway's latest presence snapshot (the locks it hears, at most MaxLocks); the locks topic carries it within the minimum interval.
# TYPE gatewayd_presence_locks gauge
gatewayd_presence_locks 2
# HELP gatewayd_presence_publish_failures_total Failed publications of the presence snapshot; each is retried, with the latest snapshot, after a jittered backoff.
# TYPE gatewayd_presence_publish_failures_total counter
gatewayd_presence_publish_failures_total 1
# HELP gatewayd_presence_publishes_total Presence snapshots published on the locks topic and acknowledged by the broker (refreshes included).
# TYPE gatewayd_presence_publishes_total counter
gatewayd_presence_publishes_total 1
`
	if err := testutil.CollectAndCompare(e.p, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestNewPresenceOptions(t *testing.T) {
	tp, _ := NewTopics("", "gw-dock-7")
	pub := &operatortest.Publisher{}
	for name, o := range map[string]PresenceOptions{
		"no publisher":     {Topics: tp},
		"no topics":        {Publisher: pub},
		"negative min":     {Publisher: pub, Topics: tp, MinInterval: -1},
		"negative refresh": {Publisher: pub, Topics: tp, Refresh: -1},
		"negative timeout": {Publisher: pub, Topics: tp, PublishTimeout: -1},
		"negative max":     {Publisher: pub, Topics: tp, MaxLocks: -1},
	} {
		if _, err := NewPresence(o); !errors.Is(err, ErrOptions) {
			t.Errorf("%s: %v, want ErrOptions", name, err)
		}
	}
	p, err := NewPresence(PresenceOptions{Publisher: pub, Topics: tp})
	if err != nil {
		t.Fatal(err)
	}
	if p.opts.MinInterval != 5*time.Second || p.opts.Refresh != 5*time.Minute || p.opts.MaxLocks != 256 ||
		p.opts.PublishTimeout != 30*time.Second || p.opts.Now == nil {
		t.Fatalf("defaults %+v", p.opts)
	}
	for n := range 40 {
		if d := p.backoff(n); d < 2500*time.Millisecond || d > 30*time.Second {
			t.Fatalf("backoff(%d) = %v", n, d)
		}
	}
}

// TestPresenceRepublish: after Republish (the daemon calls it on every
// reconnect) the unchanged snapshot is published again, once, no sooner
// than MinInterval: a clustered broker may have acknowledged the last one
// without storing it (docs/scaling.md). Refresh is an hour here, so
// nothing else publishes it.
func TestPresenceRepublish(t *testing.T) {
	e := newPresenceEnv(t, func(o *PresenceOptions) { o.MinInterval = 50 * time.Millisecond })
	e.p.Update([]SeenLock{lk(1, -60, 87, true)})
	e.waitMsg(t, "the first snapshot", func(LocksMessage) bool { return true })
	asked := time.Now()
	e.p.Republish()
	e.waitMsg(t, "the republished snapshot", func(LocksMessage) bool { return len(e.pub.Messages("")) == 2 })
	if d := time.Since(asked); d < 50*time.Millisecond {
		t.Fatalf("republished after %v, before MinInterval", d)
	}
	if ms := e.msgs(t); fmt.Sprint(ids(ms[1])) != fmt.Sprint(ids(ms[0])) {
		t.Fatalf("republished %v, want %v", ids(ms[1]), ids(ms[0]))
	}
	time.Sleep(150 * time.Millisecond)
	if n := e.pub.Attempts(); n != 2 {
		t.Fatalf("%d publications: Republish published more than once", n)
	}
}
