package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/fleet/operator"
	"github.com/gatewayd/gatewayd/fleet/route"
)

// DefaultFindWait is how long send waits, without -gateway, for another
// retained presence or status message before it picks a gateway: MQTT
// marks no end of the retained messages, which a broker sends at once
// after the subscription.
const DefaultFindWait = time.Second

// heard is a gateway that reports hearing a lock in its retained lock
// presence (docs/mqtt.md, "Lock presence").
type heard struct {
	gateway string
	lock    operator.SeenLock
	state   string // the gateway's retained status: online, offline, or "" if none
}

func (h heard) String() string {
	v := "unverified"
	if h.lock.Verified {
		v = "verified"
	}
	s := fmt.Sprintf("%s (%s", h.gateway, v)
	if h.lock.RSSI != 0 {
		s += fmt.Sprintf(", rssi %d dBm", h.lock.RSSI)
	}
	if !h.lock.LastSeen.IsZero() {
		s += ", last seen " + h.lock.LastSeen.UTC().Format(time.RFC3339)
	}
	if h.state != "online" {
		s += ", status " + cmp.Or(h.state, "unknown")
	}
	return s + ")"
}

// findGateway reads the gateways' retained lock presence (P/gw/+/locks)
// and status (P/gw/+/status) into a routing table (fleet/route, the
// rules of docs/mqtt.md a backend follows) and returns the gateway to send
// lock's commands to: of those that hear it and are not offline, one
// where the lock proved its identity from the address heard (verified)
// first, then the strongest signal, then the latest sighting. It says on
// w which one it chose and which others hear the lock. It waits for the
// retained messages until none came for quiet.
func findGateway(ctx context.Context, c mqtt.Client, prefix string, lock bonds.LockID, quiet time.Duration, w io.Writer) (string, error) {
	if prefix == "" {
		prefix = operator.DefaultPrefix
	}
	if _, err := operator.RevocationsTopic(prefix); err != nil { // validates the prefix
		return "", fmt.Errorf("%v: %w", err, errUsage)
	}
	table := route.New(prefix)
	var (
		mu       sync.Mutex
		presence = map[string]operator.LocksMessage{} // for what is said on w
		status   = map[string]string{}
	)
	arrived := make(chan struct{}, 1)
	h := func(_ mqtt.Client, m mqtt.Message) {
		if table.Handle(m.Topic(), m.Payload()) != nil {
			return // not a gateway's status or presence, or malformed
		}
		// P/gw/G/...: the broker's ACL lets only gateway G publish there.
		gw, kind, _ := strings.Cut(strings.TrimPrefix(m.Topic(), prefix+"/gw/"), "/")
		mu.Lock()
		switch kind {
		case "locks":
			var lm operator.LocksMessage
			if json.Unmarshal(m.Payload(), &lm) == nil {
				presence[gw] = lm
			}
		case "status":
			var st struct {
				State string `json:"state"`
			}
			if json.Unmarshal(m.Payload(), &st) == nil {
				status[gw] = st.State
			}
		}
		mu.Unlock()
		select {
		case arrived <- struct{}{}:
		default:
		}
	}
	filters := map[string]byte{}
	for _, f := range table.Filters() {
		filters[f] = 1
	}
	if err := wait(ctx, c.SubscribeMultiple(filters, h)); err != nil {
		return "", fmt.Errorf("subscribe to %s: %w", strings.Join(table.Filters(), ", "), err)
	}
	t := time.NewTimer(quiet)
	defer t.Stop()
	for done := false; !done; {
		select {
		case <-arrived:
			t.Reset(quiet)
		case <-t.C:
			done = true
		case <-ctx.Done():
			return "", fmt.Errorf("looking for the gateway that hears lock %s: %w", lock, ctx.Err())
		}
	}
	_ = wait(ctx, c.Unsubscribe(table.Filters()...))

	mu.Lock()
	defer mu.Unlock()
	entry := func(gw string) heard {
		h := heard{gateway: gw, state: status[gw]}
		for _, sl := range presence[gw].Locks {
			if sl.LockID == lock {
				h.lock = sl
			}
		}
		return h
	}
	var usable, offline []heard
	chosen := map[string]bool{}
	for _, gw := range table.Candidates(lock) {
		usable = append(usable, entry(gw))
		chosen[gw] = true
	}
	where := table.Where(lock)
	slices.Sort(where)
	for _, gw := range where {
		if !chosen[gw] {
			offline = append(offline, entry(gw))
		}
	}
	if len(usable) == 0 {
		if len(offline) > 0 {
			return "", fmt.Errorf("lock %s was last heard only by offline gateways: %s; pass -gateway to send it there anyway", lock, join(offline))
		}
		return "", fmt.Errorf("no gateway reports hearing lock %s (%d gateways' presence read on %s/gw/+/locks); pass -gateway", lock, len(presence), prefix)
	}
	msg := fmt.Sprintf("lock %s is heard by gateway %s", lock, usable[0])
	if len(usable) > 1 || len(offline) > 0 {
		msg += "; also by " + join(append(usable[1:], offline...))
	}
	fmt.Fprintln(w, msg)
	return usable[0].gateway, nil
}

func join(hs []heard) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.String()
	}
	return strings.Join(s, ", ")
}
