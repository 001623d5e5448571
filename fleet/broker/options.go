package broker

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"
)

// MaxPacketSize is the broker's packet size limit the gateway expects
// (deploy/mosquitto's max_packet_size): a message received above it means
// the broker has no such limit, which the session logs and counts
// (gatewayd_mqtt_messages_oversized_total). MQTT 3.1.1 cannot tell the
// broker a limit of the client's; the broker must enforce one.
const MaxPacketSize = 64 << 10

// Options configures a Session. Zero durations take the defaults named.
type Options struct {
	// Brokers are the broker URLs paho tries in order: "tcp://host:1883",
	// "ssl://host:8883" (also "tls://", "mqtt://", "mqtts://"), "ws://",
	// "wss://" and "unix:///path". At least one.
	Brokers []string
	// ClientID identifies the gateway's persistent session on the broker
	// (the daemon uses "gatewayd-"+gatewayID). It must be unique across all
	// gateways: a second client with the same ID takes the session over.
	ClientID string
	// Username and Password, optional. The password is never logged.
	Username string
	Password string
	// TLSConfig for ssl:// (and wss://) brokers; nil = Go's defaults.
	TLSConfig *tls.Config

	// Subscribe are topic filters subscribed at QoS 1 on every connect.
	Subscribe []string
	// OnMessage receives every message, one at a time and in arrival order,
	// on the session's delivery goroutine. It must not block for long; it
	// may call Publish and Ack. Required when Subscribe is not empty.
	OnMessage func(*Message)
	// MaxQueued caps the QoS 0 messages received but not yet handed to
	// OnMessage (default 1000); beyond it a QoS 0 message is dropped and
	// counted. QoS 1 messages are never dropped: the broker sends at most
	// its in-flight window (mosquitto's max_inflight_messages) of them
	// before a PUBACK, which bounds them.
	MaxQueued int

	// StatusTopic, optional: on every connect the session publishes
	// OnlinePayload to it (retained, QoS 1); the Will is OfflinePayload
	// (retained, QoS 1), and Close publishes OfflinePayload before it
	// disconnects.
	StatusTopic    string
	OnlinePayload  []byte // default "online"
	OfflinePayload []byte // default "offline"
	// ClosePayload, optional, makes the offline status Close publishes
	// (the Will is fixed at connect; this one can say when the stop was).
	// Nil publishes OfflinePayload.
	ClosePayload func() []byte

	// OnReady, optional, is called on a goroutine of the session's each
	// time a connection became ready (subscribed, online status
	// published): at Start and after every reconnect. It must not block
	// for long. The daemon republishes its lock presence from it
	// (docs/scaling.md).
	OnReady func()

	// KeepAlive is the MQTT keepalive (default 30 s; paho pings at this
	// interval and drops a connection whose ping is not answered).
	KeepAlive time.Duration
	// ConnectTimeout bounds one connection attempt: dial, TLS and CONNACK
	// (default 10 s).
	ConnectTimeout time.Duration
	// WriteTimeout bounds one network write (default 10 s).
	WriteTimeout time.Duration
	// MaxReconnectInterval caps the backoff between connection attempts
	// (default 1 s), at Start and after a lost connection: the first
	// attempt goes at once, the next wait a jittered delay doubling from
	// 100 ms up to it, and a successful connection starts again from
	// nothing. It is about how long the gateway stays disconnected after
	// the broker is back, so keep it short.
	MaxReconnectInterval time.Duration
	// CloseTimeout bounds Close's offline publish and its DISCONNECT
	// (default 5 s).
	CloseTimeout time.Duration

	// Logger, nil = discard. Payloads and the password are never logged.
	Logger *slog.Logger

	// wrapConn is a test seam: when set, the session dials tcp:// brokers
	// itself and hands paho wrapConn(conn).
	wrapConn func(net.Conn) net.Conn
}

// DefaultMaxReconnectInterval is the default of
// Options.MaxReconnectInterval.
const DefaultMaxReconnectInterval = time.Second

func (o *Options) setDefaults() {
	if o.MaxQueued == 0 {
		o.MaxQueued = 1000
	}
	if o.OnlinePayload == nil {
		o.OnlinePayload = []byte("online")
	}
	if o.OfflinePayload == nil {
		o.OfflinePayload = []byte("offline")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.KeepAlive, 30*time.Second)
	def(&o.ConnectTimeout, 10*time.Second)
	def(&o.WriteTimeout, 10*time.Second)
	def(&o.MaxReconnectInterval, DefaultMaxReconnectInterval)
	def(&o.CloseTimeout, 5*time.Second)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

func (o *Options) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
	}
	if len(o.Brokers) == 0 {
		return bad("no broker URL")
	}
	for _, b := range o.Brokers {
		u, err := url.Parse(b)
		if err != nil {
			return bad("broker URL %q: %v", b, err)
		}
		switch u.Scheme {
		case "tcp", "mqtt", "ssl", "tls", "mqtts", "tcps", "ws", "wss", "unix":
		default:
			return bad("broker URL %q: scheme %q (want tcp, ssl, tls, mqtt, mqtts, ws, wss or unix)", b, u.Scheme)
		}
		if u.User != nil {
			return bad("broker URL %q has credentials: use Options.Username and Password", u.Redacted())
		}
	}
	if o.ClientID == "" {
		return bad("no client ID")
	}
	if len(o.ClientID) > 65535 || !validUTF8NoNUL(o.ClientID) {
		return bad("client ID is not a valid MQTT string")
	}
	for _, f := range o.Subscribe {
		if err := validFilter(f); err != nil {
			return bad("subscription %q: %v", f, err)
		}
	}
	if len(o.Subscribe) > 0 && o.OnMessage == nil {
		return bad("Subscribe without OnMessage")
	}
	if o.StatusTopic != "" {
		if err := validTopic(o.StatusTopic); err != nil {
			return bad("status topic %q: %v", o.StatusTopic, err)
		}
	}
	if o.MaxQueued < 0 || o.KeepAlive < 0 || o.ConnectTimeout < 0 || o.WriteTimeout < 0 ||
		o.MaxReconnectInterval < 0 || o.CloseTimeout < 0 {
		return bad("negative limit")
	}
	if o.KeepAlive > 0 && o.KeepAlive < time.Second {
		return bad("keepalive %v is under 1 s (MQTT counts whole seconds)", o.KeepAlive)
	}
	return nil
}

func validUTF8NoNUL(s string) bool {
	return !strings.ContainsRune(s, 0) && strings.ToValidUTF8(s, "\uFFFD") == s
}

// validTopic checks a topic name to publish to.
func validTopic(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("empty")
	case len(t) > 65535 || !validUTF8NoNUL(t):
		return fmt.Errorf("not a valid MQTT string")
	case strings.ContainsAny(t, "+#"):
		return fmt.Errorf("wildcard in a topic name")
	}
	return nil
}

// validFilter checks a subscription filter: '+' only as a whole level, '#'
// only as the whole last level.
func validFilter(f string) error {
	if f == "" || len(f) > 65535 || !validUTF8NoNUL(f) {
		return fmt.Errorf("not a valid topic filter")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("'#' must be the last level on its own")
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("'+' must be a level on its own")
		}
	}
	return nil
}
