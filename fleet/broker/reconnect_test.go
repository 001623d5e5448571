package broker

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// reconnectBound is how soon after the broker is back the session must be
// connected again in TestReconnectAfterRepeatedOutages. The session
// reconnects within about MaxReconnectInterval (1 s); the bound leaves
// room for a loaded machine, and is well under what paho's own backoff
// took (it doubled to 8, 16 and 30 s across outages a few seconds apart,
// never reset by the connections in between).
const reconnectBound = 5 * time.Second

// TestReconnectAfterRepeatedOutages: mosquitto is SIGKILLed and started
// again six times, a second or two apart. After each return the session
// (with the default MaxReconnectInterval) is connected and subscribed
// again within reconnectBound, and a command published then reaches it:
// the backoff starts again from nothing after every successful connection.
func TestReconnectAfterRepeatedOutages(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	r := newRecorder()
	s := session(t, b, "gatewayd-outages", r, func(o *Options) { o.MaxReconnectInterval = 0 })
	op := newOperator(t, b, "operator-outages", true)
	var took []time.Duration
	for i := range 6 {
		b.Kill()
		deadline := time.Now().Add(wait)
		for s.Connected() {
			if time.Now().After(deadline) {
				t.Fatal("session still connected after the broker died")
			}
			time.Sleep(5 * time.Millisecond)
		}
		// The outage; Restart returns once mosquitto accepts connections.
		time.Sleep(time.Second + time.Duration(i%3)*500*time.Millisecond)
		b.Restart(t)
		back := time.Now()
		for !s.Connected() {
			if time.Since(back) > wait {
				t.Fatalf("outage %d: not connected %v after the broker came back", i+1, wait)
			}
			time.Sleep(5 * time.Millisecond)
		}
		took = append(took, time.Since(back))
		msg := fmt.Sprintf("after-outage-%d", i+1)
		op.publish(t, "gw/1/cmd/lock", msg, false)
		for {
			m := r.next(t)
			m.Ack()
			if string(m.Payload) == msg {
				break
			}
		}
	}
	t.Logf("connected again after the broker's return: %v", took)
	if worst := slices.Max(took); worst > reconnectBound {
		t.Errorf("reconnected %v after the broker's return at worst (all: %v), want under %v", worst, took, reconnectBound)
	}
}

// TestSubscribeRetriedUntilGranted: a subscription the broker refuses
// (SUBACK 0x80, as nats-server answers while JetStream elects a leader
// after a node died: docs/scaling.md) is tried again on the same
// connection until granted; the session is not ready meanwhile, and then
// receives its messages without a reconnect. mosquitto never refuses a
// subscription (its ACL filters deliveries instead), so a fake broker of
// this test refuses the first two.
func TestSubscribeRetriedUntilGranted(t *testing.T) {
	fb := startRefusingBroker(t, 2)
	r := newRecorder()
	var readies atomic.Int32
	s, err := New(Options{
		Brokers: []string{"tcp://" + fb.addr}, ClientID: "gw-sub", Subscribe: []string{"gw/1/cmd/#"},
		OnMessage: r.onMessage, MaxReconnectInterval: 200 * time.Millisecond,
		OnReady: func() { readies.Add(1) },
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
	if got := testutil.ToFloat64(s.m.subscribeFailures); got != 2 {
		t.Fatalf("subscribe failures = %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.m.connects); got != 1 {
		t.Fatalf("connects = %v: the subscription came from a reconnect, not a retry", got)
	}
	if fb.subscribes.Load() != 3 {
		t.Fatalf("SUBSCRIBEs = %d, want 3", fb.subscribes.Load())
	}
	for deadline := time.Now().Add(wait); readies.Load() != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("OnReady called %d times for one connection, want 1", readies.Load())
		}
	}
	// The broker delivers after the grant.
	if m := r.next(t); string(m.Payload) != "hello" || m.Topic != "gw/1/cmd/x" {
		t.Fatalf("message = %s %q", m.Topic, m.Payload)
	}
}

// refusingBroker is a fake MQTT 3.1.1 broker for one client: CONNACK 0,
// SUBACK 0x80 to the first refuse SUBSCRIBEs, then granted and a QoS 0
// PUBLISH of "hello" to gw/1/cmd/x; PINGRESP to PINGREQ.
type refusingBroker struct {
	addr       string
	subscribes atomic.Int32
}

func startRefusingBroker(t *testing.T, refuse int32) *refusingBroker {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fb := &refusingBroker{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				fb.serve(c, refuse)
			}()
		}
	}()
	return fb
}

func (fb *refusingBroker) serve(c net.Conn, refuse int32) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		h, err := br.ReadByte()
		if err != nil {
			return
		}
		var n, shift int
		for {
			b, err := br.ReadByte()
			if err != nil {
				return
			}
			n |= int(b&0x7f) << shift
			shift += 7
			if b&0x80 == 0 {
				break
			}
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		switch h >> 4 {
		case 1: // CONNECT
			_, _ = c.Write([]byte{0x20, 2, 0, 0})
		case 8: // SUBSCRIBE
			code := byte(1)
			if fb.subscribes.Add(1) <= refuse {
				code = 0x80
			}
			_, _ = c.Write([]byte{0x90, 3, body[0], body[1], code})
			if code != 0x80 {
				topic, payload := "gw/1/cmd/x", "hello"
				p := append([]byte{0x30, byte(2 + len(topic) + len(payload)), 0, byte(len(topic))}, topic...)
				_, _ = c.Write(append(p, payload...))
			}
		case 12: // PINGREQ
			_, _ = c.Write([]byte{0xd0, 0})
		case 14: // DISCONNECT
			return
		}
	}
}

// TestOnReadyEveryConnect: OnReady runs once the session is ready at
// Start and again after each reconnect (the daemon republishes its lock
// presence from it).
func TestOnReadyEveryConnect(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	var readies atomic.Int32
	s := session(t, b, "gatewayd-onready", newRecorder(), func(o *Options) {
		o.OnReady = func() { readies.Add(1) }
	})
	waitReadies := func(n int32) {
		t.Helper()
		for deadline := time.Now().Add(wait); readies.Load() < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("OnReady called %d times, want %d", readies.Load(), n)
			}
		}
	}
	waitReadies(1)
	b.Kill()
	b.Restart(t)
	waitReadies(2)
	if !s.Connected() {
		t.Fatal("OnReady called, session not ready")
	}
}
