package mosquitto

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/fleet/broker"
	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// Generous: nothing here fails because the machine is slow.
const wait = 20 * time.Second

const prefix = "gatewayd/v1/gw/"

// shipped returns the shipped mosquitto.conf for a test broker (see
// Configure: only the paths and the port change), with the ACL of
// backends (ACLWith).
func shipped(t *testing.T, p *PKI, backends ...string) func(port int, dataDir, logPath string) []byte {
	t.Helper()
	acl, err := ACLWith(backends...)
	if err != nil {
		t.Fatal(err)
	}
	aclFile := filepath.Join(p.Dir, "gatewayd.acl")
	if err := os.WriteFile(aclFile, []byte(acl), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(port int, dataDir, logPath string) []byte {
		conf, err := Configure(Site{Listen: fmt.Sprintf("%d 127.0.0.1", port), CAFile: p.CAFile(),
			CertFile: p.CertFile("server"), KeyFile: p.KeyFile("server"), ACLFile: aclFile,
			DataDir: dataDir, LogFile: logPath})
		if err != nil {
			t.Error(err)
		}
		var out bytes.Buffer
		if u, err := user.Current(); err == nil {
			fmt.Fprintf(&out, "user %s\n", u.Username) // as root, do not drop to "mosquitto"
		}
		out.WriteString(conf)
		out.WriteString("log_type all\n")
		return out.Bytes()
	}
}

// fleetBroker is mosquitto running the shipped configuration.
type fleetBroker struct {
	b   *mosquittotest.Broker
	pki *PKI
	url string
}

func startFleetBroker(t *testing.T) *fleetBroker {
	t.Helper()
	p, err := NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := mosquittotest.Start(t, mosquittotest.Options{Config: shipped(t, p)})
	return &fleetBroker{b: b, pki: p, url: "ssl://" + b.Addr()}
}

// client is an MQTT 3.1.1 client with a certificate.
type client struct {
	t    *testing.T
	c    mqtt.Client
	ch   chan mqtt.Message
	mu   sync.Mutex
	lost int
}

func (fb *fleetBroker) connect(t *testing.T, cn, clientID string) *client {
	t.Helper()
	c, err := fb.dial(t, cn, clientID)
	if err != nil {
		t.Fatalf("connect as %s: %v", cn, err)
	}
	return c
}

func (fb *fleetBroker) dial(t *testing.T, cn, clientID string) (*client, error) {
	t.Helper()
	cl := &client{t: t, ch: make(chan mqtt.Message, 100)}
	tc := &tls.Config{RootCAs: fb.pki.Pool, MinVersion: tls.VersionTLS12}
	if cn != "" {
		c, err := fb.pki.Issue(cn, false)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	o := mqtt.NewClientOptions().AddBroker(fb.url).SetClientID(clientID).SetProtocolVersion(4).
		SetCleanSession(false).SetTLSConfig(tc).SetAutoReconnect(false).SetConnectTimeout(wait).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { cl.ch <- m }).
		SetConnectionLostHandler(func(mqtt.Client, error) { cl.mu.Lock(); cl.lost++; cl.mu.Unlock() })
	cl.c = mqtt.NewClient(o)
	tok := cl.c.Connect()
	if !tok.WaitTimeout(wait) {
		return nil, fmt.Errorf("no CONNACK within %v", wait)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { cl.c.Disconnect(50) })
	return cl, nil
}

func (cl *client) subscribe(filters ...string) {
	cl.t.Helper()
	m := map[string]byte{}
	for _, f := range filters {
		m[f] = 1
	}
	tok := cl.c.SubscribeMultiple(m, nil)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		cl.t.Fatalf("subscribe %v: %v", filters, tok.Error())
	}
}

// subscribeRefused subscribes to filter and reports whether the broker
// refused it (SUBACK 0x80).
func (cl *client) subscribeRefused(filter string) bool {
	cl.t.Helper()
	tok := cl.c.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		cl.t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter] == 0x80
}

// publish publishes with QoS 1 and waits for the PUBACK: the broker has
// routed the message (or dropped it) by then.
func (cl *client) publish(topic, payload string) {
	cl.t.Helper()
	tok := cl.c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		cl.t.Fatalf("publish to %s: %v", topic, tok.Error())
	}
}

// next returns the next message received.
func (cl *client) next() mqtt.Message {
	cl.t.Helper()
	select {
	case m := <-cl.ch:
		return m
	case <-time.After(wait):
		cl.t.Fatal("no message")
		return nil
	}
}

// expectNext fails unless the next message received is payload on topic.
// A message one client publishes after another's PUBACK is routed after
// it, so "the marker comes first" shows the earlier one was not delivered.
func (cl *client) expectNext(topic, payload string) {
	cl.t.Helper()
	m := cl.next()
	m.Ack()
	if m.Topic() != topic || string(m.Payload()) != payload {
		cl.t.Fatalf("got %q on %s, want %q on %s", m.Payload(), m.Topic(), payload, topic)
	}
}

func (cl *client) lostCount() int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.lost
}

// TestAttackGatewayReadsOtherGatewaysCommands: with the shipped ACL a
// gateway cannot subscribe to another gateway's command topic, by name or
// by wildcard, and receives only its own commands.
func TestAttackGatewayReadsOtherGatewaysCommands(t *testing.T) {
	fb := startFleetBroker(t)
	backend := fb.connect(t, "@backend", "backend-1")
	dock1 := fb.connect(t, "dock-1", "gatewayd-dock-1")
	dock1.subscribe(prefix + "dock-1/cmd")
	dock2 := fb.connect(t, "dock-2", "gatewayd-dock-2")
	dock2.subscribe(prefix + "dock-2/cmd")
	for _, f := range []string{prefix + "dock-1/cmd", prefix + "+/cmd", "#", "gatewayd/v1/#"} {
		// mosquitto 2.0 grants the subscription and then filters every
		// message through the ACL; newer versions refuse it. Either way
		// nothing of dock-1 may arrive.
		_ = dock2.subscribeRefused(f)
	}
	backend.publish(prefix+"dock-1/cmd", "for dock-1")
	backend.publish(prefix+"dock-2/cmd", "for dock-2")
	dock1.expectNext(prefix+"dock-1/cmd", "for dock-1")
	dock2.expectNext(prefix+"dock-2/cmd", "for dock-2")
	select {
	case m := <-dock2.ch:
		t.Fatalf("dock-2 received %q on %s", m.Payload(), m.Topic())
	default:
	}
}

// TestAttackGatewayPublishesCommands: a gateway's publications on another
// gateway's command topic, and on its own, are dropped by the broker:
// only the backend sends commands.
func TestAttackGatewayPublishesCommands(t *testing.T) {
	fb := startFleetBroker(t)
	backend := fb.connect(t, "@backend", "backend-1")
	dock1 := fb.connect(t, "dock-1", "gatewayd-dock-1")
	dock1.subscribe(prefix + "dock-1/cmd")
	dock2 := fb.connect(t, "dock-2", "gatewayd-dock-2")
	dock2.subscribe(prefix + "dock-2/cmd")
	dock2.publish(prefix+"dock-1/cmd", "forged by dock-2")
	dock2.publish(prefix+"dock-2/cmd", "dock-2 to itself")
	backend.publish(prefix+"dock-1/cmd", "real")
	backend.publish(prefix+"dock-2/cmd", "real")
	dock1.expectNext(prefix+"dock-1/cmd", "real")
	dock2.expectNext(prefix+"dock-2/cmd", "real")

	// A gateway may publish its own results; the backend reads them, not
	// another gateway's made up by dock-2.
	backend.subscribe(prefix + "+/result")
	dock2.publish(prefix+"dock-1/result", "fake result")
	dock1.publish(prefix+"dock-1/result", "result")
	backend.expectNext(prefix+"dock-1/result", "result")
}

// TestAttackSessionTakeover: a client that connects with a gateway's
// client ID, with a certificate of its own, gets a session of its own
// (use_username_as_clientid): the gateway stays connected, keeps its
// commands, and the intruder receives none of them.
func TestAttackSessionTakeover(t *testing.T) {
	fb := startFleetBroker(t)
	backend := fb.connect(t, "@backend", "backend-1")
	dock1 := fb.connect(t, "dock-1", "gatewayd-dock-1")
	dock1.subscribe(prefix + "dock-1/cmd")
	for _, id := range []string{"gatewayd-dock-1", "dock-1"} {
		intruder := fb.connect(t, "dock-2", id)
		intruder.subscribe(prefix + "dock-1/cmd")
		backend.publish(prefix+"dock-1/cmd", "after "+id)
		dock1.expectNext(prefix+"dock-1/cmd", "after "+id)
		if n := dock1.lostCount(); n != 0 {
			t.Fatalf("dock-1 lost its connection when a client connected as %q", id)
		}
		select {
		case m := <-intruder.ch:
			t.Fatalf("the intruder with client ID %q received %q", id, m.Payload())
		default:
		}
	}
	// No certificate, no connection.
	if c, err := fb.dial(t, "", "gatewayd-dock-1"); err == nil {
		c.c.Disconnect(0)
		t.Fatal("a client without a certificate connected")
	}
	if n := dock1.lostCount(); n != 0 {
		t.Fatal("dock-1 lost its connection to a client without a certificate")
	}
}

// TestAttackOversizedPublish: the broker refuses a publish larger than
// max_packet_size: it disconnects the publisher and forwards nothing, so
// no gateway buffers it.
func TestAttackOversizedPublish(t *testing.T) {
	fb := startFleetBroker(t)
	dock1 := fb.connect(t, "dock-1", "gatewayd-dock-1")
	dock1.subscribe(prefix + "dock-1/cmd")
	limit := maxPacketSize(t)
	if limit != broker.MaxPacketSize {
		t.Fatalf("max_packet_size %d, but gatewayd warns above broker.MaxPacketSize %d", limit, broker.MaxPacketSize)
	}
	backend := fb.connect(t, "@backend", "backend-1")
	big := strings.Repeat("x", limit+1)
	// No wait on the token: the broker closes the connection, and the
	// PUBACK never comes.
	backend.c.Publish(prefix+"dock-1/cmd", 1, false, big)
	deadline := time.Now().Add(wait)
	for backend.lostCount() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the broker did not disconnect the client that sent an oversized packet")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Just under the limit passes (packet overhead: header, topic, ID).
	backend2 := fb.connect(t, "@backend", "backend-2")
	fits := strings.Repeat("y", limit-len(prefix+"dock-1/cmd")-16)
	backend2.publish(prefix+"dock-1/cmd", fits)
	dock1.expectNext(prefix+"dock-1/cmd", fits)
}

// maxPacketSize reads max_packet_size from the shipped configuration.
func maxPacketSize(t *testing.T) int {
	t.Helper()
	raw, err := os.ReadFile("mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "max_packet_size "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("the shipped mosquitto.conf sets no max_packet_size")
	return 0
}

// TestLimits: the lines the demo and the daemon's flood test take from
// the shipped configuration.
func TestLimits(t *testing.T) {
	got := strings.Join(Limits(), "\n")
	for _, want := range []string{"max_packet_size 65536", "max_inflight_messages ", "max_queued_messages ",
		"max_queued_bytes ", "set_tcp_nodelay true"} {
		if !strings.Contains(got, want) {
			t.Errorf("Limits lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "listener") || strings.Contains(got, "cafile") {
		t.Errorf("Limits has machine-specific lines:\n%s", got)
	}
}

// TestGatewaySessionWithShippedConfig: gatewayd's own MQTT session
// (fleet/broker) works with the shipped configuration: it connects with
// its certificate, subscribes to its command topic, publishes its
// retained status and its results, all within the ACL, and the backend
// sees them.
func TestGatewaySessionWithShippedConfig(t *testing.T) {
	fb := startFleetBroker(t)
	backend := fb.connect(t, "@backend", "backend-1")
	backend.subscribe(prefix+"+/result", prefix+"+/status")
	got := make(chan *broker.Message, 10)
	cert, err := fb.pki.Issue("dock-1", false)
	if err != nil {
		t.Fatal(err)
	}
	s, err := broker.New(broker.Options{
		Brokers:  []string{fb.url},
		ClientID: "gatewayd-dock-1",
		TLSConfig: &tls.Config{RootCAs: fb.pki.Pool, MinVersion: tls.VersionTLS12,
			Certificates: []tls.Certificate{cert}},
		Subscribe:   []string{prefix + "dock-1/cmd"},
		OnMessage:   func(m *broker.Message) { got <- m },
		StatusTopic: prefix + "dock-1/status",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	backend.expectNext(prefix+"dock-1/status", "online")
	backend.publish(prefix+"dock-1/cmd", "command")
	select {
	case m := <-got:
		if string(m.Payload) != "command" {
			t.Fatalf("gateway got %q", m.Payload)
		}
		m.Ack()
	case <-time.After(wait):
		t.Fatal("the gateway's session received no command")
	}
	if err := s.Publish(ctx, prefix+"dock-1/result", []byte("result"), false); err != nil {
		t.Fatal(err)
	}
	backend.expectNext(prefix+"dock-1/result", "result")
	s.Close()
	backend.expectNext(prefix+"dock-1/status", "offline")
}

// TestACLWith: a block per extra backend, each a copy of @backend's.
func TestACLWith(t *testing.T) {
	acl, err := ACLWith("@otto", "@ada")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"@backend", "@otto", "@ada"} {
		if !strings.Contains(acl, "user "+u+"\ntopic write gatewayd/v1/gw/+/cmd\n") {
			t.Errorf("no block for %s:\n%s", u, acl)
		}
	}
	if _, err := ACLWith("otto"); err == nil {
		t.Error("a backend user without @ accepted")
	}
}
