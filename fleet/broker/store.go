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
	snaps map[string]*packets.PublishPacket // outbound publishes as Put, for Get
}

func newTrackStore() *trackStore {
	return &trackStore{Store: mqtt.NewOrderedMemoryStore(), live: make(map[*packets.PublishPacket]*pubEntry),
		snaps: make(map[string]*packets.PublishPacket)}
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
		// paho stores a publish before it hands it to its writer, which
		// then changes it as it encodes it (RemainingLength): copied now,
		// the packet is read by nobody else.
		snap := *p
		t.snaps[key] = &snap
		if t.claim != nil {
			t.live[p] = t.claim
			t.claim.key = key
			t.claim, t.put = nil, true
		}
		t.mu.Unlock()
	}
	t.Store.Put(key, m)
}

// Get returns a copy of an outbound publish as it was Put, not the
// packet paho's writer holds. paho reads the store only to resend after a
// (re)connect (resume) and, in doing so, sets the DUP flag on the packet
// it got, while its writer may still be encoding the very same packet
// (which changes it): data races in paho v1.5.1
// (eclipse-paho/paho.mqtt.golang#703) that CI's -race runs hit in
// TestBrokerRestart and TestCloseStopsEverything. With a copy taken at
// Put, before paho hands the packet to its writer, nobody shares it. The
// copies share the payload, which nobody writes.
func (t *trackStore) Get(key string) packets.ControlPacket {
	if isOutboundKey(key) {
		t.mu.Lock()
		snap := t.snaps[key]
		t.mu.Unlock()
		if snap != nil {
			cp := *snap
			return &cp
		}
	}
	return t.Store.Get(key)
}

// Reset empties the store.
func (t *trackStore) Reset() {
	t.mu.Lock()
	clear(t.snaps)
	t.mu.Unlock()
	t.Store.Reset()
}

func (t *trackStore) Del(key string) {
	if isOutboundKey(key) {
		t.mu.Lock()
		delete(t.snaps, key)
		t.mu.Unlock()
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
				delete(t.snaps, e.key)
				t.Store.Del(e.key)
			}
			return
		}
	}
}
