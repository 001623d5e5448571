package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/fleet/operator"
)

// cmdRec is one command the backend signed, and what became of it.
type cmdRec struct {
	ID      string
	Lock    int
	Signer  string
	Counter uint64
	Op      string
	Probe   int // index+1 of the fault whose recovery it probes; 0 for traffic
	payload []byte

	Created  time.Time
	Accepted time.Time // the broker's PUBACK of the first accepted send
	Sends    int
	// Results are the distinct results received (a redelivery of the same
	// result on the wire is counted in Wire only).
	Results  []resultMsg
	ResultAt time.Time // arrival of the first result
	Wire     int
	// Refused is the gateway's reason when it refused the command before
	// journaling it (not "duplicate": a resend of a journaled one).
	Refused string
	// DupState is the journaled state a duplicate notice reported.
	DupState string
}

// resultMsg is the part of a result message the campaign checks.
type resultMsg struct {
	CommandID  string    `json:"command_id"`
	LockID     string    `json:"lock_id"`
	Operation  string    `json:"operation"`
	State      string    `json:"state"`
	Status     string    `json:"status"`
	Detail     string    `json:"detail"`
	Attempts   int       `json:"attempts"`
	FinishedAt time.Time `json:"finished_at"`
}

type signer struct {
	mu      sync.Mutex // one publish at a time: counters reach the broker in order
	name    string
	key     ed25519.PrivateKey
	cwt     []byte
	counter uint64
}

// backend is the fleet's backend: it signs commands, publishes them with
// QoS 1 (resending one the broker did not acknowledge, and one with no
// result for a long time, as a backend does), and a persistent session
// subscribed to the gateway's results and notices.
type backend struct {
	r      *rig
	topics operator.Topics
	pub    mqtt.Client
	sub    mqtt.Client

	mu      sync.Mutex
	cond    *sync.Cond
	cmds    map[string]*cmdRec
	order   []*cmdRec
	signers map[string]*signer
	closed  bool
}

func newBackend(r *rig) (*backend, error) {
	t, err := operator.NewTopics(operator.DefaultPrefix, gatewayID)
	if err != nil {
		return nil, err
	}
	b := &backend{r: r, topics: t, cmds: map[string]*cmdRec{}, signers: map[string]*signer{}}
	b.cond = sync.NewCond(&b.mu)
	for _, name := range []string{"otto", "ada"} {
		key, err := config.ReadPrivateKey(r.path(name + ".key"))
		if err != nil {
			return nil, err
		}
		cwt, err := os.ReadFile(r.path(name + ".cwt"))
		if err != nil {
			return nil, err
		}
		b.signers[name] = &signer{name: name, key: key, cwt: cwt, counter: uint64(time.Now().UnixMicro())}
	}
	opts := func(id string) *mqtt.ClientOptions {
		return mqtt.NewClientOptions().AddBroker(r.brokerURL).SetClientID(id).SetCleanSession(false).
			SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
			SetMaxReconnectInterval(500 * time.Millisecond).SetConnectTimeout(5 * time.Second).SetKeepAlive(5 * time.Second)
	}
	so := opts("faults-results")
	so.SetOnConnectHandler(func(c mqtt.Client) {
		c.SubscribeMultiple(map[string]byte{t.Result: 1, t.Rejected: 1}, b.onMessage)
	})
	b.sub = mqtt.NewClient(so)
	if tok := b.sub.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("backend: subscriber: %v", tok.Error())
	}
	// Subscribed before the first command: a result published before the
	// subscription would have no session to wait in.
	if tok := b.sub.SubscribeMultiple(map[string]byte{t.Result: 1, t.Rejected: 1}, b.onMessage); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("backend: subscribe: %v", tok.Error())
	}
	b.pub = mqtt.NewClient(opts("faults-backend"))
	if tok := b.pub.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("backend: publisher: %v", tok.Error())
	}
	return b, nil
}

func (b *backend) close() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	b.pub.Disconnect(250)
	b.sub.Disconnect(250)
}

func (b *backend) onMessage(_ mqtt.Client, m mqtt.Message) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.cond.Broadcast()
	switch m.Topic() {
	case b.topics.Result:
		var res resultMsg
		if json.Unmarshal(m.Payload(), &res) != nil {
			return
		}
		c := b.cmds[res.CommandID]
		if c == nil {
			return
		}
		c.Wire++
		for _, old := range c.Results {
			if old == res {
				return
			}
		}
		c.Results = append(c.Results, res)
		if c.ResultAt.IsZero() {
			c.ResultAt = now
		}
	case b.topics.Rejected:
		var n struct {
			Reason    string `json:"reason"`
			CommandID string `json:"command_id"`
			State     string `json:"state"`
		}
		if json.Unmarshal(m.Payload(), &n) != nil {
			return
		}
		c := b.cmds[n.CommandID]
		if c == nil {
			return
		}
		if n.Reason == string(operator.ReasonDuplicate) {
			c.DupState = n.State
		} else if c.Refused == "" {
			c.Refused = n.Reason
		}
	}
}

var ops = []command.Op{command.OpUnlock, command.OpLock, command.OpStatus}

// send signs a command of who for lock n and publishes it until the broker
// acknowledges it (or the backend closes). It returns the record.
func (b *backend) send(who string, n int, op command.Op, probe int) *cmdRec {
	s := b.signers[who]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counter++
	now := time.Now()
	var id [8]byte
	raw, _ := hex.DecodeString(lockID(n))
	copy(id[:], raw)
	body := command.Body{LockID: id, Op: op, NotAfter: now.Add(time.Hour).Truncate(time.Second), Counter: s.counter}
	_, _ = rand.Read(body.CommandID[:])
	signed, err := command.Sign(s.key, s.cwt, body)
	if err != nil {
		panic(fmt.Errorf("sign: %w", err)) // a fixture bug, never the gateway's
	}
	c := &cmdRec{ID: hex.EncodeToString(body.CommandID[:]), Lock: n, Signer: who, Counter: s.counter, Op: op.String(),
		Probe: probe, payload: signed, Created: now}
	b.mu.Lock()
	b.cmds[c.ID] = c
	b.order = append(b.order, c)
	b.mu.Unlock()
	b.publish(c)
	return c
}

// publish sends c's bytes until the broker acknowledges them.
func (b *backend) publish(c *cmdRec) {
	for {
		b.mu.Lock()
		closed := b.closed
		c.Sends++
		b.mu.Unlock()
		if closed || b.r.ctx.Err() != nil {
			return
		}
		tok := b.pub.Publish(b.topics.Cmd, 1, false, c.payload)
		if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			b.mu.Lock()
			if c.Accepted.IsZero() {
				c.Accepted = time.Now()
			}
			b.cond.Broadcast()
			b.mu.Unlock()
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// resendStale resends, once per period, every accepted command without a
// result or refusal for longer than age: a backend's answer to a broker
// that lost an acknowledged message (mosquitto saves its persistence
// every second; a SIGKILL loses what came since). The gateway deduplicates
// by command ID.
func (b *backend) resendStale(age time.Duration) int {
	now := time.Now()
	var stale []*cmdRec
	b.mu.Lock()
	for _, c := range b.order {
		if !c.Accepted.IsZero() && len(c.Results) == 0 && c.Refused == "" && now.Sub(c.Accepted) > age &&
			now.Sub(c.Created) > age*time.Duration(c.Sends) {
			stale = append(stale, c)
		}
	}
	b.mu.Unlock()
	for _, c := range stale {
		s := b.signers[c.Signer]
		s.mu.Lock()
		b.publish(c)
		s.mu.Unlock()
	}
	return len(stale)
}

// pending returns the accepted commands with neither a result nor a refusal.
func (b *backend) pending() []*cmdRec {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*cmdRec
	for _, c := range b.order {
		if !c.Accepted.IsZero() && len(c.Results) == 0 && c.Refused == "" {
			out = append(out, c)
		}
	}
	return out
}

// waitResult waits until pred holds or timeout passes; it reports whether it held.
func (b *backend) waitFor(timeout time.Duration, pred func() bool) bool {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() { b.mu.Lock(); b.cond.Broadcast(); b.mu.Unlock() })
	defer t.Stop()
	stopTick := make(chan struct{})
	defer close(stopTick)
	go func() {
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopTick:
				return
			case <-tk.C:
				b.mu.Lock()
				b.cond.Broadcast()
				b.mu.Unlock()
			}
		}
	}()
	b.mu.Lock()
	defer b.mu.Unlock()
	for !pred() {
		if time.Now().After(deadline) || b.closed || b.r.ctx.Err() != nil {
			return false
		}
		b.cond.Wait()
	}
	return true
}

// drain waits until every accepted command has a result or a refusal, or
// deadline passes.
func (b *backend) drain(deadline time.Time) {
	b.waitFor(time.Until(deadline), func() bool {
		for _, c := range b.order {
			if !c.Accepted.IsZero() && len(c.Results) == 0 && c.Refused == "" {
				return false
			}
		}
		return true
	})
}

// snapshot returns a copy of every record.
func (b *backend) snapshot() []cmdRec {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]cmdRec, len(b.order))
	for i, c := range b.order {
		out[i] = *c
		out[i].Results = append([]resultMsg(nil), c.Results...)
	}
	return out
}
