// Package daemon assembles gatewayd from its parts and runs them: the
// database (bonds), the BlueZ client and agent (bluez), the link to locks
// (internal/bluelink), the scheduler (fleet), the MQTT session
// (fleet/broker), the operators' intake and outbox (fleet/operator), bond
// reconciliation, the metrics endpoint, the admin socket and systemd's
// notify protocol. It owns the start and stop order and nothing else:
// every behaviour lives in the packages it wires.
//
// It may import every package of the module; only cmd/ imports it.
package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet"
	"github.com/gatewayd/gatewayd/fleet/broker"
	"github.com/gatewayd/gatewayd/fleet/operator"
	"github.com/gatewayd/gatewayd/internal/admin"
	"github.com/gatewayd/gatewayd/internal/bluelink"
	"github.com/gatewayd/gatewayd/systemd"
)

// ErrConfig is returned by Run when the configuration, the keys or the
// database are refused: restarting will not help, so the command exits
// with EX_CONFIG (78) and systemd's RestartPreventExitStatus stops.
var ErrConfig = errors.New("refused to start")

// Options configures Run. Config is required; the rest are seams.
type Options struct {
	Config *config.Config
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Bus is the system bus connection; nil connects to
	// $DBUS_SYSTEM_BUS_ADDRESS (or the default system bus). Run closes
	// neither a given nor its own connection before its parts stopped.
	Bus *dbus.Conn
	// Notifier tells systemd; nil reads $NOTIFY_SOCKET.
	Notifier *systemd.Notifier
	// Registry receives the metrics; nil makes one.
	Registry *prometheus.Registry
	// OnReady, if set, is called once every part is up, with the
	// metrics listener's address ("" when off).
	OnReady func(metricsAddr string)
	// Adapter are extra adapter options for tests (sweep interval,
	// wedge detection); Name, AwayTimeout and Logger come from Config.
	Adapter bluez.Options
}

// Run runs the daemon until ctx ends (a clean stop, nil) or a part fails
// for good.
func Run(ctx context.Context, opts Options) (err error) {
	cfg := opts.Config
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	notify := opts.Notifier
	if notify == nil {
		if notify, err = systemd.FromEnv(); err != nil {
			return err
		}
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}

	// 1. Keys, topics and the database: refusals here are final.
	keys, err := config.LoadKeys(cfg.Keys, cfg.GatewayID, now())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	topics, err := operator.NewTopics(cfg.MQTT.TopicPrefix, cfg.GatewayID)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	tlsCfg, password, err := mqttSecrets(cfg.MQTT)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	db, err := bonds.Open(cfg.Database.Path, bonds.Options{Logger: log, ReplayWindow: cfg.Database.ReplayWindow.D(), Now: now})
	if err != nil {
		if errors.Is(err, bonds.ErrLocked) {
			return fmt.Errorf("%w (is another gatewayd running?)", err)
		}
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	// The fleet revocation list, kept beside the database (docs/mqtt.md).
	revs, err := operator.NewRevocations(operator.RevocationsOptions{Roots: keys.Roots,
		Path: filepath.Join(filepath.Dir(cfg.Database.Path), "revocations.cbor"), OwnKID: keys.Cert.KID,
		GatewayID: cfg.GatewayID, Logger: log})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}

	// 2. BlueZ: the adapter, our agent, and the link to locks.
	conn := opts.Bus
	if conn == nil {
		// Not tied to ctx: the parts stop in order after ctx ends, and the
		// adapter still talks to bluetoothd while it stops (StopDiscovery).
		if conn, err = dbus.ConnectSystemBus(); err != nil {
			return fmt.Errorf("system bus: %w", err)
		}
		defer conn.Close()
	}
	aopts := opts.Adapter
	aopts.Adapter, aopts.AwayTimeout, aopts.Logger, aopts.Now = cfg.Bluetooth.Adapter, cfg.Bluetooth.AwayAfter.D(), log, now
	ad, err := bluez.Open(ctx, conn, aopts)
	if err != nil {
		return fmt.Errorf("bluetooth adapter: %w", err)
	}
	defer func() { err = errors.Join(err, ad.Close()) }()
	agent, err := bluez.NewAgent(ctx, conn, bluez.AgentOptions{Dispatcher: ad.Dispatcher(), Logger: log})
	if err != nil {
		return fmt.Errorf("bluetooth agent: %w", err)
	}
	defer func() { err = errors.Join(err, agent.Close()) }()
	gate := newBondGate(ctx, db, now, log.With("subsystem", "bonding"))
	link, err := bluelink.New(bluelink.Options{Adapter: ad, Logger: log, Channel: channel.Config{
		Cert: keys.Cert, Key: keys.Key,
		Verifier: &cred.Verifier{Roots: keys.Roots, Kinds: []cred.Kind{cred.KindLock}, Now: now},
	}, Conn: conn, Agent: agent, ShouldBond: gate.shouldBond, OnBond: gate.onBond,
		OnVerified: gate.onVerified, OnRefused: gate.onRefused, Address: verifiedAddress(ctx, db), Now: now,
		Revocations: revs.Current})
	if err != nil {
		return err
	}

	// 3. The MQTT session; the outbox, the scheduler and the intake.
	var intake atomic.Pointer[operator.Intake]
	status := func(state string) []byte {
		b, _ := json.Marshal(map[string]any{"state": state, "gateway_id": cfg.GatewayID, "version": version(), "since": now().UTC()})
		return b
	}
	sess, err := broker.New(broker.Options{
		Brokers: cfg.MQTT.Brokers, ClientID: "gatewayd-" + cfg.GatewayID,
		Username: cfg.MQTT.Username, Password: password, TLSConfig: tlsCfg,
		Subscribe: []string{topics.Cmd, topics.Revocations},
		OnMessage: func(m *broker.Message) {
			if m.Topic == topics.Revocations {
				revs.Handle(operator.Message{Payload: m.Payload, ReceivedAt: now(), Ack: m.Ack})
				return
			}
			if in := intake.Load(); in != nil {
				in.Enqueue(operator.Message{Payload: m.Payload, Duplicate: m.Duplicate, ReceivedAt: now(), Ack: m.Ack})
			}
		},
		StatusTopic: topics.Status, OnlinePayload: status("online"), OfflinePayload: status("offline"),
		KeepAlive: cfg.MQTT.KeepAlive.D(), Logger: log,
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	ob, err := operator.NewOutbox(operator.OutboxOptions{Journal: db, Publisher: sess, Topics: topics, Logger: log})
	if err != nil {
		return err
	}
	pres, err := operator.NewPresence(operator.PresenceOptions{Publisher: sess, Topics: topics, Logger: log, Now: now})
	if err != nil {
		return err
	}
	books := &bookkeeping{link: link, db: db, roots: keys.Roots, now: now, log: log.With("subsystem", "bookkeeping")}
	sched, err := fleet.New(fleet.Options{Journal: db, Link: books, Logger: log, Now: now,
		MaxSessions: cfg.Bluetooth.MaxConnections, Retryable: bluelink.Retryable, OnResult: ob.Kick})
	if err != nil {
		return err
	}
	in, err := operator.NewIntake(operator.IntakeOptions{Journal: db, Publisher: sess, Topics: topics, Roots: keys.Roots,
		Revoked: revs.Revoked, Now: now, Logger: log, OnJournaled: sched.Submit, OnResult: ob.Kick})
	if err != nil {
		return err
	}
	intake.Store(in)

	reg.MustRegister(bluez.NewCollector(ad), link, sched, in, ob, pres, revs, sess.Collector(), newBondsCollector(db),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector())

	// 4. Start, in dependency order; stop in reverse (deferred).
	if err := sched.Start(ctx); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sched.Close()) }()
	if err := ob.Start(ctx); err != nil {
		return err
	}
	defer ob.Close()
	if err := in.Start(ctx); err != nil {
		return err
	}
	defer in.Close()
	if err := sess.Start(ctx); err != nil {
		return err
	}
	// First to stop: no new messages, and the retained offline status.
	defer func() { err = errors.Join(err, sess.Close()) }()
	// After the session started (Publish needs it), and closed before it:
	// nothing is published after the offline status.
	if err := pres.Start(ctx); err != nil {
		return err
	}
	defer pres.Close()

	rec := bonds.NewReconciler(db, ad, bonds.ReconcilerOptions{Interval: cfg.Database.ReconcileInterval.D(),
		EvictAfter: cfg.Database.EvictAfter.D(), Logger: log})
	if err := rec.Start(ctx); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, rec.Close()) }()

	adm, err := admin.New(admin.Options{Socket: cfg.Admin.Socket, DB: db, Logger: log, Status: func() any {
		return map[string]any{
			"gateway_id": cfg.GatewayID, "version": version(),
			"adapter_ready": ad.Ready(), "locks_in_range": len(ad.Locks()),
			"mqtt_connected": sess.Connected(), "database": db.Path(),
		}
	}})
	if err != nil {
		return err
	}
	if err := adm.Start(); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, adm.Close()) }()

	g, gctx := errgroup.WithContext(ctx)
	metricsAddr := ""
	if cfg.Metrics.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		metricsAddr = ln.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	g.Go(func() error { presence(gctx, ad, db, sched, pres, log); return nil })
	g.Go(func() error { sweepUnverified(gctx, db, now, log.With("subsystem", "bookkeeping")); return nil })
	g.Go(func() error {
		return notify.Watchdog(gctx, func() error {
			if !ad.Ready() {
				return errors.New("bluetooth adapter not ready")
			}
			return nil
		})
	})

	_ = notify.Notify("READY=1\nSTATUS=running")
	log.Info("gatewayd running", "gateway_id", cfg.GatewayID, "version", version(), "metrics", metricsAddr, "admin", cfg.Admin.Socket)
	if opts.OnReady != nil {
		opts.OnReady(metricsAddr)
	}
	<-gctx.Done()
	_ = notify.Notify("STOPPING=1")
	log.Info("gatewayd stopping")
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// presence keeps the last-seen values of the locks the database records
// (those that proved their identity, see identity.go) current from the
// adapter's events, publishes what the gateway hears (the retained locks
// topic, for the backend's routing), and wakes the scheduler when a lock
// comes into range. An advertised ID without a record writes nothing.
func presence(ctx context.Context, ad *bluez.Adapter, db *bonds.DB, sched *fleet.Scheduler, pres *operator.Presence, log *slog.Logger) {
	// The first view, even empty, replaces the previous run's retained one.
	pres.Update(seenLocks(ctx, ad, db))
	// Every advertisement is an event; the view (a copy of the adapter's
	// table, sorted) is rebuilt at most once a second after one, and once
	// a minute regardless, since the adapter drops events when its queue
	// is full (DroppedEvents). An unchanged view publishes nothing.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	dirty, ticks := false, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if ticks++; dirty || ticks%60 == 0 {
				pres.Update(seenLocks(ctx, ad, db))
				dirty = false
			}
		case ev, ok := <-ad.Events():
			if !ok {
				return
			}
			dirty = true
			recordSighting(ctx, db, ev, sched.Wake, log)
		}
	}
}

// seenLocks is what the adapter hears now, for the lock presence: an
// entry is verified when it comes from the address the lock proved its
// identity from (provenAddress).
func seenLocks(ctx context.Context, ad *bluez.Adapter, db *bonds.DB) []operator.SeenLock {
	infos := ad.Locks()
	out := make([]operator.SeenLock, 0, len(infos))
	proven := map[bonds.LockID]string{}
	for _, li := range infos {
		if li.Err != nil || li.LockID == ([8]byte{}) {
			continue
		}
		id := bonds.LockID(li.LockID)
		p, ok := proven[id]
		if !ok {
			p = provenAddress(ctx, db, id)
			proven[id] = p
		}
		out = append(out, operator.SeenLock{LockID: id, Address: li.Address, RSSI: int(li.RSSI),
			Battery: int(li.Battery), Locked: li.Flags&bluez.FlagLocked != 0, LastSeen: li.LastSeen,
			Verified: p != "" && p == normAddr(li.Address)})
	}
	return out
}

func mqttSecrets(m config.MQTT) (*tls.Config, string, error) {
	var password string
	if m.PasswordFile != "" {
		b, err := config.ReadSecret(m.PasswordFile)
		if err != nil {
			return nil, "", fmt.Errorf("mqtt.password_file: %w", err)
		}
		password = string(b)
	}
	if m.CAFile == "" && m.CertFile == "" {
		return nil, password, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if m.CAFile != "" {
		pem, err := os.ReadFile(m.CAFile)
		if err != nil {
			return nil, "", fmt.Errorf("mqtt.ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("mqtt.ca_file %s: no PEM certificate in it", m.CAFile)
		}
	}
	if m.CertFile != "" {
		if _, err := config.ReadSecret(m.KeyFile); err != nil {
			return nil, "", fmt.Errorf("mqtt.key_file: %w", err)
		}
		c, err := tls.LoadX509KeyPair(m.CertFile, m.KeyFile)
		if err != nil {
			return nil, "", fmt.Errorf("mqtt.cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, password, nil
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}
