package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// Generous: nothing here fails because the machine is slow.
const wait = 20 * time.Second

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// recorder is a consumer: OnMessage puts messages on a channel.
type recorder struct{ ch chan *Message }

func newRecorder() *recorder             { return &recorder{ch: make(chan *Message, 100)} }
func (r *recorder) onMessage(m *Message) { r.ch <- m }

func (r *recorder) next(t *testing.T) *Message {
	t.Helper()
	select {
	case m := <-r.ch:
		return m
	case <-time.After(wait):
		t.Fatal("no message")
		return nil
	}
}

// session starts a gateway session on b with test-friendly intervals.
func session(t *testing.T, b *mosquittotest.Broker, clientID string, r *recorder, mod func(*Options)) *Session {
	t.Helper()
	o := Options{
		Brokers:              []string{b.URL()},
		ClientID:             clientID,
		Subscribe:            []string{"gw/1/cmd/#"},
		OnMessage:            r.onMessage,
		MaxReconnectInterval: time.Second,
		ConnectTimeout:       5 * time.Second,
	}
	if mod != nil {
		mod(&o)
	}
	s, err := New(o)
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
	return s
}

// operator is a second client, as the fleet's operator side would be.
type operator struct {
	c  mqtt.Client
	ch chan mqtt.Message
}

func newOperator(t *testing.T, b *mosquittotest.Broker, id string, persistent bool) *operator {
	t.Helper()
	op := &operator{ch: make(chan mqtt.Message, 100)}
	o := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID(id).SetCleanSession(!persistent).
		SetProtocolVersion(4).SetMaxReconnectInterval(time.Second).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { op.ch <- m })
	op.c = mqtt.NewClient(o)
	tok := op.c.Connect()
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("operator connect: %v", tok.Error())
	}
	t.Cleanup(func() { op.c.Disconnect(100) })
	return op
}

func (op *operator) publish(t *testing.T, topic, payload string, retain bool) {
	t.Helper()
	op.publishQoS(t, 1, topic, payload, retain)
}

func (op *operator) publishQoS(t *testing.T, qos byte, topic, payload string, retain bool) {
	t.Helper()
	tok := op.c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("operator publish: %v", tok.Error())
	}
}

func (op *operator) subscribe(t *testing.T, filter string) {
	t.Helper()
	tok := op.c.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("operator subscribe: %v", tok.Error())
	}
}

func (op *operator) next(t *testing.T) mqtt.Message {
	t.Helper()
	select {
	case m := <-op.ch:
		return m
	case <-time.After(wait):
		t.Fatal("operator: no message")
		return nil
	}
}

// TestPublishSubscribeRoundTrip: a command reaches OnMessage, the result
// published from it reaches the operator, and Publish has counted the
// broker's PUBACK by the time it returns.
func TestPublishSubscribeRoundTrip(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	r := newRecorder()
	s := session(t, b, "gatewayd-roundtrip", r, nil)
	op := newOperator(t, b, "operator-roundtrip", false)
	op.subscribe(t, "gw/1/result")

	op.publish(t, "gw/1/cmd/unlock", "cmd-1", false)
	m := r.next(t)
	if m.Topic != "gw/1/cmd/unlock" || string(m.Payload) != "cmd-1" || m.QoS != 1 || m.Duplicate || m.PacketID == 0 {
		t.Fatalf("got %+v", m)
	}
	if err := s.Publish(ctxT(t), "gw/1/result", []byte("done-1"), false); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(s.m.publishes); got != 1 {
		t.Fatalf("publishes_total = %v right after Publish returned, want 1", got)
	}
	m.Ack()
	if got := op.next(t); got.Topic() != "gw/1/result" || string(got.Payload()) != "done-1" {
		t.Fatalf("operator got %s %q", got.Topic(), got.Payload())
	}

	noDeadline := context.Background()
	if err := s.Publish(noDeadline, "gw/1/result", nil, false); !errors.Is(err, ErrNoDeadline) {
		t.Fatalf("Publish without deadline: %v", err)
	}
	for _, topic := range []string{"", "gw/+/x", "gw/#"} {
		if err := s.Publish(ctxT(t), topic, nil, false); !errors.Is(err, ErrInvalidTopic) {
			t.Fatalf("Publish(%q): %v", topic, err)
		}
	}
}

// TestUnackedCommandIsRedelivered: a command delivered but not acknowledged
// comes back, marked Duplicate, to the next session with the same client
// ID; once acknowledged it does not.
func TestUnackedCommandIsRedelivered(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	op := newOperator(t, b, "operator-redeliver", false)
	const id = "gatewayd-redeliver"

	r1 := newRecorder()
	s1 := session(t, b, id, r1, nil)
	op.publish(t, "gw/1/cmd/lock", "cmd-A", false)
	if m := r1.next(t); string(m.Payload) != "cmd-A" || m.Duplicate {
		t.Fatalf("first delivery %+v", m)
	}
	s1.Close() // not acknowledged

	r2 := newRecorder()
	s2 := session(t, b, id, r2, nil)
	m := r2.next(t)
	if string(m.Payload) != "cmd-A" || !m.Duplicate {
		t.Fatalf("redelivery: payload %q duplicate %v", m.Payload, m.Duplicate)
	}
	m.Ack()
	s2.Close()

	expectOnlyMarker(t, b, op, id)
}

// expectOnlyMarker starts a session with clientID, publishes a marker
// command and checks that the marker is the first thing it receives:
// redeliveries of unacknowledged messages come before new messages.
func expectOnlyMarker(t *testing.T, b *mosquittotest.Broker, op *operator, clientID string) {
	t.Helper()
	r := newRecorder()
	s := session(t, b, clientID, r, nil)
	op.publish(t, "gw/1/cmd/marker", "marker", false)
	if m := r.next(t); string(m.Payload) != "marker" {
		t.Fatalf("redelivered %q (duplicate %v) after it was acknowledged", m.Payload, m.Duplicate)
	}
	s.Close()
}

// TestOfflineCommandsArriveAfterReconnect: commands published while the
// gateway is away wait in its persistent session and arrive, in order,
// when it comes back.
func TestOfflineCommandsArriveAfterReconnect(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	op := newOperator(t, b, "operator-offline", false)
	const id = "gatewayd-offline"
	session(t, b, id, newRecorder(), nil).Close()

	for i := range 3 {
		op.publish(t, "gw/1/cmd/unlock", fmt.Sprint("offline-", i), false)
	}
	r := newRecorder()
	session(t, b, id, r, nil)
	for i := range 3 {
		m := r.next(t)
		if want := fmt.Sprint("offline-", i); string(m.Payload) != want {
			t.Fatalf("message %d = %q, want %q", i, m.Payload, want)
		}
		m.Ack()
	}
}

// TestBrokerRestart: the session survives a broker restart by itself; a
// Publish issued while the broker is down completes once it is back, one
// whose deadline passes first returns ErrNotAcknowledged and is withdrawn
// (not resent after the reconnect), and commands flow again.
func TestBrokerRestart(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	r := newRecorder()
	s := session(t, b, "gatewayd-restart", r, nil)
	// A persistent operator session: it sees everything published to
	// gw/1/result/# across the restart, in order.
	op := newOperator(t, b, "operator-restart", true)
	op.subscribe(t, "gw/1/result/#")

	b.Stop()
	deadline := time.Now().Add(wait)
	for s.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("session still connected after the broker stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}

	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := s.Publish(short, "gw/1/result/x", []byte("withdrawn"), false)
	if !errors.Is(err, ErrNotAcknowledged) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish with a short deadline while the broker is down: %v", err)
	}

	long := make(chan error, 1)
	go func() { long <- s.Publish(ctxT(t), "gw/1/result/x", []byte("kept"), false) }()
	select {
	case err := <-long:
		t.Fatalf("Publish returned %v while the broker was down", err)
	case <-time.After(300 * time.Millisecond):
	}

	b.Restart(t)
	if err := <-long; err != nil {
		t.Fatalf("Publish across the restart: %v", err)
	}
	if err := s.WaitConnected(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(ctxT(t), "gw/1/result/x", []byte("marker"), false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kept", "marker"} {
		if got := op.next(t); string(got.Payload()) != want {
			t.Fatalf("operator got %q, want %q (the withdrawn publish must not be resent)", got.Payload(), want)
		}
	}

	op.publish(t, "gw/1/cmd/lock", "after-restart", false)
	if m := r.next(t); string(m.Payload) != "after-restart" {
		t.Fatalf("after restart got %q", m.Payload)
	}
	if got := testutil.ToFloat64(s.m.connectionLost); got < 1 {
		t.Fatalf("connection_lost_total = %v", got)
	}
	if got := testutil.ToFloat64(s.m.takeovers); got != 0 {
		t.Fatalf("takeovers_suspected_total = %v after a broker restart, want 0", got)
	}
}

// TestOutOfOrderAcksReleaseInOrder: Ack(2) before Ack(1) sends no PUBACK:
// the broker redelivers both. Ack(2) then Ack(1) releases both, in order:
// nothing is redelivered.
func TestOutOfOrderAcksReleaseInOrder(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	op := newOperator(t, b, "operator-order", false)
	const id = "gatewayd-order"

	r1 := newRecorder()
	s1 := session(t, b, id, r1, nil)
	op.publish(t, "gw/1/cmd/a", "1", false)
	op.publish(t, "gw/1/cmd/a", "2", false)
	m1, m2 := r1.next(t), r1.next(t)
	if string(m1.Payload) != "1" || string(m2.Payload) != "2" {
		t.Fatalf("order %q %q", m1.Payload, m2.Payload)
	}
	m2.Ack()
	if got := testutil.ToFloat64(s1.m.acked); got != 0 {
		t.Fatalf("acked %v PUBACKs with the first message unacknowledged", got)
	}
	s1.Close()

	r2 := newRecorder()
	s2 := session(t, b, id, r2, nil)
	n1, n2 := r2.next(t), r2.next(t)
	if string(n1.Payload) != "1" || string(n2.Payload) != "2" || !n1.Duplicate || !n2.Duplicate {
		t.Fatalf("redelivered %q(dup %v) %q(dup %v), want both", n1.Payload, n1.Duplicate, n2.Payload, n2.Duplicate)
	}
	n2.Ack()
	n2.Ack() // idempotent
	n1.Ack()
	if got := testutil.ToFloat64(s2.m.acked); got != 2 {
		t.Fatalf("messages_acked_total = %v, want 2", got)
	}
	s2.Close()

	expectOnlyMarker(t, b, op, id)
}

// connKiller records the session's connections so a test can cut them.
type connKiller struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (k *connKiller) wrap(c net.Conn) net.Conn {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.conns = append(k.conns, c)
	return c
}

func (k *connKiller) killAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.conns {
		// Not Close: paho takes "use of closed network connection" for
		// its own doing and does not reconnect. A read that ends with EOF
		// is what a dead broker or network looks like; paho then closes
		// the socket without DISCONNECT and the broker sends the Will.
		c.(*net.TCPConn).CloseRead()
	}
	k.conns = nil
}

// TestStatusTopic: online (retained) after connect; offline through the
// Will when the connection dies abruptly; online again after the
// reconnect; offline (retained) after Close.
func TestStatusTopic(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	const status = "gw/1/status"
	var k connKiller
	s := session(t, b, "gatewayd-status", newRecorder(), func(o *Options) {
		o.StatusTopic = status
		o.wrapConn = k.wrap
	})
	retained := func(want string) {
		t.Helper()
		op := newOperator(t, b, fmt.Sprintf("operator-status-%d", time.Now().UnixNano()), false)
		op.subscribe(t, status)
		if m := op.next(t); string(m.Payload()) != want || !m.Retained() {
			t.Fatalf("retained status %q (retained %v), want %q", m.Payload(), m.Retained(), want)
		}
		op.c.Disconnect(100)
	}
	retained("online")

	live := newOperator(t, b, "operator-status-live", false)
	live.subscribe(t, status)
	if m := live.next(t); string(m.Payload()) != "online" {
		t.Fatalf("live status %q", m.Payload())
	}
	k.killAll()
	if m := live.next(t); string(m.Payload()) != "offline" {
		t.Fatalf("after the connection died: %q, want the Will", m.Payload())
	}
	if m := live.next(t); string(m.Payload()) != "online" {
		t.Fatalf("after the reconnect: %q", m.Payload())
	}
	if err := s.WaitConnected(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if m := live.next(t); string(m.Payload()) != "offline" {
		t.Fatalf("after Close: %q", m.Payload())
	}
	retained("offline")
}

// TestCloseStopsEverything: after Close the goroutine count returns to
// its baseline; Close is idempotent; Start, Publish and WaitConnected
// return ErrClosed.
func TestCloseStopsEverything(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	op := newOperator(t, b, "operator-close", false)
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()

	r := newRecorder()
	o := Options{Brokers: []string{b.URL()}, ClientID: "gatewayd-close", Subscribe: []string{"gw/1/cmd/#"},
		OnMessage: r.onMessage, StatusTopic: "gw/1/status", MaxReconnectInterval: time.Second}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctxT(t)); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
	if err := s.WaitConnected(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	op.publish(t, "gw/1/cmd/x", "c", false)
	r.next(t).Ack()
	if err := s.Publish(ctxT(t), "gw/1/result", []byte("r"), false); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close()
	if err := s.Publish(ctxT(t), "gw/1/result", nil, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if err := s.WaitConnected(ctxT(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitConnected after Close: %v", err)
	}
	if err := s.Start(ctxT(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
	if s.Connected() {
		t.Fatal("Connected after Close")
	}

	deadline := time.Now().Add(wait)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCloseWithoutStart: Close of a session never started is fine.
func TestCloseWithoutStart(t *testing.T) {
	s, err := New(Options{Brokers: []string{"tcp://127.0.0.1:1"}, ClientID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(ctxT(t), "a", nil, false); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Publish before Start: %v", err)
	}
	s.Close()
}

// TestBrokerDownAtBoot: Start does not fail when the broker is down;
// WaitConnected gives up with ctx's error; Close returns.
func TestBrokerDownAtBoot(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	b.Stop()
	s, err := New(Options{Brokers: []string{b.URL()}, ClientID: "gatewayd-down", MaxReconnectInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.WaitConnected(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitConnected with the broker down: %v", err)
	}
	b.Restart(t)
	if err := s.WaitConnected(ctxT(t)); err != nil {
		t.Fatalf("WaitConnected once the broker is up: %v", err)
	}
	s.Close()
}

// TestMetrics: the collector passes the linter and counts what happened,
// including a message dropped because the queue was full.
func TestMetrics(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	release := make(chan struct{})
	got := make(chan *Message, 10)
	s := session(t, b, "gatewayd-metrics", nil, func(o *Options) {
		o.MaxQueued = 1
		o.OnMessage = func(m *Message) {
			got <- m
			<-release
		}
	})
	op := newOperator(t, b, "operator-metrics", false)
	next := func() *Message {
		t.Helper()
		select {
		case m := <-got:
			return m
		case <-time.After(wait):
			t.Fatal("no message")
			return nil
		}
	}
	// 0 (QoS 1) is held in OnMessage, then 1 (QoS 0) waits in the queue,
	// 2 (QoS 0) finds the QoS 0 share full and is dropped, and 3 (QoS 1)
	// is queued regardless.
	op.publish(t, "gw/1/cmd/x", "0", false)
	m0 := next()
	op.publishQoS(t, 0, "gw/1/cmd/x", "1", false)
	op.publishQoS(t, 0, "gw/1/cmd/x", "2", false)
	op.publish(t, "gw/1/cmd/x", "3", false)
	deadline := time.Now().Add(wait)
	for testutil.ToFloat64(s.m.received) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("received %v", testutil.ToFloat64(s.m.received))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := testutil.ToFloat64(s.m.unacked); n != 1 {
		t.Fatalf("unacked_messages = %v with message 0 held, want 1", n)
	}
	time.Sleep(20 * time.Millisecond)
	if age := testutil.ToFloat64(s.m.oldestUnacked); age < 0.02 {
		t.Fatalf("oldest_unacked_age_seconds = %v with message 0 held for 20 ms", age)
	}
	close(release)
	m0.Ack()
	if m1 := next(); string(m1.Payload) != "1" {
		t.Fatalf("second delivery %q, want 1", m1.Payload)
	}
	if m3 := next(); string(m3.Payload) != "3" {
		t.Fatalf("third delivery %q, want 3 (2 was dropped)", m3.Payload)
	} else {
		m3.Ack()
	}
	if n, age := testutil.ToFloat64(s.m.unacked), testutil.ToFloat64(s.m.oldestUnacked); n != 0 || age != 0 {
		t.Fatalf("unacked_messages %v, oldest_unacked_age_seconds %v after every ack", n, age)
	}
	if err := s.Publish(ctxT(t), "gw/1/result", []byte("r"), false); err != nil {
		t.Fatal(err)
	}

	problems, err := testutil.CollectAndLint(s.Collector())
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	want := `
# HELP gatewayd_mqtt_connected 1 while the MQTT session is connected and subscribed, else 0.
# TYPE gatewayd_mqtt_connected gauge
gatewayd_mqtt_connected 1
# HELP gatewayd_mqtt_connects_total MQTT connections established (first connect and every reconnect).
# TYPE gatewayd_mqtt_connects_total counter
gatewayd_mqtt_connects_total 1
# HELP gatewayd_mqtt_messages_acked_total PUBACKs released to the broker for received QoS 1 messages.
# TYPE gatewayd_mqtt_messages_acked_total counter
gatewayd_mqtt_messages_acked_total 2
# HELP gatewayd_mqtt_messages_dropped_total QoS 0 messages dropped because MaxQueued QoS 0 messages were already waiting for delivery (QoS 1 messages are never dropped: the broker's in-flight window bounds them).
# TYPE gatewayd_mqtt_messages_dropped_total counter
gatewayd_mqtt_messages_dropped_total 1
# HELP gatewayd_mqtt_messages_received_total MQTT messages received from the broker (redeliveries included).
# TYPE gatewayd_mqtt_messages_received_total counter
gatewayd_mqtt_messages_received_total 4
# HELP gatewayd_mqtt_publishes_total QoS 1 publishes the broker acknowledged.
# TYPE gatewayd_mqtt_publishes_total counter
gatewayd_mqtt_publishes_total 1
`
	names := []string{"gatewayd_mqtt_connected", "gatewayd_mqtt_connects_total", "gatewayd_mqtt_messages_acked_total",
		"gatewayd_mqtt_messages_dropped_total", "gatewayd_mqtt_messages_received_total", "gatewayd_mqtt_publishes_total"}
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(s.Collector()); n != 13 {
		t.Fatalf("%d metrics, want 13", n)
	}
	s.Close()
	if v := testutil.ToFloat64(s.m.connected); v != 0 {
		t.Fatalf("connected = %v after Close", v)
	}
}

// TestNewValidates: New refuses incomplete or inconsistent options.
func TestNewValidates(t *testing.T) {
	ok := Options{Brokers: []string{"tcp://127.0.0.1:1883"}, ClientID: "gatewayd-1"}
	cases := map[string]func(*Options){
		"no broker":            func(o *Options) { o.Brokers = nil },
		"bad scheme":           func(o *Options) { o.Brokers = []string{"http://x"} },
		"credentials in URL":   func(o *Options) { o.Brokers = []string{"tcp://u:secret@x:1883"} },
		"no client ID":         func(o *Options) { o.ClientID = "" },
		"bad filter":           func(o *Options) { o.Subscribe, o.OnMessage = []string{"a/#/b"}, func(*Message) {} },
		"subscribe no handler": func(o *Options) { o.Subscribe = []string{"a/#"} },
		"wildcard status":      func(o *Options) { o.StatusTopic = "a/+" },
		"negative":             func(o *Options) { o.MaxQueued = -1 },
		"sub-second keepalive": func(o *Options) { o.KeepAlive = time.Millisecond },
	}
	for name, mod := range cases {
		o := ok
		mod(&o)
		_, err := New(o)
		if !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: %v", name, err)
		}
		if err != nil && bytes.Contains([]byte(err.Error()), []byte("secret")) {
			t.Errorf("%s: error shows the password: %v", name, err)
		}
	}
	if _, err := New(ok); err != nil {
		t.Fatal(err)
	}
}

// TestAttackQoS0FloodKeepsAcksFlowing: 10,000 junk messages at QoS 0,
// with valid ones at QoS 1 between them, arrive while the consumer is
// busy, so that the session's queue overflows. Only QoS 0 messages are
// dropped: every QoS 1 message is delivered once, on the same connection,
// and acknowledged, without a reconnect.
func TestAttackQoS0FloodKeepsAcksFlowing(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	gate := make(chan struct{})
	var once sync.Once
	valid := make(chan *Message, 100)
	const id = "gatewayd-qos0-flood"
	s := session(t, b, id, nil, func(o *Options) {
		o.MaxQueued = 10
		o.OnMessage = func(m *Message) {
			once.Do(func() { <-gate }) // busy until the flood is queued
			if m.QoS == 1 {
				m.Ack()
				valid <- m
			}
		}
	})
	op := newOperator(t, b, "operator-qos0-flood", false)
	const junk, every = 10000, 1000
	nValid := 0
	for i := range junk {
		if i%every == every/2 {
			op.publish(t, "gw/1/cmd/x", fmt.Sprintf("valid-%d", nValid), false)
			nValid++
		}
		op.c.Publish("gw/1/cmd/x", 0, false, "junk") // QoS 0: nothing to wait for
	}
	op.publish(t, "gw/1/cmd/x", fmt.Sprintf("valid-%d", nValid), false)
	nValid++
	deadline := time.Now().Add(wait)
	for testutil.ToFloat64(s.m.dropped) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the flood never overflowed the queue: the test proves nothing")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(gate)
	for i := range nValid {
		select {
		case m := <-valid:
			if want := fmt.Sprintf("valid-%d", i); string(m.Payload) != want || m.Duplicate {
				t.Fatalf("delivery %d: %q (dup %v), want %q", i, m.Payload, m.Duplicate, want)
			}
		case <-time.After(wait):
			t.Fatalf("valid message %d of %d not delivered (dropped %v, connects %v)", i, nValid,
				testutil.ToFloat64(s.m.dropped), testutil.ToFloat64(s.m.connects))
		}
	}
	if got := testutil.ToFloat64(s.m.acked); got != float64(nValid) {
		t.Fatalf("messages_acked_total = %v, want %d", got, nValid)
	}
	if got := testutil.ToFloat64(s.m.connects); got != 1 {
		t.Fatalf("connects_total = %v: the session needed a reconnect", got)
	}
	// (No check for redeliveries after Close: paho may send its
	// DISCONNECT ahead of PUBACKs released just before, which the broker
	// then redelivers; the journal deduplicates them.)
}

// TestAttackSessionTakeoverDetected: on a broker that does not tie client
// IDs to identities, another client connects with the gateway's client
// ID, three times. Each time the broker closes the gateway's connection
// and the gateway takes its session back at once; each is counted and
// logged as a suspected takeover (the broker configuration of
// deploy/mosquitto prevents the takeover itself).
func TestAttackSessionTakeoverDetected(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	var logs syncBuffer
	const id = "gatewayd-takeover"
	s := session(t, b, id, newRecorder(), func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	for i := 1; i <= 3; i++ {
		o := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID(id).SetCleanSession(false).
			SetProtocolVersion(4).SetAutoReconnect(false)
		intruder := mqtt.NewClient(o)
		if tok := intruder.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
			t.Fatalf("intruder connect: %v", tok.Error())
		}
		deadline := time.Now().Add(wait)
		for testutil.ToFloat64(s.m.takeovers) < float64(i) {
			if time.Now().After(deadline) {
				t.Fatalf("takeover %d not detected (connects %v, lost %v)", i,
					testutil.ToFloat64(s.m.connects), testutil.ToFloat64(s.m.connectionLost))
			}
			time.Sleep(10 * time.Millisecond)
		}
		intruder.Disconnect(0)
		if err := s.WaitConnected(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(s.m.takeovers); got != 3 {
		t.Fatalf("takeovers_suspected_total = %v, want 3", got)
	}
	if !strings.Contains(logs.String(), "reason=session_takeover suspected_total=3") {
		t.Fatalf("no takeover log line:\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAttackOversizedMessageWarns: a broker without a packet size limit
// forwards a 100 KiB message; paho has buffered it whole by the time the
// session sees it, so the session can only tell: it counts it and warns
// that the broker lacks max_packet_size. It also warns at start that the
// broker cannot authenticate a gateway without a certificate or username.
func TestAttackOversizedMessageWarns(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	var logs syncBuffer
	r := newRecorder()
	s := session(t, b, "gatewayd-oversized", r, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	if !strings.Contains(logs.String(), "reason=broker_unauthenticated") {
		t.Fatalf("no warning about an unauthenticated session at start:\n%s", logs.String())
	}
	op := newOperator(t, b, "operator-oversized", false)
	op.publish(t, "gw/1/cmd/x", strings.Repeat("x", 100<<10), false)
	op.publish(t, "gw/1/cmd/x", "small", false)
	r.next(t).Ack()
	r.next(t).Ack()
	if got := testutil.ToFloat64(s.m.oversized); got != 1 {
		t.Fatalf("messages_oversized_total = %v, want 1", got)
	}
	if !strings.Contains(logs.String(), "reason=broker_no_size_limit") || !strings.Contains(logs.String(), "payload_size=102400") {
		t.Fatalf("no warning about the missing broker limit:\n%s", logs.String())
	}
}
