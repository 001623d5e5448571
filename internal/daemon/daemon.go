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
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
	"github.com/gatewayd/gatewayd/internal/version"
	"github.com/gatewayd/gatewayd/systemd"
)

// ErrConfig is returned by Run when the configuration, the keys or the
// database are refused, or the database turned out corrupt while running
// (it then wraps bonds.ErrCorrupt): restarting will not help, so the
// command exits with EX_CONFIG (78) and systemd's RestartPreventExitStatus
// stops.
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
	// OpenRetryFor is how long Run retries opening the database while its
	// file system is read-only, full or failing, before it gives up with
	// ErrTemporary (default DefaultOpenRetryFor).
	OpenRetryFor time.Duration
	// OpenDB opens the database (nil: bonds.Open); a seam for tests of
	// file-system faults at start.
	OpenDB func(path string, opts bonds.Options) (*bonds.DB, error)
	// StallAfter is how long a main loop may have work waiting without
	// progress before the watchdog withholds systemd's ping (default
	// DefaultStallAfter).
	StallAfter time.Duration
	// Init allows creating a missing database in a state directory that
	// is not empty (`gatewayd run -init`); without it, a missing database
	// is created only in an empty directory (a first start), and refused
	// otherwise (it was lost: restore a backup).
	Init bool
	// Reload, if set, reloads the configuration on each signal received
	// (cmd/gatewayd: SIGHUP) from LoadConfig: LogLevel, the level of
	// Logger, is set from log.level; the fleet roots are read again and
	// swapped, and the revocation list file read again; any other changed
	// key is logged as needing a restart (reload.go).
	Reload     <-chan os.Signal
	LoadConfig func() (*config.Config, error)
	LogLevel   *slog.LevelVar
}

// Run runs the daemon until ctx ends (a clean stop, nil) or a part fails
// for good.
func Run(ctx context.Context, opts Options) (err error) {
	defer func() {
		// A database found corrupt, at start or while running, is the
		// operator's to fix (db check, restore): no restart loop.
		if errors.Is(err, bonds.ErrCorrupt) && !errors.Is(err, ErrConfig) {
			err = fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}()
	cfg := opts.Config
	build := version.Get()
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
	tlsCfg, password, err := config.MQTTSecrets(cfg.MQTT)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// A read-only, full or failing file system is waited for, not refused.
	db, err := openDatabase(ctx, opts, cfg.Database.Path,
		bonds.Options{Logger: log, ReplayWindow: cfg.Database.ReplayWindow.D(), Now: now}, notify, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	// The fleet revocation list, kept beside the database (docs/mqtt.md).
	revs, err := operator.NewRevocations(operator.RevocationsOptions{Roots: keys.Roots,
		Path: filepath.Join(filepath.Dir(cfg.Database.Path), "revocations.cbor"), OwnKID: keys.Cert.KID,
		GatewayID: cfg.GatewayID, Logger: log})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	// The fleet roots every part verifies with; a reload swaps them.
	roots := newTrust(keys.Roots)

	// 2. BlueZ: the adapter, our agent, and the link to locks.
	conn := opts.Bus
	if conn == nil {
		// Not tied to ctx: the parts stop in order after ctx ends, and the
		// adapter still talks to bluetoothd while it stops (StopDiscovery).
		// DialSystemBus decodes advertisements without godbus's
		// reflection (bluez/advtap.go): most of a busy dock's CPU.
		if conn, err = bluez.DialSystemBus(); err != nil {
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
	agent, err := bluez.NewAgent(ctx, conn, bluez.AgentOptions{Dispatcher: ad.Dispatcher(), Logger: log,
		NotDefault: cfg.Bluetooth.DefaultAgent != nil && !*cfg.Bluetooth.DefaultAgent})
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
		Revocations: revs.Current, Roots: roots.Roots})
	if err != nil {
		return err
	}

	// 3. The MQTT session; the outbox, the scheduler and the intake.
	var intake atomic.Pointer[operator.Intake]
	var presOnReady atomic.Pointer[operator.Presence] // for OnReady, set once made
	// The retained status (docs/mqtt.md): online since the start; the Will,
	// fixed at connect, can only say since when the gateway was online; a
	// clean stop says when it went offline.
	started := now().UTC()
	status := func(state string, since time.Time) []byte {
		m := map[string]any{"state": state, "gateway_id": cfg.GatewayID, "version": build.Version, "commit": build.Commit,
			"online_since": started}
		if !since.IsZero() {
			m["since"] = since.UTC()
		}
		b, _ := json.Marshal(m)
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
				var ack func() // nil for QoS 0: the intake bounds those apart
				if m.QoS > 0 {
					ack = m.Ack
				}
				in.Enqueue(operator.Message{Payload: m.Payload, Duplicate: m.Duplicate, ReceivedAt: now(), Ack: ack})
			}
		},
		StatusTopic: topics.Status, OnlinePayload: status("online", started), OfflinePayload: status("offline", time.Time{}),
		ClosePayload: func() []byte { return status("offline", now()) },
		KeepAlive:    cfg.MQTT.KeepAlive.D(), Logger: log,
		// After a reconnect, publish the presence again: a clustered
		// broker may not have stored the last one (docs/scaling.md).
		OnReady: func() {
			if p := presOnReady.Load(); p != nil {
				p.Republish()
			}
		},
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
	presOnReady.Store(pres)
	// The audit entries the scheduler reads from locks, on the events topic.
	auditPub, err := operator.NewAuditPublisher(operator.AuditOptions{Journal: db, Publisher: sess, Topics: topics, Logger: log})
	if err != nil {
		return err
	}
	books := &bookkeeping{link: link, db: db, roots: roots.Roots, now: now, log: log.With("subsystem", "bookkeeping")}
	sched, err := fleet.New(fleet.Options{Journal: db, Link: books, Logger: log, Now: now,
		MaxSessions: cfg.Bluetooth.MaxConnections, Retryable: bluelink.Retryable, OnResult: ob.Kick,
		Audit: fleet.AuditOptions{Store: db, Heard: func() []bonds.LockID { return heardLocks(ad) },
			Interval: cfg.Audit.Interval.D(), Pages: cfg.Audit.PagesPerSession, OnEntries: auditPub.Kick}})
	if err != nil {
		return err
	}
	in, err := operator.NewIntake(operator.IntakeOptions{Journal: db, Publisher: sess, Topics: topics, Roots: keys.Roots, CurrentRoots: roots.Roots,
		Revoked: revs.Revoked, Now: now, Logger: log, OnJournaled: sched.Submit, OnArrival: sched.SubmitEarly, OnResult: ob.Kick})
	if err != nil {
		return err
	}
	intake.Store(in)

	stallAfter := opts.StallAfter
	if stallAfter <= 0 {
		stallAfter = DefaultStallAfter
	}
	watch := newProgressWatch(stallAfter,
		loopProbe{"intake", in.Progress}, loopProbe{"journal", db.Progress}, loopProbe{"scheduler", sched.Progress},
		loopProbe{"outbox", whileConnected(sess.Connected, ob.Progress)},
		loopProbe{"presence", whileConnected(sess.Connected, pres.Progress)})

	rl := newReloader(opts, log)
	rl.trust, rl.revs, rl.now = roots, revs, now
	reg.MustRegister(rl.total, gate.outcomes, bluez.NewCollector(ad), link, sched, in, ob, auditPub, pres, revs, sess.Collector(), newBondsCollector(db), watch,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(), newBuildInfo(build))

	// 4. Start, in dependency order; stop in reverse (deferred).
	if err := sched.Start(ctx); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sched.Close()) }()
	if err := ob.Start(ctx); err != nil {
		return err
	}
	defer ob.Close()
	if err := auditPub.Start(ctx); err != nil {
		return err
	}
	defer auditPub.Close()
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
			"gateway_id": cfg.GatewayID, "version": build.Version, "commit": build.Commit,
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
		mux := newMux(reg, log, readiness{mqtt: sess.Connected, adapter: ad.Ready, db: &dbHealth{db: db, now: now}},
			html.EscapeString(build.Version))
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
	if opts.Reload != nil {
		g.Go(func() error { rl.run(gctx, opts.Reload); return nil })
	}
	g.Go(func() error { sweepUnverified(gctx, db, now, log.With("subsystem", "bookkeeping")); return nil })
	g.Go(func() error {
		select {
		case <-db.Failed(): // bbolt could not read the file: stop in order
			return db.Err()
		case <-gctx.Done():
			return nil
		}
	})
	g.Go(func() error {
		// Alive is not enough: the main loops must make progress when
		// they have work (progressWatch).
		return notify.Watchdog(gctx, func() error {
			if !ad.Ready() {
				return errors.New("bluetooth adapter not ready")
			}
			if err := watch.check(); err != nil {
				log.Error("watchdog ping withheld: systemd restarts gatewayd", "err", err)
				return err
			}
			return nil
		})
	})

	_ = notify.Notify("READY=1\nSTATUS=running")
	log.Info("gatewayd running", "gateway_id", cfg.GatewayID, "version", build.Version, "commit", build.Commit, "metrics", metricsAddr, "admin", cfg.Admin.Socket)
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

// waker is the scheduler's Wake, for presence.
type waker interface{ Wake(bonds.LockID) }

// presence keeps the last-seen values of the locks the database records
// (those that proved their identity, see identity.go) current from the
// adapter's events, publishes what the gateway hears (the retained locks
// topic, for the backend's routing), and wakes the scheduler when a lock
// comes into range. An advertised ID without a record writes nothing.
func presence(ctx context.Context, ad *bluez.Adapter, db *bonds.DB, sched waker, pres *operator.Presence, log *slog.Logger) {
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

// heardLocks are the lock IDs the adapter hears now, for the scheduled
// audit reads.
func heardLocks(ad *bluez.Adapter) []bonds.LockID {
	var out []bonds.LockID
	for _, li := range ad.Locks() {
		if li.Err == nil && li.LockID != ([8]byte{}) {
			out = append(out, bonds.LockID(li.LockID))
		}
	}
	return out
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
