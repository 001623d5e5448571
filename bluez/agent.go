package bluez

import (
	"context"
	"errors"
	"fmt"
	"github.com/gatewayd/gatewayd/internal/backoff"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"
)

// Agent D-Bus names.
const (
	IfaceAgent        = "org.bluez.Agent1"
	IfaceAgentManager = "org.bluez.AgentManager1"
	// AgentManagerPath is where bluetoothd serves AgentManager1.
	AgentManagerPath = dbus.ObjectPath("/org/bluez")
	// DefaultAgentPath is the object path Agent is exported at when
	// AgentOptions.Path is empty.
	DefaultAgentPath = dbus.ObjectPath("/org/gatewayd/agent")
	// AgentCapability is the IO capability the agent registers with: the
	// gateway enters the passkey the lock displays.
	AgentCapability = "KeyboardOnly"
)

// agentRejected is the error the agent answers with when it refuses a
// request (org.bluez.Agent1 "Possible errors").
const agentRejected = "org.bluez.Error.Rejected"

// AgentOptions configures NewAgent.
type AgentOptions struct {
	Path        dbus.ObjectPath // "" is DefaultAgentPath
	CallTimeout time.Duration   // deadline of each D-Bus call; 0 is 5 s
	Logger      *slog.Logger    // nil discards
	// Dispatcher of the connection (Adapter.Dispatcher). With one, the
	// agent watches bluetoothd and registers itself again with every new
	// bluetoothd (a restart forgets every agent); without one it is
	// registered once.
	Dispatcher *Dispatcher
	// RetryMin and RetryMax bound the jittered backoff between attempts
	// to register with a new bluetoothd; 0 is 100 ms and 10 s.
	RetryMin, RetryMax time.Duration
	// NotDefault registers the agent without making it the default one.
	// bluetoothd sends the requests of a pairing to the agent of the
	// connection that called Pair, so the gateway's pairings still reach
	// it; other requests go to the default agent. For a bluetoothd shared
	// with another role (the real-BlueZ tier's lock); a dock's gateway
	// leaves it false.
	NotDefault bool
}

// Agent is the gateway's org.bluez.Agent1, exported on the client's
// connection and registered with capability KeyboardOnly as the default
// agent. It answers RequestPasskey only for a device the fleet layer
// registered a one-time passkey for (Expect); every other request is
// Rejected. It starts no goroutine (godbus runs its method handlers).
// Passkeys are never logged.
type Agent struct {
	conn *dbus.Conn
	opts AgentOptions
	log  *slog.Logger

	mu     sync.Mutex
	expect map[dbus.ObjectPath]expectation
	seq    uint64
	closed bool

	ownerSub      *Subscription // NameOwnerChanged of org.bluez, with a Dispatcher
	stop          context.CancelFunc
	stopped       chan struct{}
	registrations atomic.Uint64

	closeOnce sync.Once
	closeErr  error
}

// exported records the (connection, path) pairs an Agent is exported at,
// so that a second NewAgent at the same place cannot replace, then
// unexport, the first one's handler.
var exported sync.Map // agentKey -> struct{}

type agentKey struct {
	conn *dbus.Conn
	path dbus.ObjectPath
}

type expectation struct {
	passkey uint32
	id      uint64
}

// NewAgent exports the agent at opts.Path on conn, registers it with
// AgentManager1.RegisterAgent(path, "KeyboardOnly") and makes it the
// default agent (RequestDefaultAgent). Each call has ctx's deadline,
// bounded by CallTimeout. On failure nothing stays exported or
// registered.
func NewAgent(ctx context.Context, conn *dbus.Conn, opts AgentOptions) (_ *Agent, err error) {
	if conn == nil {
		return nil, fmt.Errorf("%w: nil connection", ErrInvalidArguments)
	}
	if opts.Path == "" {
		opts.Path = DefaultAgentPath
	}
	if !opts.Path.IsValid() {
		return nil, fmt.Errorf("%w: agent path %q", ErrInvalidArguments, opts.Path)
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 5 * time.Second
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = 100 * time.Millisecond
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &Agent{
		conn:   conn,
		opts:   opts,
		log:    log.With("component", "bluez.agent", "path", string(opts.Path)),
		expect: make(map[dbus.ObjectPath]expectation),
	}
	key := agentKey{conn, opts.Path}
	if _, loaded := exported.LoadOrStore(key, struct{}{}); loaded {
		return nil, fmt.Errorf("%w: an agent is already exported at %s", ErrAlreadyExists, opts.Path)
	}
	if err := conn.Export(agentHandler{a}, opts.Path, IfaceAgent); err != nil {
		exported.Delete(key)
		return nil, fmt.Errorf("bluez: exporting agent: %w", err)
	}
	defer func() {
		if err != nil {
			_ = conn.Export(nil, opts.Path, IfaceAgent)
			exported.Delete(key)
		}
	}()
	if opts.Dispatcher != nil {
		// Subscribe before registering, so a restart in between is seen.
		a.ownerSub, err = opts.Dispatcher.Subscribe(ctx, ownerMatch, 16)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				_ = a.ownerSub.Close()
			}
		}()
	}
	if err := a.register(ctx); err != nil {
		return nil, err
	}
	if a.ownerSub != nil {
		wctx, stop := context.WithCancel(context.Background())
		a.stop, a.stopped = stop, make(chan struct{})
		go a.watch(wctx)
	}
	return a, nil
}

// register registers the agent with bluetoothd and makes it the default
// agent; if the second step fails, it unregisters again.
func (a *Agent) register(ctx context.Context) error {
	if err := a.call(ctx, "RegisterAgent", a.opts.Path, AgentCapability); err != nil {
		return fmt.Errorf("bluez: RegisterAgent: %w", err)
	}
	if a.opts.NotDefault {
		a.registrations.Add(1)
		a.log.Debug("agent registered, not as the default", "capability", AgentCapability)
		return nil
	}
	if err := a.call(ctx, "RequestDefaultAgent", a.opts.Path); err != nil {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.CallTimeout)
		defer cancel()
		_ = a.call(uctx, "UnregisterAgent", a.opts.Path)
		return fmt.Errorf("bluez: RequestDefaultAgent: %w", err)
	}
	a.registrations.Add(1)
	a.log.Debug("agent registered", "capability", AgentCapability)
	return nil
}

// watch registers the agent again with each new bluetoothd, retrying with
// a jittered backoff until it succeeds, a newer bluetoothd replaces that
// one, or Close.
func (a *Agent) watch(ctx context.Context) {
	defer close(a.stopped)
	bo := backoff.Backoff{Min: a.opts.RetryMin, Max: a.opts.RetryMax}
	for {
		var s *dbus.Signal
		select {
		case <-ctx.Done():
			return
		case s = <-a.ownerSub.C():
			if s == nil {
				return // the dispatcher closed
			}
		}
		if len(s.Body) != 3 {
			continue
		}
		if owner, _ := s.Body[2].(string); owner == "" {
			a.log.Warn("bluetoothd left the bus; the agent will register again when it is back")
			continue
		}
		bo.Reset()
		for {
			err := a.register(ctx)
			if err == nil {
				a.log.Info("agent registered with the new bluetoothd")
				break
			}
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("registering the agent with the new bluetoothd failed; retrying", "err", err)
			if bo.Wait(ctx) != nil {
				return
			}
			if len(a.ownerSub.C()) > 0 {
				break // yet another bluetoothd: start over with it
			}
		}
	}
}

// Registrations counts successful registrations with bluetoothd: one at
// NewAgent and one after each bluetoothd restart.
func (a *Agent) Registrations() uint64 { return a.registrations.Load() }

func (a *Agent) call(ctx context.Context, method string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, a.opts.CallTimeout)
	defer cancel()
	return MapError(a.conn.Object(BusName, AgentManagerPath).CallWithContext(ctx, IfaceAgentManager+"."+method, 0, args...).Err)
}

// Path is the agent's object path.
func (a *Agent) Path() dbus.ObjectPath { return a.opts.Path }

// Expect registers passkey as the one-time answer to RequestPasskey for
// exactly device, replacing any earlier one for it. The passkey is given
// out at most once, then forgotten. release forgets it if it is still
// unused (and is a no-op once a later Expect replaced it); it is safe to
// call more than once.
func (a *Agent) Expect(device dbus.ObjectPath, passkey uint32) (release func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return func() {}
	}
	a.seq++
	id := a.seq
	a.expect[device] = expectation{passkey: passkey, id: id}
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if x, ok := a.expect[device]; ok && x.id == id {
			delete(a.expect, device)
		}
	}
}

// take returns and forgets the passkey registered for device.
func (a *Agent) take(device dbus.ObjectPath) (uint32, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	x, ok := a.expect[device]
	if ok {
		delete(a.expect, device)
	}
	return x.passkey, ok
}

// Close unregisters the agent (AgentManager1.UnregisterAgent, bounded by
// CallTimeout), unexports it and forgets every passkey. It is idempotent.
// An agent bluetoothd no longer knows (it restarted) is not an error.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		a.closed = true
		clear(a.expect)
		a.mu.Unlock()
		if a.stop != nil {
			a.stop()
			<-a.stopped
		}
		if a.ownerSub != nil {
			if err := a.ownerSub.Close(); err != nil {
				a.closeErr = err
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.opts.CallTimeout)
		defer cancel()
		if err := a.call(ctx, "UnregisterAgent", a.opts.Path); err != nil && !errors.Is(err, ErrDoesNotExist) && !errors.Is(err, ErrBusGone) {
			a.closeErr = fmt.Errorf("bluez: UnregisterAgent: %w", err)
		}
		if err := a.conn.Export(nil, a.opts.Path, IfaceAgent); err != nil && a.closeErr == nil {
			a.closeErr = fmt.Errorf("bluez: unexporting agent: %w", err)
		}
		exported.Delete(agentKey{a.conn, a.opts.Path})
		a.log.Debug("agent closed")
	})
	return a.closeErr
}

func rejected(what string) *dbus.Error {
	return dbus.NewError(agentRejected, []any{what})
}

// agentHandler is what is exported: only the Agent1 methods, so that the
// Agent's own exported methods (Expect, Close) are not reachable over the
// bus.
type agentHandler struct{ a *Agent }

// Release is called when bluetoothd unregisters the agent.
func (h agentHandler) Release() *dbus.Error {
	h.a.log.Info("agent released by bluetoothd")
	return nil
}

func (h agentHandler) RequestPinCode(device dbus.ObjectPath) (string, *dbus.Error) {
	h.a.log.Debug("RequestPinCode rejected", "device", string(device))
	return "", rejected("PIN codes are not supported")
}

func (h agentHandler) DisplayPinCode(device dbus.ObjectPath, _ string) *dbus.Error {
	h.a.log.Debug("DisplayPinCode rejected", "device", string(device))
	return rejected("PIN codes are not supported")
}

// RequestPasskey answers with the passkey registered for device (once), or
// Rejected.
func (h agentHandler) RequestPasskey(device dbus.ObjectPath) (uint32, *dbus.Error) {
	pk, ok := h.a.take(device)
	if !ok {
		h.a.log.Info("RequestPasskey rejected: no passkey expected", "device", string(device))
		return 0, rejected("no passkey expected for this device")
	}
	h.a.log.Debug("RequestPasskey answered", "device", string(device))
	return pk, nil
}

// DisplayPasskey is informational; the gateway has nothing to display.
func (h agentHandler) DisplayPasskey(device dbus.ObjectPath, _ uint32, _ uint16) *dbus.Error {
	return nil
}

func (h agentHandler) RequestConfirmation(device dbus.ObjectPath, _ uint32) *dbus.Error {
	h.a.log.Debug("RequestConfirmation rejected", "device", string(device))
	return rejected("confirmation is not supported")
}

func (h agentHandler) RequestAuthorization(device dbus.ObjectPath) *dbus.Error {
	h.a.log.Debug("RequestAuthorization rejected", "device", string(device))
	return rejected("authorization is not supported")
}

func (h agentHandler) AuthorizeService(device dbus.ObjectPath, uuid string) *dbus.Error {
	h.a.log.Debug("AuthorizeService rejected", "device", string(device), "uuid", uuid)
	return rejected("service authorization is not supported")
}

// Cancel: bluetoothd voids its pending request. Requests are answered at
// once, so there is nothing to abort.
func (h agentHandler) Cancel() *dbus.Error {
	h.a.log.Debug("agent request cancelled by bluetoothd")
	return nil
}
