package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gatewayd/gatewayd/internal/filetrust"
)

// DefaultPath is where systemd's unit points gatewayd.
const DefaultPath = "/etc/gatewayd/gatewayd.toml"

// Config is the whole file. Zero values are replaced by the defaults
// documented on each field; Parse returns a Config with them filled in.
type Config struct {
	// GatewayID names this gateway on the broker (topics, client ID). It
	// must equal the subject of the gateway credential. Required.
	GatewayID string `toml:"gateway_id"`

	Keys      Keys      `toml:"keys"`
	Database  Database  `toml:"database"`
	MQTT      MQTT      `toml:"mqtt"`
	Bluetooth Bluetooth `toml:"bluetooth"`
	Audit     Audit     `toml:"audit"`
	Metrics   Metrics   `toml:"metrics"`
	Admin     Admin     `toml:"admin"`
	Log       Log       `toml:"log"`
}

// Keys names the key files (see LoadKeys for their formats).
type Keys struct {
	// Credential is the gateway credential: the CWT the fleet root issued
	// (binary CBOR). Default /etc/gatewayd/gateway.cwt.
	Credential string `toml:"credential"`
	// PrivateKey is the gateway's Ed25519 private key, PEM PKCS #8 ("openssl
	// genpkey -algorithm ed25519"), mode 0600. Default
	// /etc/gatewayd/gateway.key.
	PrivateKey string `toml:"private_key"`
	// FleetRoots are PEM files of fleet root public keys (PKIX "PUBLIC
	// KEY"); several roots may be trusted at once, for a rollover. Default
	// ["/etc/gatewayd/fleet-root.pem"].
	FleetRoots []string `toml:"fleet_roots"`
}

// Database configures bonds/.
type Database struct {
	// Path of the bbolt file. Default /var/lib/gatewayd/gatewayd.db.
	Path string `toml:"path"`
	// ReplayWindow: how long command IDs are remembered. Default 24h.
	ReplayWindow Duration `toml:"replay_window"`
	// ReconcileInterval: how often bonds are reconciled with BlueZ.
	// Default 10m.
	ReconcileInterval Duration `toml:"reconcile_interval"`
	// EvictAfter: bonds of locks not seen for this long are removed.
	// Default 30d; "0" keeps them forever.
	EvictAfter *Duration `toml:"evict_after"`
}

// MQTT configures the broker session (fleet/broker) and the topics
// (fleet/operator, docs/mqtt.md).
type MQTT struct {
	// Brokers are URLs, tried in order: tcp://host:1883, ssl://host:8883.
	// Required.
	Brokers []string `toml:"brokers"`
	// TopicPrefix of every topic. Default "gatewayd/v1".
	TopicPrefix string `toml:"topic_prefix"`
	// Username, and PasswordFile (mode 0600) holding its password.
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
	// CAFile verifies the broker's certificate (ssl:// only); CertFile and
	// KeyFile are our client certificate, if the broker asks for one.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// KeepAlive: default 30s.
	KeepAlive Duration `toml:"keepalive"`
}

// Bluetooth configures bluez/ and the scheduler's link limits.
type Bluetooth struct {
	// Adapter by name ("hci0") or address. Default: the first adapter.
	Adapter string `toml:"adapter"`
	// MaxConnections the controller holds at once. Default 4.
	MaxConnections int `toml:"max_connections"`
	// AwayAfter: a lock not heard for this long is away. Default 30s.
	AwayAfter Duration `toml:"away_after"`
	// DefaultAgent: gatewayd's pairing agent asks to be bluetoothd's
	// default agent. Default true, as on a dock, where gatewayd is the
	// only program pairing; false registers the agent without claiming the
	// default, for a bluetoothd whose default agent belongs to another
	// program (the real-BlueZ tier's locks, docs/real-bluez.md). gatewayd's
	// own pairings reach its agent either way.
	DefaultAgent *bool `toml:"default_agent"`
}

// Audit configures reading the locks' audit logs (fleet.AuditOptions,
// docs/operations.md).
type Audit struct {
	// Interval: the log of a lock heard is read at least this often, in a
	// session of its own when no command needs one. Default 15m; at least
	// 10s.
	Interval Duration `toml:"interval"`
	// PagesPerSession bounds what one session reads, in pages of 16
	// entries, so reading never holds a lock's connection for long.
	// Default 4; 1..16.
	PagesPerSession int `toml:"pages_per_session"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen address of /metrics. Default "127.0.0.1:9470"; "" after
	// "off" disables it.
	Listen string `toml:"listen"`
}

// Admin configures the local admin socket (gatewayd db backup of a
// running daemon, status).
type Admin struct {
	// Socket path, mode 0600. Default /run/gatewayd/admin.sock.
	Socket string `toml:"socket"`
}

// Log configures logging to stderr (journald under systemd).
type Log struct {
	// Level: debug, info, warn or error. Default info.
	Level string `toml:"level"`
	// Format: text or json. Default text.
	Format string `toml:"format"`
}

// Load reads and parses the file at path: a regular file of at most
// MaxConfigFile bytes that only root or gatewayd's user can change, in
// directories only they can write (internal/filetrust).
func Load(path string) (*Config, error) {
	b, err := filetrust.ReadFile(path, filetrust.Public, MaxConfigFile)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

var gatewayIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Parse decodes a configuration strictly, fills in the defaults and
// validates it. Its error, ErrInvalid, names every problem Check finds.
func Parse(b []byte) (*Config, error) {
	c, ps := Check(b)
	if len(ps) > 0 {
		msgs := make([]string, len(ps))
		for i, p := range ps {
			msgs[i] = p.String()
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(msgs, "; "))
	}
	return c, nil
}

func (c *Config) defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defDur := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	def(&c.Keys.Credential, "/etc/gatewayd/gateway.cwt")
	def(&c.Keys.PrivateKey, "/etc/gatewayd/gateway.key")
	if len(c.Keys.FleetRoots) == 0 {
		c.Keys.FleetRoots = []string{"/etc/gatewayd/fleet-root.pem"}
	}
	def(&c.Database.Path, "/var/lib/gatewayd/gatewayd.db")
	defDur(&c.Database.ReplayWindow, 24*time.Hour)
	defDur(&c.Database.ReconcileInterval, 10*time.Minute)
	if c.Database.EvictAfter == nil {
		d := Duration(30 * 24 * time.Hour)
		c.Database.EvictAfter = &d
	}
	def(&c.MQTT.TopicPrefix, "gatewayd/v1")
	defDur(&c.MQTT.KeepAlive, 30*time.Second)
	if c.Bluetooth.MaxConnections == 0 {
		c.Bluetooth.MaxConnections = 4
	}
	defDur(&c.Bluetooth.AwayAfter, 30*time.Second)
	if c.Bluetooth.DefaultAgent == nil {
		t := true
		c.Bluetooth.DefaultAgent = &t
	}
	defDur(&c.Audit.Interval, 15*time.Minute)
	if c.Audit.PagesPerSession == 0 {
		c.Audit.PagesPerSession = 4
	}
	def(&c.Metrics.Listen, "127.0.0.1:9470")
	if c.Metrics.Listen == "off" {
		c.Metrics.Listen = ""
	}
	def(&c.Admin.Socket, "/run/gatewayd/admin.sock")
	def(&c.Log.Level, "info")
	def(&c.Log.Format, "text")
}

// problems are the values out of range, each naming its key and what to
// change.
func (c *Config) problems() []Problem {
	var ps []Problem
	invalid := func(key, format string, a ...any) {
		ps = append(ps, Problem{Key: key, Msg: fmt.Sprintf(format, a...)})
	}
	if !gatewayIDRE.MatchString(c.GatewayID) {
		invalid("gateway_id", "%q: want 1 to 64 of A-Z a-z 0-9 . _ - (it is the subject of the gateway credential)", c.GatewayID)
	}
	if len(c.MQTT.Brokers) == 0 {
		invalid("mqtt.brokers", "at least one broker URL is required, e.g. [\"tcp://broker.example:1883\"]")
	}
	for _, u := range c.MQTT.Brokers {
		if !strings.HasPrefix(u, "tcp://") && !strings.HasPrefix(u, "ssl://") && !strings.HasPrefix(u, "tls://") &&
			!strings.HasPrefix(u, "mqtt://") && !strings.HasPrefix(u, "mqtts://") && !strings.HasPrefix(u, "ws://") && !strings.HasPrefix(u, "wss://") {
			invalid("mqtt.brokers", "%q: want tcp://, ssl://, tls://, mqtt://, mqtts://, ws:// or wss://", u)
		}
	}
	if p := c.MQTT.TopicPrefix; strings.ContainsAny(p, "+#\x00") || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		invalid("mqtt.topic_prefix", "%q: no wildcards (+ #), no leading or trailing /", p)
	}
	if (c.MQTT.CertFile == "") != (c.MQTT.KeyFile == "") {
		invalid("mqtt.cert_file", "cert_file and key_file go together")
	}
	if c.MQTT.PasswordFile != "" && c.MQTT.Username == "" {
		invalid("mqtt.password_file", "a password needs mqtt.username")
	}
	if c.MQTT.KeepAlive < Duration(time.Second) {
		invalid("mqtt.keepalive", "%v: at least 1s", c.MQTT.KeepAlive)
	}
	if n := c.Bluetooth.MaxConnections; n < 1 || n > 32 {
		invalid("bluetooth.max_connections", "%d: want 1..32 (a Pi's controller holds about 4 to 10)", n)
	}
	if c.Database.ReplayWindow < Duration(time.Hour) {
		invalid("database.replay_window", "%v: at least 1h, and at least the longest validity of a signed command", c.Database.ReplayWindow)
	}
	if *c.Database.EvictAfter < 0 {
		invalid("database.evict_after", "negative")
	}
	if c.Database.ReconcileInterval < Duration(time.Second) {
		invalid("database.reconcile_interval", "%v: at least 1s", c.Database.ReconcileInterval)
	}
	if c.Audit.Interval < Duration(10*time.Second) {
		invalid("audit.interval", "%v: at least 10s", c.Audit.Interval)
	}
	if n := c.Audit.PagesPerSession; n < 1 || n > 16 {
		invalid("audit.pages_per_session", "%d: want 1..16 (pages of 16 entries)", n)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		invalid("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		invalid("log.format", "%q: want text or json", c.Log.Format)
	}
	for _, kp := range [][2]string{
		{"keys.credential", c.Keys.Credential}, {"keys.private_key", c.Keys.PrivateKey},
		{"database.path", c.Database.Path}, {"admin.socket", c.Admin.Socket},
	} {
		key, p := kp[0], kp[1]
		if !strings.HasPrefix(p, "/") {
			invalid(key, "%q: want an absolute path", p)
		}
	}
	return ps
}

// Duration is a time.Duration written as Go writes one ("90s", "24h"),
// plus a days suffix ("30d").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return fmt.Errorf("duration %q: want a whole number of days, e.g. 30d", s)
		}
		*d = Duration(time.Duration(n) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want e.g. 90s, 10m, 24h or 30d", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }
