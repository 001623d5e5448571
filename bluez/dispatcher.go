package bluez

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"
)

// Match selects signals. Empty fields match anything. Path and
// PathNamespace are exclusive.
type Match struct {
	Sender        string          // bus name, e.g. "org.bluez"
	Path          dbus.ObjectPath // exact object path
	PathNamespace dbus.ObjectPath // the path and everything below it
	Interface     string          // e.g. "org.freedesktop.DBus.Properties"
	Member        string          // e.g. "PropertiesChanged"
	Arg0          string          // first string argument, e.g. "org.bluez" for NameOwnerChanged
}

// Rule is the bus match rule for m.
func (m Match) Rule() string {
	parts := []string{"type='signal'"}
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"='"+v+"'")
		}
	}
	add("sender", m.Sender)
	add("path", string(m.Path))
	add("path_namespace", string(m.PathNamespace))
	add("interface", m.Interface)
	add("member", m.Member)
	add("arg0", m.Arg0)
	return strings.Join(parts, ",")
}

// matches filters locally: a connection receives every signal any of its
// rules let in, so each subscription must filter again. A well-known
// Sender cannot be compared with the unique name signals carry; it is left
// to the bus (documented limit: another subscription's broader rule may let
// in the same path, interface and member from another sender).
func (m Match) matches(s *dbus.Signal) bool {
	if m.Arg0 != "" {
		if len(s.Body) == 0 {
			return false
		}
		if a0, ok := s.Body[0].(string); !ok || a0 != m.Arg0 {
			return false
		}
	}
	if m.Sender != "" && strings.HasPrefix(m.Sender, ":") && s.Sender != m.Sender {
		return false
	}
	if m.Path != "" && s.Path != m.Path {
		return false
	}
	if ns := m.PathNamespace; ns != "" && ns != "/" && s.Path != ns && !strings.HasPrefix(string(s.Path), string(ns)+"/") {
		return false
	}
	dot := strings.LastIndexByte(s.Name, '.')
	if dot < 0 {
		return false
	}
	if m.Interface != "" && s.Name[:dot] != m.Interface {
		return false
	}
	if m.Member != "" && s.Name[dot+1:] != m.Member {
		return false
	}
	return true
}

// DefaultQueue is a subscription's buffer when SubscribeOptions.Queue is 0.
const DefaultQueue = 256

// Dispatcher owns one godbus connection's signal channel. One goroutine
// reads it and fans signals out to subscriptions.
//
// Slow subscribers: each subscription has a bounded buffer; when it is
// full the signal is dropped for that subscription only and counted
// (Subscription.Dropped), so one slow reader never blocks the others or the
// connection. The fan-out never blocks, so the dispatcher keeps godbus's
// channel drained (godbus parks a goroutine per signal when a registered
// channel is full). A subscriber that cannot afford to lose signals (the Adapter)
// watches Dropped and resynchronises from GetManagedObjects.
type Dispatcher struct {
	conn        *dbus.Conn
	callTimeout time.Duration
	in          chan *dbus.Signal
	done        chan struct{}
	stopped     chan struct{}
	closeOnce   sync.Once

	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool
	// The owner watch of org.bluez (BluetoothdGone): one match rule,
	// added on first use, removed by Close.
	ownerMu   sync.Mutex // serialises the first BluetoothdGone
	ownerSub  *Subscription
	ownerLost chan struct{} // closed when the current owner leaves
}

// ownerMatch selects org.bluez's NameOwnerChanged signals.
var ownerMatch = Match{Sender: "org.freedesktop.DBus", Path: "/org/freedesktop/DBus",
	Interface: "org.freedesktop.DBus", Member: "NameOwnerChanged", Arg0: BusName}

// NewDispatcher starts a dispatcher on conn. callTimeout bounds each
// AddMatch/RemoveMatch call made without a caller's deadline (0: 5 s).
// Only one Dispatcher should be used per connection.
func NewDispatcher(conn *dbus.Conn, callTimeout time.Duration) *Dispatcher {
	if callTimeout <= 0 {
		callTimeout = 5 * time.Second
	}
	d := &Dispatcher{
		conn:        conn,
		callTimeout: callTimeout,
		in:          make(chan *dbus.Signal, 1024),
		done:        make(chan struct{}),
		stopped:     make(chan struct{}),
		subs:        make(map[*Subscription]struct{}),
	}
	conn.Signal(d.in)
	go d.run()
	return d
}

func (d *Dispatcher) run() {
	defer close(d.stopped)
	for {
		select {
		case <-d.done:
			return
		case s, ok := <-d.in:
			if !ok {
				// Connection closed: godbus closed our channel.
				d.mu.Lock()
				for sub := range d.subs {
					sub.closeCh()
				}
				d.subs = map[*Subscription]struct{}{}
				d.mu.Unlock()
				return
			}
			d.deliver(s)
		}
	}
}

func (d *Dispatcher) deliver(s *dbus.Signal) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ownerSub != nil && ownerMatch.matches(s) && len(s.Body) == 3 {
		// NameOwnerChanged(name, old, new): an old owner means the
		// bluetoothd that every device, call and notification in flight
		// belonged to has left the bus (a crash, or a restart).
		if old, _ := s.Body[1].(string); old != "" {
			close(d.ownerLost)
			d.ownerLost = make(chan struct{})
		}
	}
	for sub := range d.subs {
		if sub.silent || !sub.match.matches(s) {
			continue
		}
		select {
		case sub.ch <- s:
		default:
			sub.dropped.Add(1)
		}
	}
}

// Subscription is one match rule on the bus and its queue of signals.
type Subscription struct {
	d       *Dispatcher
	match   Match
	rule    string
	ch      chan *dbus.Signal
	dropped atomic.Uint64
	once    sync.Once
	chOnce  sync.Once
	err     error
	silent  bool
	// parent is the subscription whose bus rule lets this one's signals
	// in (SubscribeUnder); such a subscription has no rule of its own.
	parent   *Subscription
	children map[*Subscription]struct{} // guarded by d.mu
}

// Subscribe adds m's match rule on the bus (with ctx's deadline) and
// returns a subscription receiving matching signals on C. queue is its
// buffer (0: DefaultQueue).
func (d *Dispatcher) Subscribe(ctx context.Context, m Match, queue int) (*Subscription, error) {
	return d.subscribe(ctx, m, queue, false)
}

// subscribe is Subscribe; a silent subscription only holds a rule on the
// bus and is never delivered to.
func (d *Dispatcher) subscribe(ctx context.Context, m Match, queue int, silent bool) (*Subscription, error) {
	if m.Path != "" && m.PathNamespace != "" {
		return nil, fmt.Errorf("%w: Match with both Path and PathNamespace", ErrInvalidArguments)
	}
	if queue <= 0 {
		queue = DefaultQueue
	}
	sub := &Subscription{d: d, match: m, rule: m.Rule(), ch: make(chan *dbus.Signal, queue), silent: silent}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, ErrClosed
	}
	d.mu.Unlock()
	ctx, cancel := d.withDeadline(ctx)
	defer cancel()
	if err := d.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.AddMatch", 0, sub.rule).Err; err != nil {
		return nil, fmt.Errorf("bluez: AddMatch %s: %w", sub.rule, MapError(err))
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		d.removeMatch(sub.rule)
		return nil, ErrClosed
	}
	d.subs[sub] = struct{}{}
	d.mu.Unlock()
	return sub, nil
}

// BluetoothdGone returns a channel that is closed when the bluetoothd
// currently owning org.bluez leaves the bus (it crashed or restarted):
// every device, connection and notification stream of that bluetoothd is
// then gone. A Device takes it at Connect and fails its reads as
// retryable (ErrBusGone) once it closes. The first call adds one match
// rule (with ctx's deadline), shared by every later caller and removed by
// Close; the channel of a closed dispatcher never closes.
func (d *Dispatcher) BluetoothdGone(ctx context.Context) (<-chan struct{}, error) {
	d.ownerMu.Lock()
	defer d.ownerMu.Unlock()
	d.mu.Lock()
	if d.ownerSub != nil {
		ch := d.ownerLost
		d.mu.Unlock()
		return ch, nil
	}
	d.mu.Unlock()
	// The subscription only installs the rule: deliver watches the
	// signals itself, nothing reads its queue.
	sub, err := d.subscribe(ctx, ownerMatch, 1, true)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ownerSub = sub
	d.ownerLost = make(chan struct{})
	return d.ownerLost, nil
}

// SubscribeUnder returns a subscription to m that adds no match rule of
// its own: parent's rule must already let in every signal m selects (the
// caller's promise; m is still filtered locally). It costs no bus round
// trip, and is closed (C closed) when parent is. A Device connected
// through an Adapter subscribes under the adapter's PropertiesChanged
// subscription this way.
func (d *Dispatcher) SubscribeUnder(parent *Subscription, m Match, queue int) (*Subscription, error) {
	if parent == nil || parent.d != d || parent.parent != nil {
		return nil, fmt.Errorf("%w: SubscribeUnder needs a rule-holding subscription of this dispatcher", ErrInvalidArguments)
	}
	if m.Path != "" && m.PathNamespace != "" {
		return nil, fmt.Errorf("%w: Match with both Path and PathNamespace", ErrInvalidArguments)
	}
	if queue <= 0 {
		queue = DefaultQueue
	}
	sub := &Subscription{d: d, match: m, ch: make(chan *dbus.Signal, queue), parent: parent}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, live := d.subs[parent]; !live || d.closed {
		return nil, ErrClosed
	}
	if parent.children == nil {
		parent.children = map[*Subscription]struct{}{}
	}
	parent.children[sub] = struct{}{}
	d.subs[sub] = struct{}{}
	return sub, nil
}

func (d *Dispatcher) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d.callTimeout)
}

func (d *Dispatcher) removeMatch(rule string) error {
	ctx, cancel := context.WithTimeout(context.Background(), d.callTimeout)
	defer cancel()
	if err := d.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.RemoveMatch", 0, rule).Err; err != nil {
		return fmt.Errorf("bluez: RemoveMatch %s: %w", rule, MapError(err))
	}
	return nil
}

// C delivers the subscription's signals. It is closed when the
// subscription, its dispatcher or the connection is closed.
func (s *Subscription) C() <-chan *dbus.Signal { return s.ch }

// Dropped counts signals dropped because C was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

func (s *Subscription) closeCh() { s.chOnce.Do(func() { close(s.ch) }) }

// Close removes the match rule from the bus (bounded by the dispatcher's
// call timeout) and closes C. It is idempotent.
func (s *Subscription) Close() error {
	s.once.Do(func() {
		d := s.d
		d.mu.Lock()
		_, live := d.subs[s]
		delete(d.subs, s)
		s.closeCh()
		if s.parent != nil {
			delete(s.parent.children, s)
		}
		for c := range s.children {
			// Their signals no longer reach the connection.
			delete(d.subs, c)
			c.closeCh()
		}
		clear(s.children)
		closed := d.closed
		d.mu.Unlock()
		if live && !closed && s.parent == nil {
			s.err = d.removeMatch(s.rule)
		}
	})
	return s.err
}

// Close removes every live subscription's match rule (each bounded by the
// call timeout), closes their channels, stops the dispatcher's goroutine
// and waits for it. The connection stays open (it is the caller's).
func (d *Dispatcher) Close() error {
	var first error
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		subs := make([]*Subscription, 0, len(d.subs))
		for s := range d.subs {
			if s.parent == nil {
				subs = append(subs, s)
			}
			s.closeCh()
		}
		clear(d.subs)
		d.mu.Unlock()
		for _, s := range subs {
			if err := d.removeMatch(s.rule); err != nil && first == nil {
				first = err
			}
		}
		d.conn.RemoveSignal(d.in)
		close(d.done)
		<-d.stopped
	})
	return first
}
