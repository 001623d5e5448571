package broker

import (
	"strings"
	"sync"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// pubEntry is one Publish waiting for its PUBACK.
type pubEntry struct {
	acked chan struct{} // closed when the broker's PUBACK removed it from the store
	key   string        // its key in the store, "o.<id>", once stored
}

// trackStore wraps paho's ordered memory store (outbound QoS 1 publishes
// are resent in the order they were stored) to learn when the broker really
// acknowledged a publish.
//
// paho's PublishToken is not enough: when paho resends a stored publish
// after a reconnect it claims the message ID again with a new token and, in
// doing so, completes the original token without error, before the broker
// has acknowledged the resent message (paho v1.5.1 messageIds.claimID). The
// store, however, is changed only by the PUBACK: paho deletes the outbound
// key "o.<id>" when the PUBACK arrives, before it completes any token.
//
// Publish holds Session.pubMu around paho's Publish, which puts the packet
// into the store synchronously; the one outbound publish Put in that window
// is ours (resends Get packets, they do not Put them).
type trackStore struct {
	mqtt.Store

	mu    sync.Mutex
	claim *pubEntry
	put   bool
	live  map[*packets.PublishPacket]*pubEntry
}

func newTrackStore() *trackStore {
	return &trackStore{Store: mqtt.NewOrderedMemoryStore(), live: make(map[*packets.PublishPacket]*pubEntry)}
}

func isOutboundKey(key string) bool { return strings.HasPrefix(key, "o.") }

// expect announces that the next outbound publish Put belongs to e.
func (t *trackStore) expect(e *pubEntry) {
	t.mu.Lock()
	t.claim, t.put = e, false
	t.mu.Unlock()
}

// done ends the window opened by expect and reports whether e was stored.
func (t *trackStore) done() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	put := t.put
	t.claim, t.put = nil, false
	return put
}

func (t *trackStore) Put(key string, m packets.ControlPacket) {
	if p, ok := m.(*packets.PublishPacket); ok && isOutboundKey(key) {
		t.mu.Lock()
		if t.claim != nil {
			t.live[p] = t.claim
			t.claim.key = key
			t.claim, t.put = nil, true
		}
		t.mu.Unlock()
	}
	t.Store.Put(key, m)
}

// Get returns a copy of a stored outbound publish, not the stored packet.
// paho reads the store only to resend after a reconnect (resume) and, in
// doing so, sets the DUP flag on the packet it got, while its writer may
// still be sending the very same packet from before the connection was
// lost: a data race in paho v1.5.1 (eclipse-paho/paho.mqtt.golang#703),
// which CI's -race runs hit in TestBrokerRestart. With a copy, DUP is set
// on the resent packet only. The copy shares the payload, which nobody
// writes.
func (t *trackStore) Get(key string) packets.ControlPacket {
	m := t.Store.Get(key)
	if p, ok := m.(*packets.PublishPacket); ok && p != nil && isOutboundKey(key) {
		cp := *p
		return &cp
	}
	return m
}

func (t *trackStore) Del(key string) {
	if isOutboundKey(key) {
		if p, ok := t.Store.Get(key).(*packets.PublishPacket); ok {
			t.mu.Lock()
			if e := t.live[p]; e != nil {
				close(e.acked)
				delete(t.live, p)
			}
			t.mu.Unlock()
		}
	}
	t.Store.Del(key)
}

// withdraw removes e's packet (its Publish gave up) from the store, so paho
// does not resend it after a reconnect: the caller retries with a copy of
// its own, and a long outage does not pile up copies. A packet already on
// the wire may still reach the broker. paho keeps the message ID claimed
// until the PUBACK or Close (one of 65535).
func (t *trackStore) withdraw(e *pubEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for p, x := range t.live {
		if x == e {
			delete(t.live, p)
			if t.Store.Get(e.key) == packets.ControlPacket(p) {
				t.Store.Del(e.key)
			}
			return
		}
	}
}
