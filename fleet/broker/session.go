package broker

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatewayd/gatewayd/internal/backoff"
)

// Session is the gateway's MQTT session. Its methods are safe for
// concurrent use.
type Session struct {
	opts   Options
	log    *slog.Logger
	client mqtt.Client
	store  *trackStore
	m      *metrics
	pace   *pacer

	// gen counts connection attempts; a message belongs to the connection
	// it arrived on, and paho drops the PUBACK of a message from an earlier
	// connection (its router has gone).
	gen atomic.Uint64

	ctx    context.Context // the session's lifetime; cancelled by Close
	cancel context.CancelFunc

	mu      sync.Mutex
	started bool
	closed  bool
	ready   bool          // connected, subscribed, online published
	readyCh chan struct{} // closed and replaced whenever ready changes
	wg      sync.WaitGroup

	closing   chan struct{}
	closeOnce sync.Once

	pubMu sync.Mutex // see trackStore

	qmu   sync.Mutex
	queue []*Message
	q0    int // QoS 0 messages in queue
	qsig  chan struct{}

	ackMu   sync.Mutex
	pending []*Message // delivered QoS 1 messages whose PUBACK is not released, in arrival order

	// Session takeover detection: see checkTakeover.
	attempts  atomic.Int64 // connection attempts since the last connect
	tkMu      sync.Mutex
	lostAt    time.Time // the last connection loss
	lostEOF   bool      // it was the broker closing the connection
	connAt    time.Time // the last connect
	connFirst bool      // it succeeded at the first attempt
	lossSeen  bool      // the last loss was already judged
	takeovers int       // suspected so far
}

// Message is one message from the broker.
type Message struct {
	Topic     string
	Payload   []byte
	QoS       byte
	Duplicate bool   // the broker may have sent it before (a redelivery)
	Retained  bool   // sent from the broker's retained store on subscribe
	PacketID  uint16 // the MQTT packet identifier (0 for QoS 0)

	s     *Session
	pm    mqtt.Message
	gen   uint64
	recv  time.Time // when paho handed it over, for the age of the oldest pending PUBACK
	acked bool      // guarded by s.ackMu
}

// Ack acknowledges the message: the broker will not redeliver it. Call it
// once the message is durable, in delivery order; the session releases the
// PUBACK only after those of all earlier messages of the same connection.
// Ack is idempotent and safe from any goroutine; it does nothing for QoS 0
// and, after a reconnect, for a message of the lost connection (the broker
// redelivers that one).
func (m *Message) Ack() { m.s.ack(m) }

// New validates opts and returns a session that is not yet connected.
func New(opts Options) (*Session, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	opts.Brokers = append([]string(nil), opts.Brokers...)
	opts.Subscribe = append([]string(nil), opts.Subscribe...)
	s := &Session{
		opts:    opts,
		log:     opts.Logger.With("client_id", opts.ClientID),
		store:   newTrackStore(),
		readyCh: make(chan struct{}),
		closing: make(chan struct{}),
		qsig:    make(chan struct{}, 1),
	}
	s.m = newMetrics(s.unackedStats)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.pace = newPacer(opts.MaxReconnectInterval, s.closing)

	po := mqtt.NewClientOptions()
	for _, b := range opts.Brokers {
		po.AddBroker(b)
	}
	po.SetClientID(opts.ClientID)
	po.SetUsername(opts.Username)
	po.SetPassword(opts.Password)
	if opts.TLSConfig != nil {
		po.SetTLSConfig(opts.TLSConfig)
	}
	po.SetProtocolVersion(4) // MQTT 3.1.1, no fallback to 3.1
	po.SetCleanSession(false)
	po.SetOrderMatters(true)
	po.SetAutoAckDisabled(true)
	po.SetResumeSubs(false) // the session subscribes on every connect itself
	po.SetStore(s.store)
	po.SetKeepAlive(opts.KeepAlive)
	po.SetConnectTimeout(opts.ConnectTimeout)
	po.SetWriteTimeout(opts.WriteTimeout)
	// The waits between connection attempts are the pacer's (see
	// reconnect.go), paho's own next to nothing.
	po.SetAutoReconnect(true)
	po.SetMaxReconnectInterval(pahoSleep)
	po.SetConnectRetry(true)
	po.SetConnectRetryInterval(pahoSleep)
	po.SetConnectionNotificationHandler(s.pace.notify)
	po.SetDefaultPublishHandler(s.onPublish)
	po.SetOnConnectHandler(s.onConnect)
	po.SetConnectionLostHandler(s.onConnectionLost)
	po.SetConnectionAttemptHandler(func(broker *url.URL, cfg *tls.Config) *tls.Config {
		s.gen.Add(1)
		s.attempts.Add(1)
		s.log.Debug("mqtt connecting", "broker", broker.Redacted())
		return cfg
	})
	if opts.StatusTopic != "" {
		po.SetBinaryWill(opts.StatusTopic, opts.OfflinePayload, 1, true)
	}
	if opts.wrapConn != nil {
		po.SetCustomOpenConnectionFn(func(u *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
			if u.Scheme != "tcp" && u.Scheme != "mqtt" {
				return nil, fmt.Errorf("broker: test dialer supports tcp:// only, not %q", u.Scheme)
			}
			d := net.Dialer{Timeout: o.ConnectTimeout}
			c, err := d.Dial("tcp", u.Host)
			if err != nil {
				return nil, err
			}
			return opts.wrapConn(c), nil
		})
	}
	s.client = mqtt.NewClient(po)
	return s, nil
}

// Collector returns the session's Prometheus metrics
// (gatewayd_mqtt_*), to register once.
func (s *Session) Collector() prometheus.Collector { return s.m }

// Start launches the connection and returns at once (ctx only guards the
// call): a broker that is down at boot does not keep the daemon from
// starting. The session connects at once, and whenever the connection is
// lost it tries again at once, then with a jittered backoff from 100 ms up
// to MaxReconnectInterval, which a successful connection resets. Use
// WaitConnected to wait for the connection.
func (s *Session) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("broker: start: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return ErrStarted
	}
	s.started = true
	s.warnBrokerSetup()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.deliver()
	}()
	s.client.Connect() // with ConnectRetry its token completes only once connected or closed
	return nil
}

// warnBrokerSetup warns about what the session can tell of a broker set
// up without the protections docs/mqtt.md asks for: without a client
// certificate or a username, the broker cannot know which gateway this
// is, so it can neither keep others off its topics nor tie the client ID
// to it (session takeover).
func (s *Session) warnBrokerSetup() {
	hasCert := s.opts.TLSConfig != nil && (len(s.opts.TLSConfig.Certificates) > 0 || s.opts.TLSConfig.GetClientCertificate != nil)
	if !hasCert && s.opts.Username == "" {
		s.log.Warn("mqtt: no client certificate and no username: the broker cannot authenticate this gateway, so any client may read its commands, publish junk on its command topic or take its session over; use the broker configuration of deploy/mosquitto (docs/mqtt.md, \"The broker\")",
			"reason", "broker_unauthenticated")
	}
}

// Connected reports whether the session is connected, subscribed and has
// published its online status.
func (s *Session) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// WaitConnected waits until the session is connected and subscribed (see
// Connected), ctx ends, or the session is closed.
func (s *Session) WaitConnected(ctx context.Context) error {
	for {
		s.mu.Lock()
		ready, ch, started, closed := s.ready, s.readyCh, s.started, s.closed
		s.mu.Unlock()
		switch {
		case closed:
			return ErrClosed
		case !started:
			return ErrNotStarted
		case ready:
			return nil
		}
		select {
		case <-ch:
		case <-s.closing:
		case <-ctx.Done():
			return fmt.Errorf("broker: wait for connection: %w", ctx.Err())
		}
	}
}

// Publish publishes payload to topic with QoS 1 and returns nil once the
// broker acknowledged it (PUBACK). While the session is disconnected the
// message waits for the reconnection. ctx must have a deadline
// (ErrNoDeadline); when it ends first Publish returns ErrNotAcknowledged
// wrapping ctx's error, and withdraws the message so that it is not resent
// after a reconnect (one already on the wire may still arrive: retry, and let
// the receiver deduplicate). Publish copies payload.
func (s *Session) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	if _, ok := ctx.Deadline(); !ok {
		return fmt.Errorf("broker: publish to %q: %w", topic, ErrNoDeadline)
	}
	if err := validTopic(topic); err != nil {
		return fmt.Errorf("broker: publish to %q: %w: %v", topic, ErrInvalidTopic, err)
	}
	s.mu.Lock()
	started, closed := s.started, s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return fmt.Errorf("broker: publish to %q: %w", topic, ErrClosed)
	case !started:
		return fmt.Errorf("broker: publish to %q: %w", topic, ErrNotStarted)
	}
	// Hand paho the message only once connected and subscribed: paho's
	// resume of its store right after a (re)connect sets the DUP flag on
	// every stored packet while its writer may be sending a packet
	// published during the connect (a data race in paho v1.5.1, issue
	// eclipse-paho/paho.mqtt.golang#703, seen here under -race).
	if err := s.WaitConnected(ctx); err != nil {
		s.m.publishFailures.Inc()
		if errors.Is(err, ErrClosed) {
			return fmt.Errorf("broker: publish to %q: %w", topic, ErrClosed)
		}
		return fmt.Errorf("broker: publish to %q: %w: %w", topic, ErrNotAcknowledged, ctx.Err())
	}
	return s.publish(ctx, topic, payload, retain, s.closing)
}

// publish is Publish without the checks; closing (nil for Close's own
// offline status) ends the wait.
func (s *Session) publish(ctx context.Context, topic string, payload []byte, retain bool, closing <-chan struct{}) error {
	buf := bytes.Clone(payload) // paho keeps the slice until the PUBACK
	if buf == nil {
		buf = []byte{}
	}
	e := &pubEntry{acked: make(chan struct{})}
	s.pubMu.Lock()
	s.store.expect(e)
	tok := s.client.Publish(topic, 1, retain, buf)
	stored := s.store.done()
	s.pubMu.Unlock()
	if !stored { // refused before it was stored: the token holds the error
		<-tok.Done()
		s.m.publishFailures.Inc()
		err := tok.Error()
		if err == nil {
			err = errors.New("paho did not store the message")
		}
		return fmt.Errorf("broker: publish to %q: %w: %w", topic, ErrPublish, err)
	}
	// The token's own outcome is not trusted (see trackStore): a write
	// error or timeout leaves the message stored, and paho resends it after
	// the reconnect, which completes the token without error long before
	// the PUBACK.
	select {
	case <-e.acked:
		s.m.publishes.Inc()
		return nil
	case <-ctx.Done():
		s.store.withdraw(e)
		s.m.publishFailures.Inc()
		return fmt.Errorf("broker: publish to %q: %w: %w", topic, ErrNotAcknowledged, ctx.Err())
	case <-closing:
		s.store.withdraw(e)
		s.m.publishFailures.Inc()
		return fmt.Errorf("broker: publish to %q: %w", topic, ErrClosed)
	}
}

// Close publishes the offline status (if connected and StatusTopic is set),
// disconnects cleanly (so the broker does not publish the Will), and waits
// for the goroutines the session started, OnMessage included: do not call
// Close from OnMessage. Both are bounded by Options.CloseTimeout. Messages
// delivered but not acknowledged are redelivered at the next session with
// the same ClientID. Close is idempotent and always returns nil.
//
// paho may keep a goroutine of its own alive after Close while a
// reconnection attempt finishes (at most ConnectTimeout plus one backoff
// interval).
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		started := s.started
		s.mu.Unlock()
		close(s.closing)
		s.cancel() // ends afterConnect's subscribe and online publish
		if started {
			deadline := time.Now().Add(s.opts.CloseTimeout)
			if s.opts.StatusTopic != "" && s.client.IsConnectionOpen() {
				ctx, cancel := context.WithDeadline(context.Background(), deadline)
				payload := s.opts.OfflinePayload
				if s.opts.ClosePayload != nil {
					payload = s.opts.ClosePayload()
				}
				if err := s.publish(ctx, s.opts.StatusTopic, payload, true, nil); err != nil {
					s.log.Warn("mqtt offline status not acknowledged before close", "err", err)
				}
				cancel()
			}
			quiesce := max(time.Until(deadline), 100*time.Millisecond)
			s.client.Disconnect(uint(quiesce.Milliseconds()))
		}
		s.wg.Wait()
		s.setReady(false)
		s.log.Info("mqtt session closed")
	})
	return nil
}

func (s *Session) setReady(ready bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed && ready {
		return
	}
	if ready != s.ready {
		s.ready = ready
		close(s.readyCh)
		s.readyCh = make(chan struct{})
	}
	if ready {
		s.m.connected.Set(1)
	} else {
		s.m.connected.Set(0)
	}
}

// goTracked runs f in a goroutine Close waits for, unless closed.
func (s *Session) goTracked(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// onConnect runs in a goroutine of paho's after every connect. Subscribing
// and waiting for the SUBACK happen in a goroutine of ours: paho's docs
// warn that waiting in OnConnect can deadlock.
func (s *Session) onConnect(mqtt.Client) {
	s.pace.connected()
	s.m.connects.Inc()
	s.log.Info("mqtt connected")
	first := s.attempts.Swap(0) == 1
	s.tkMu.Lock()
	s.connAt, s.connFirst = time.Now(), first
	s.checkTakeover()
	s.tkMu.Unlock()
	s.goTracked(s.afterConnect)
}

func (s *Session) afterConnect() {
	gen := s.gen.Load()
	if len(s.opts.Subscribe) > 0 && !s.subscribeAll(gen) {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.ConnectTimeout+s.opts.WriteTimeout)
	defer cancel()
	if s.opts.StatusTopic != "" {
		if err := s.publish(ctx, s.opts.StatusTopic, s.opts.OnlinePayload, true, s.closing); err != nil {
			s.log.Warn("mqtt online status not published", "err", err)
		}
	}
	ready := s.client.IsConnectionOpen()
	s.setReady(ready)
	if ready && s.opts.OnReady != nil {
		s.opts.OnReady()
	}
}

// subscribeAll subscribes to every filter and, until the broker grants
// them all, tries again after a backoff (100 ms doubling to
// MaxReconnectInterval) for as long as this connection (gen) lasts. A
// clustered broker refuses a subscription (SUBACK 0x80) or leaves it
// unanswered while it elects a leader after a node died
// (docs/scaling.md): a gateway that gave up then would hear no command
// until its next reconnect. It reports whether all were granted; false
// when the connection was lost or the session closes first.
func (s *Session) subscribeAll(gen uint64) bool {
	filters := make(map[string]byte, len(s.opts.Subscribe))
	for _, f := range s.opts.Subscribe {
		filters[f] = 1
	}
	b := backoff.Backoff{Min: min(minReconnectInterval, s.opts.MaxReconnectInterval), Max: s.opts.MaxReconnectInterval}
	for {
		if s.subscribeOnce(filters) {
			return true
		}
		if err := b.Wait(s.ctx); err != nil {
			return false
		}
		if gen != s.gen.Load() || !s.client.IsConnectionOpen() {
			return false // the next connection subscribes again
		}
		s.log.Info("mqtt subscribing again")
	}
}

// subscribeOnce sends one SUBSCRIBE for filters and reports whether the
// SUBACK granted every one.
func (s *Session) subscribeOnce(filters map[string]byte) bool {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.ConnectTimeout+s.opts.WriteTimeout)
	defer cancel()
	// nil callback: every message goes to the default handler, also
	// those the persistent session delivers before the SUBACK.
	tok := s.client.SubscribeMultiple(filters, nil)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		s.m.subscribeFailures.Add(float64(len(filters)))
		s.log.Warn("mqtt subscribe: no SUBACK", "err", fmt.Errorf("%w: %w", ErrSubscribe, ctx.Err()))
		return false
	}
	if err := tok.Error(); err != nil {
		s.m.subscribeFailures.Add(float64(len(filters)))
		s.log.Error("mqtt subscribe failed", "err", fmt.Errorf("%w: %w", ErrSubscribe, err))
		return false
	}
	ok := true
	for f, code := range tok.(*mqtt.SubscribeToken).Result() {
		if code == 0x80 {
			ok = false
			s.m.subscribeFailures.Inc()
			s.log.Error("mqtt subscription refused by the broker", "filter", f, "err", ErrSubscribe)
		}
	}
	return ok
}

func (s *Session) onConnectionLost(_ mqtt.Client, err error) {
	s.m.connectionLost.Inc()
	s.log.Warn("mqtt connection lost; reconnecting", "err", err)
	s.tkMu.Lock()
	s.lostAt, s.lostEOF, s.lossSeen = time.Now(), errors.Is(err, io.EOF), false
	s.checkTakeover()
	s.tkMu.Unlock()
	if !s.client.IsConnectionOpen() { // a reconnect may already have won the race
		s.setReady(false)
	}
}

// checkTakeover counts a suspected session takeover: the broker closed
// the connection (EOF, no network error) and accepted the very next
// connection attempt at once. That is what a broker does when another
// client connects with this ClientID (MQTT 3.1.1 section 3.1.4): it
// closes the older connection; a broker that stops refuses the next
// attempt, and a network fault is not an EOF. paho runs the two handlers
// on goroutines of their own, so whichever comes second decides; the
// loss handler starts long before the reconnect's round trip ends, and
// should it not, a takeover goes uncounted (never a restart counted).
// Called with tkMu.
func (s *Session) checkTakeover() {
	if s.lossSeen || !s.lostEOF || !s.connFirst || s.lostAt.IsZero() || s.connAt.IsZero() {
		return
	}
	// paho sleeps before the first attempt when connections keep being
	// lost (backoff up to MaxReconnectInterval): the window allows that.
	window := s.opts.MaxReconnectInterval + s.opts.ConnectTimeout + 5*time.Second
	if d := s.connAt.Sub(s.lostAt); d < 0 || d > window {
		return // the connect is older than the loss, or came late
	}
	s.lossSeen = true
	s.takeovers++
	s.m.takeovers.Inc()
	s.log.Warn("mqtt connection closed by the broker and accepted again at once: another client may be using this gateway's client ID (session takeover); the broker must authenticate each gateway and tie its client ID to it (docs/mqtt.md)",
		"reason", "session_takeover", "suspected_total", s.takeovers)
}

// onPublish is paho's message handler. It runs on paho's incoming
// goroutine and must never block: it queues the message for deliver.
func (s *Session) onPublish(_ mqtt.Client, pm mqtt.Message) {
	s.m.received.Inc()
	if n := len(pm.Payload()); n > MaxPacketSize {
		// paho has read it whole already: only the broker can stop it.
		s.m.oversized.Inc()
		s.log.Warn("mqtt message larger than the broker's packet limit should allow: the broker has no max_packet_size (deploy/mosquitto), so a client can make this gateway buffer up to 256 MB per message",
			"reason", "broker_no_size_limit", "topic", pm.Topic(), "payload_size", n, "limit", MaxPacketSize)
	}
	m := &Message{
		Topic:     pm.Topic(),
		Payload:   pm.Payload(), // paho decodes every packet into a fresh slice
		QoS:       pm.Qos(),
		Duplicate: pm.Duplicate(),
		Retained:  pm.Retained(),
		PacketID:  pm.MessageID(),
		s:         s,
		pm:        pm,
		gen:       s.gen.Load(),
		recv:      time.Now(),
	}
	s.qmu.Lock()
	// Only QoS 0 messages are ever dropped: they hold no PUBACK, so a
	// flood of them cannot hold up the acknowledgement of anything else.
	// QoS 1 messages are bounded by the broker's in-flight window
	// (max_inflight_messages): the broker sends the next one only after
	// a PUBACK, so it holds the rest of a flood in its own queue. Dropping
	// one would hold back, until the next reconnect, the PUBACK of every
	// message after it (PUBACKs are released in order).
	if m.QoS == 0 {
		if s.q0 >= s.opts.MaxQueued {
			s.qmu.Unlock()
			s.m.dropped.Inc()
			s.log.Warn("mqtt queue full: QoS 0 message dropped (QoS 0 has no redelivery; send commands with QoS 1)",
				"topic", m.Topic, "max_queued", s.opts.MaxQueued)
			return
		}
		s.q0++
	}
	s.queue = append(s.queue, m)
	s.qmu.Unlock()
	select {
	case s.qsig <- struct{}{}:
	default:
	}
}

// deliver hands queued messages to OnMessage, one at a time, in order.
func (s *Session) deliver() {
	for {
		s.qmu.Lock()
		var m *Message
		if len(s.queue) > 0 {
			m = s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			if m.QoS == 0 {
				s.q0--
			}
		}
		s.qmu.Unlock()
		if m == nil {
			select {
			case <-s.qsig:
				continue
			case <-s.closing:
				return
			}
		}
		select {
		case <-s.closing:
			return // not acknowledged: redelivered to the next session
		default:
		}
		if m.gen != s.gen.Load() {
			// Its connection is gone: an Ack could not reach the broker,
			// which redelivers the message on the new connection.
			s.log.Debug("mqtt message of a lost connection discarded", "topic", m.Topic)
			continue
		}
		if m.QoS > 0 {
			s.ackMu.Lock()
			for len(s.pending) > 0 && s.pending[0].gen != m.gen {
				s.pending[0] = nil // of a lost connection
				s.pending = s.pending[1:]
			}
			s.pending = append(s.pending, m)
			s.ackMu.Unlock()
		}
		if s.opts.OnMessage != nil {
			s.opts.OnMessage(m)
		}
	}
}

// unackedStats returns how many QoS 1 messages of the current connection
// were delivered and wait for their PUBACK, and how long ago the oldest
// of them arrived (0 when none).
func (s *Session) unackedStats() (n int, oldest time.Duration) {
	gen := s.gen.Load()
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	for _, m := range s.pending {
		if m.gen != gen {
			continue
		}
		if n == 0 {
			oldest = time.Since(m.recv)
		}
		n++
	}
	return n, oldest
}

func (s *Session) ack(m *Message) {
	if m.QoS == 0 {
		return
	}
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	if m.acked {
		return
	}
	m.acked = true
	for len(s.pending) > 0 && s.pending[0].acked {
		h := s.pending[0]
		s.pending[0] = nil
		s.pending = s.pending[1:]
		// paho's Ack is safe from any goroutine (a sync.Once, then a send
		// to its router's channel under a read lock); it drops the PUBACK
		// of a message from a lost connection. ackMu keeps the order.
		h.pm.Ack()
		if h.gen == s.gen.Load() {
			s.m.acked.Inc()
		}
	}
}
