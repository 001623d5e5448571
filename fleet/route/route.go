// Package route is a backend's routing table for a fleet of gateways: it
// reads the gateways' retained status (P/gw/G/status) and lock presence
// (P/gw/G/locks) messages, as a backend subscribed to P/gw/+/status and
// P/gw/+/locks receives them, and answers which gateway to send a lock's
// command to (docs/mqtt.md, "A lock heard by several gateways"). When a
// lock roams, the next presence messages move its route; Wait lets a
// sender wait for a route other than the one that failed. Sending the same
// signed command to a second gateway is safe: the lock moves its bolt at
// most once per command ID (docs/scaling.md shows it under roaming).
//
// It carries no MQTT client: the caller feeds it messages (Handle) from
// its own subscription. It imports fleet/operator (messages, topics) and
// bonds (lock IDs), nothing of paho or BlueZ.
package route

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/fleet/operator"
)

// RSSIMargin is how many dB two gateways' signals may differ by and still
// count as equal: then the fresher last_seen wins.
const RSSIMargin = 3

// Table is the routing table. The zero value is not usable: use New.
type Table struct {
	prefix string

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	gws     map[string]*gateway
}

type gateway struct {
	online bool // the last status said online (unknown counts as online)
	seen   bool // a status was received
	locks  map[bonds.LockID]operator.SeenLock
	at     time.Time // the presence message's updated_at
}

// New returns an empty table for gateways under prefix ("" is
// operator.DefaultPrefix).
func New(prefix string) *Table {
	if prefix == "" {
		prefix = operator.DefaultPrefix
	}
	return &Table{prefix: prefix, gws: map[string]*gateway{}, changed: make(chan struct{})}
}

// Filters are the topic filters a backend subscribes to (QoS 1) to feed
// the table: every gateway's status and lock presence.
func (t *Table) Filters() []string {
	return []string{t.prefix + "/gw/+/status", t.prefix + "/gw/+/locks"}
}

// Handle takes one message from the subscription. An empty payload (a
// retained message cleared) forgets that part of the gateway.
func (t *Table) Handle(topic string, payload []byte) error {
	rest, ok := strings.CutPrefix(topic, t.prefix+"/gw/")
	if !ok {
		return fmt.Errorf("%w: %q", ErrTopic, topic)
	}
	gw, kind, ok := strings.Cut(rest, "/")
	if !ok || operator.ValidGatewayID(gw) != nil || (kind != "status" && kind != "locks") {
		return fmt.Errorf("%w: %q", ErrTopic, topic)
	}
	switch kind {
	case "status":
		var st struct {
			State string `json:"state"`
		}
		if len(payload) > 0 {
			if err := json.Unmarshal(payload, &st); err != nil {
				return fmt.Errorf("%w: status of %s: %w", ErrPayload, gw, err)
			}
		}
		t.update(gw, func(g *gateway) {
			g.seen = len(payload) > 0
			g.online = len(payload) == 0 || st.State != "offline"
		})
	case "locks":
		var m operator.LocksMessage
		if len(payload) > 0 {
			if err := json.Unmarshal(payload, &m); err != nil {
				return fmt.Errorf("%w: locks of %s: %w", ErrPayload, gw, err)
			}
			if m.GatewayID != gw {
				return fmt.Errorf("%w: locks of %s name gateway %q", ErrPayload, gw, m.GatewayID)
			}
		}
		t.update(gw, func(g *gateway) {
			g.locks = make(map[bonds.LockID]operator.SeenLock, len(m.Locks))
			for _, l := range m.Locks {
				g.locks[l.LockID] = l
			}
			g.at = m.UpdatedAt
		})
	}
	return nil
}

func (t *Table) update(id string, f func(*gateway)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.gws[id]
	if g == nil {
		g = &gateway{online: true}
		t.gws[id] = g
	}
	f(g)
	close(t.changed)
	t.changed = make(chan struct{})
}

// Route returns the gateway to send lock's commands to: among the online
// gateways whose presence shows it, a verified entry before an unverified
// one (an unverified one may be an impostor's advertisement), then the
// strongest signal, then (within RSSIMargin dB, or unknown) the freshest
// last_seen, then the smallest gateway ID (so the answer is stable).
// ErrNoRoute when none.
func (t *Table) Route(lock bonds.LockID) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.routeLocked(lock, nil)
}

// Candidates returns every online gateway that hears lock, best first.
func (t *Table) Candidates(lock bonds.LockID) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	skip := map[string]bool{}
	for {
		gw, err := t.routeLocked(lock, skip)
		if err != nil {
			return out
		}
		out = append(out, gw)
		skip[gw] = true
	}
}

func (t *Table) routeLocked(lock bonds.LockID, skip map[string]bool) (string, error) {
	var best string
	var bl operator.SeenLock
	for id, g := range t.gws {
		if !g.online || skip[id] {
			continue
		}
		l, ok := g.locks[lock]
		if !ok {
			continue
		}
		if best == "" || better(l, id, bl, best) {
			best, bl = id, l
		}
	}
	if best == "" {
		return "", fmt.Errorf("%w: %s", ErrNoRoute, lock)
	}
	return best, nil
}

// better reports whether entry a (gateway ga) beats entry b (gateway gb).
func better(a operator.SeenLock, ga string, b operator.SeenLock, gb string) bool {
	if a.Verified != b.Verified {
		return a.Verified
	}
	if a.RSSI != 0 && b.RSSI != 0 {
		if d := a.RSSI - b.RSSI; d > RSSIMargin || d < -RSSIMargin {
			return d > 0
		}
	}
	if !a.LastSeen.Equal(b.LastSeen) {
		return a.LastSeen.After(b.LastSeen)
	}
	return ga < gb
}

// Wait waits until the lock has a route that is not in avoid (the
// gateways already tried) and returns it: how a sender re-routes after the
// lock moved. It returns ctx's error if none appears first.
func (t *Table) Wait(ctx context.Context, lock bonds.LockID, avoid ...string) (string, error) {
	skip := map[string]bool{}
	for _, a := range avoid {
		skip[a] = true
	}
	for {
		t.mu.Lock()
		gw, err := t.routeLocked(lock, skip)
		ch := t.changed
		t.mu.Unlock()
		if err == nil {
			return gw, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("route %s: %w", lock, ctx.Err())
		case <-ch:
		}
	}
}

// Where returns the gateways whose presence shows lock now, online or
// not, in no particular order.
func (t *Table) Where(lock bonds.LockID) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for id, g := range t.gws {
		if _, ok := g.locks[lock]; ok {
			out = append(out, id)
		}
	}
	return out
}
