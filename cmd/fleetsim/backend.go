package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet/operator"
	"github.com/gatewayd/gatewayd/fleet/route"
)

// cmdRec is one signed command and what became of it at each gateway it
// was sent to.
type cmdRec struct {
	id      string
	lock    *simLock
	op      command.Op
	payload []byte
	sentAt  time.Time
	sentTo  []string
	acked   map[string]time.Time   // gateway → the broker's PUBACK
	results map[string][]resultKey // gateway → distinct results
	firstAt time.Time              // first result's arrival
	refused map[string]string      // gateway → reason of a refusal notice (not duplicate)
}

// resultKey is what makes two result messages the same result (a QoS 1
// redelivery) or two results.
type resultKey struct {
	State, Status, Detail string
	FinishedAt            time.Time
}

// backend is the fleet's backend: it signs commands with an operator
// credential, routes them with fleet/route from the retained status and
// presence it subscribes to, and collects results.
type backend struct {
	s      *sim
	prefix string
	table  *route.Table
	key    ed25519.PrivateKey
	cwt    []byte
	ctr    atomic.Uint64
	pub    mqtt.Client
	sub    mqtt.Client

	counting atomic.Bool  // idle window: count gateway messages
	idleMsgs atomic.Int64 // gateway messages seen while counting
	idleMu   sync.Mutex
	idleKind map[string]int // the same, by topic kind

	mu      sync.Mutex
	cond    *sync.Cond
	cmds    map[string]*cmdRec
	order   []*cmdRec
	onlines map[string][]time.Time // gateway → arrivals of an online status
	locksAt map[string][]time.Time // gateway → arrivals of its presence
	bad     []string               // messages the table refused
}

func newBackend(s *sim, urls []string) (*backend, error) {
	b := &backend{s: s, prefix: operator.DefaultPrefix, table: route.New(operator.DefaultPrefix),
		cmds: map[string]*cmdRec{}, onlines: map[string][]time.Time{}, locksAt: map[string][]time.Time{},
		idleKind: map[string]int{}}
	b.cond = sync.NewCond(&b.mu)
	b.ctr.Store(uint64(time.Now().UnixMicro()))
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if b.cwt, err = cred.Issue(s.fleet.Root, s.fleet.RootKID, cred.Claims{Subject: "otto", Kind: cred.KindOperator,
		Role: cred.RoleOperator, Perms: cred.OperatorPerms, Issuer: "fleet-root", NotBefore: now.Add(-time.Hour),
		Expiry: now.Add(24 * time.Hour), IssuedAt: now, PublicKey: pub}); err != nil {
		return nil, err
	}
	b.key = key
	opts := func(id string, clean bool) *mqtt.ClientOptions {
		o := mqtt.NewClientOptions().SetClientID(id).SetCleanSession(clean).
			SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
			SetMaxReconnectInterval(500 * time.Millisecond).SetConnectTimeout(5 * time.Second).SetKeepAlive(5 * time.Second)
		for _, u := range urls {
			o.AddBroker(u)
		}
		return o
	}
	filters := map[string]byte{}
	for _, f := range append(b.table.Filters(), b.prefix+"/gw/+/result", b.prefix+"/gw/+/rejected", b.prefix+"/gw/+/events") {
		filters[f] = 1
	}
	so := opts("fleetsim-backend", false)
	so.SetOnConnectHandler(func(c mqtt.Client) { c.SubscribeMultiple(filters, b.onMessage) })
	b.sub = mqtt.NewClient(so)
	if tok := b.sub.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		return nil, fmt.Errorf("backend: subscriber: %v", tok.Error())
	}
	if err := subscribe(b.sub, filters, b.onMessage); err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	b.pub = mqtt.NewClient(opts("fleetsim-sender", true))
	if tok := b.pub.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		return nil, fmt.Errorf("backend: publisher: %v", tok.Error())
	}
	return b, nil
}

// subscribe subscribes until the broker grants every filter (nats-server
// refuses, SUBACK 0x80, while JetStream has no leader).
func subscribe(c mqtt.Client, filters map[string]byte, h mqtt.MessageHandler) error {
	deadline := time.Now().Add(time.Minute)
	for {
		tok := c.SubscribeMultiple(filters, h)
		if tok.WaitTimeout(30*time.Second) && tok.Error() == nil {
			ok := true
			for _, code := range tok.(*mqtt.SubscribeToken).Result() {
				ok = ok && code != 0x80
			}
			if ok {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("subscribe: not granted within a minute (%v)", tok.Error())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (b *backend) close() {
	b.mu.Lock()
	b.cond.Broadcast()
	b.mu.Unlock()
	if b.pub != nil {
		b.pub.Disconnect(250)
	}
	if b.sub != nil {
		b.sub.Disconnect(250)
	}
}

// gatewayOf returns G and the last level of P/gw/G/KIND.
func (b *backend) gatewayOf(topic string) (gw, kind string) {
	rest, _ := strings.CutPrefix(topic, b.prefix+"/gw/")
	gw, kind, _ = strings.Cut(rest, "/")
	return gw, kind
}

func (b *backend) onMessage(_ mqtt.Client, m mqtt.Message) {
	now := time.Now()
	gw, kind := b.gatewayOf(m.Topic())
	if b.counting.Load() && !m.Retained() {
		b.idleMsgs.Add(1)
		b.idleMu.Lock()
		b.idleKind[kind]++
		b.idleMu.Unlock()
	}
	switch kind {
	case "status", "locks":
		if err := b.table.Handle(m.Topic(), m.Payload()); err != nil {
			b.mu.Lock()
			b.bad = append(b.bad, err.Error())
			b.mu.Unlock()
		}
		b.mu.Lock()
		if kind == "status" && strings.Contains(string(m.Payload()), `"online"`) {
			b.onlines[gw] = append(b.onlines[gw], now)
		} else if kind == "locks" {
			b.locksAt[gw] = append(b.locksAt[gw], now)
		}
		b.cond.Broadcast()
		b.mu.Unlock()
	case "result":
		var r operator.ResultMessage
		if json.Unmarshal(m.Payload(), &r) != nil {
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		c := b.cmds[hex.EncodeToString(r.CommandID[:])]
		if c == nil {
			return
		}
		k := resultKey{State: string(r.State), Status: r.Status, Detail: r.Detail, FinishedAt: r.FinishedAt}
		for _, old := range c.results[gw] {
			if old == k {
				return // the same result again (at least once on the wire)
			}
		}
		c.results[gw] = append(c.results[gw], k)
		if c.firstAt.IsZero() {
			c.firstAt = now
		}
		b.cond.Broadcast()
	case "rejected":
		var n struct {
			Reason    string `json:"reason"`
			CommandID string `json:"command_id"`
		}
		if json.Unmarshal(m.Payload(), &n) != nil || n.Reason == string(operator.ReasonDuplicate) {
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if c := b.cmds[n.CommandID]; c != nil {
			c.refused[gw] = n.Reason
			b.cond.Broadcast()
		}
	}
}

// sign makes a signed command for l.
func (b *backend) sign(l *simLock, op command.Op) *cmdRec {
	body := command.Body{LockID: l.id, Op: op, NotAfter: time.Now().Add(time.Hour).Truncate(time.Second), Counter: b.ctr.Add(1)}
	_, _ = rand.Read(body.CommandID[:])
	signed, err := command.Sign(b.key, b.cwt, body)
	if err != nil {
		panic(fmt.Errorf("sign: %w", err)) // a fixture bug, never the gateway's
	}
	c := &cmdRec{id: hex.EncodeToString(body.CommandID[:]), lock: l, op: op, payload: signed,
		acked: map[string]time.Time{}, results: map[string][]resultKey{}, refused: map[string]string{}}
	b.mu.Lock()
	b.cmds[c.id] = c
	b.order = append(b.order, c)
	b.mu.Unlock()
	return c
}

// send publishes c to each gateway's command topic until the broker
// acknowledges it (or ctx ends).
func (b *backend) send(ctx context.Context, c *cmdRec, gws ...string) {
	b.mu.Lock()
	if c.sentAt.IsZero() {
		c.sentAt = time.Now()
	}
	c.sentTo = append(c.sentTo, gws...)
	b.mu.Unlock()
	for _, gw := range gws {
		for ctx.Err() == nil {
			tok := b.pub.Publish(b.prefix+"/gw/"+gw+"/cmd", 1, false, c.payload)
			if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				b.mu.Lock()
				c.acked[gw] = time.Now()
				b.mu.Unlock()
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// waitFor waits until pred (called with b.mu held) holds or timeout
// passes; it reports whether it held.
func (b *backend) waitFor(ctx context.Context, timeout time.Duration, pred func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { b.mu.Lock(); b.cond.Broadcast(); b.mu.Unlock() })
	defer stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for !pred() {
		if ctx.Err() != nil {
			return false
		}
		b.cond.Wait()
	}
	return true
}

// answered reports whether every gateway c went to answered it (result
// or refusal); b.mu held.
func (c *cmdRec) answered() bool {
	for _, gw := range c.sentTo {
		if len(c.results[gw]) == 0 && c.refused[gw] == "" {
			return false
		}
	}
	return len(c.sentTo) > 0
}

// statuses is c's results as "gateway:status", with " (duplicate_command)"
// when the lock answered that it had run the command before (the gateway
// reports the first run's status, docs/mqtt.md); b.mu held.
func (c *cmdRec) statuses() []string {
	var out []string
	for _, gw := range c.sentTo {
		for _, r := range c.results[gw] {
			st := gw + ":" + r.Status
			if strings.Contains(r.Detail, "duplicate_command") {
				st += " (duplicate_command)"
			}
			out = append(out, st)
		}
	}
	return out
}
