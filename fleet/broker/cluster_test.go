package broker

import (
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatewayd/gatewayd/internal/natstest"
)

// TestClusterNodeKilled: the session on a 3-node nats-server cluster
// (docs/scaling.md), given every node's URL. Its node is SIGKILLed while
// commands flow: it reconnects to another node by itself, every command
// the broker acknowledged reaches OnMessage, and its retained online
// status is readable from another node afterwards. Unlike mosquitto,
// nats-server 2.9 does not keep the order across the failover: the
// message the gateway had not acked before the kill, and any that the
// broker pushed towards the dead node, come again only when their
// ack_wait (5 s here) runs out, after newer ones (docs/scaling.md says
// what that means for commands). So this test checks that none is lost,
// not their order.
func TestClusterNodeKilled(t *testing.T) {
	c := natstest.Start(t, natstest.Options{AckWait: 5 * time.Second})
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	r := newRecorder()
	s, err := New(Options{
		Brokers: c.URLs(), ClientID: "gatewayd-cluster", Subscribe: []string{"gw/1/cmd"}, OnMessage: r.onMessage,
		StatusTopic: "gw/1/status", MaxReconnectInterval: time.Second, ConnectTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitConnected(ctxT(t)); err != nil {
		t.Fatal(err)
	}

	// The operator is on n3, which stays up.
	opts := mqtt.NewClientOptions().AddBroker(n3.URL()).SetClientID("op-cluster").SetCleanSession(true).
		SetConnectTimeout(10 * time.Second)
	op := mqtt.NewClient(opts)
	if tok := op.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("operator connect: %v", tok.Error())
	}
	t.Cleanup(func() { op.Disconnect(100) })
	send := func(i int) {
		t.Helper()
		tok := op.Publish("gw/1/cmd", 1, false, fmt.Sprint("cmd-", i))
		if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	// 0..4 acked as they arrive; 5 arrives and is not acked when n1 dies.
	for i := range 6 {
		send(i)
		m := r.next(t)
		if want := fmt.Sprint("cmd-", i); string(m.Payload) != want {
			t.Fatalf("before the kill: got %q, want %q", m.Payload, want)
		}
		if i < 5 {
			m.Ack()
		}
	}
	connects := testutil.ToFloat64(s.m.connects)
	n1.Kill()
	for i := 6; i < 10; i++ {
		send(i) // while the gateway is between nodes
	}
	// 5 (never acked) and 6..9, each at least once, in some order.
	seen := map[string]bool{}
	var order []string
	for len(seen) < 5 {
		m := r.next(t)
		p := string(m.Payload)
		order = append(order, p)
		if p < "cmd-5" || p > "cmd-9" {
			t.Fatalf("after the kill: unexpected %q (order so far %v)", p, order)
		}
		seen[p] = true
		m.Ack()
	}
	t.Logf("received after the kill: %v", order)
	if got := testutil.ToFloat64(s.m.connects); got <= connects {
		t.Fatalf("connects_total %v → %v: no reconnect", connects, got)
	}
	if err := s.WaitConnected(ctxT(t)); err != nil {
		t.Fatal(err)
	}

	// The retained status, read from n2.
	got := make(chan mqtt.Message, 10)
	ro := mqtt.NewClientOptions().AddBroker(n2.URL()).SetClientID("reader-cluster").SetCleanSession(true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { got <- m })
	rc := mqtt.NewClient(ro)
	if tok := rc.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("reader connect: %v", tok.Error())
	}
	t.Cleanup(func() { rc.Disconnect(100) })
	for deadline := time.Now().Add(time.Minute); ; {
		tok := rc.Subscribe("gw/1/status", 1, nil)
		if tok.WaitTimeout(time.Minute) && tok.Error() == nil && tok.(*mqtt.SubscribeToken).Result()["gw/1/status"] != 0x80 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("reader: subscription refused for a minute")
		}
		time.Sleep(200 * time.Millisecond)
	}
	select {
	case m := <-got:
		if string(m.Payload()) != "online" || !m.Retained() {
			t.Fatalf("status = %q retained=%v", m.Payload(), m.Retained())
		}
	case <-time.After(wait):
		t.Fatal("no retained status after the node died")
	}
}
