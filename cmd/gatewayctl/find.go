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
// and status (P/gw/+/status) and returns the gateway to send lock's
// commands to: of those that hear it and are not offline, one where the
// lock proved its identity from the address heard (verified) first, then
// an online one, then the strongest signal, then the latest sighting. It
// says on w which one it chose and which others hear the lock. It waits
// for the retained messages until none came for quiet.
func findGateway(ctx context.Context, c mqtt.Client, prefix string, lock bonds.LockID, quiet time.Duration, w io.Writer) (string, error) {
	if prefix == "" {
		prefix = operator.DefaultPrefix
	}
	if _, err := operator.RevocationsTopic(prefix); err != nil { // validates the prefix
		return "", fmt.Errorf("%v: %w", err, errUsage)
	}
	locksTopic, statusTopic := prefix+"/gw/+/locks", prefix+"/gw/+/status"
	var (
		mu       sync.Mutex
		presence = map[string]operator.LocksMessage{}
		status   = map[string]string{}
	)
	arrived := make(chan struct{}, 1)
	h := func(_ mqtt.Client, m mqtt.Message) {
		// P/gw/G/locks: G is the level after the prefix's and "gw"; the
		// broker's ACL lets only gateway G publish there.
		rest, ok := strings.CutPrefix(m.Topic(), prefix+"/gw/")
		if !ok {
			return
		}
		gw, kind, ok := strings.Cut(rest, "/")
		if !ok || operator.ValidGatewayID(gw) != nil {
			return
		}
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
	if err := wait(ctx, c.SubscribeMultiple(map[string]byte{locksTopic: 1, statusTopic: 1}, h)); err != nil {
		return "", fmt.Errorf("subscribe to %s: %w", locksTopic, err)
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
	_ = wait(ctx, c.Unsubscribe(locksTopic, statusTopic))

	mu.Lock()
	var all []heard
	for gw, lm := range presence {
		for _, sl := range lm.Locks {
			if sl.LockID == lock {
				all = append(all, heard{gateway: gw, lock: sl, state: status[gw]})
			}
		}
	}
	gateways := len(presence)
	mu.Unlock()
	var usable, offline []heard
	for _, h := range all {
		if h.state == "offline" {
			offline = append(offline, h)
		} else {
			usable = append(usable, h)
		}
	}
	if len(usable) == 0 {
		if len(offline) > 0 {
			return "", fmt.Errorf("lock %s was last heard only by offline gateways: %s; pass -gateway to send it there anyway", lock, join(offline))
		}
		return "", fmt.Errorf("no gateway reports hearing lock %s (%d gateways' presence read on %s); pass -gateway", lock, gateways, locksTopic)
	}
	slices.SortFunc(usable, func(a, b heard) int {
		return cmp.Or(
			-cmpBool(a.lock.Verified, b.lock.Verified),
			-cmpBool(a.state == "online", b.state == "online"),
			-cmp.Compare(rssi(a), rssi(b)),
			-a.lock.LastSeen.Compare(b.lock.LastSeen),
			cmp.Compare(a.gateway, b.gateway))
	})
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

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// rssi orders signal strengths, unknown (0) below any measured one.
func rssi(h heard) int {
	if h.lock.RSSI == 0 {
		return -1 << 16
	}
	return h.lock.RSSI
}
