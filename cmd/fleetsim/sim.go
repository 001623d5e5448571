package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/internal/fleetproc"
	"github.com/gatewayd/gatewayd/internal/natstest"
)

// sim is the running fleet.
type sim struct {
	o   options
	out io.Writer
	dir string
	ctx context.Context

	fleet   *channeltest.Fleet
	cluster *natstest.Cluster
	procs   fleetproc.Group
	docks   []*dock
	locks   []*simLock
	back    *backend
}

func (s *sim) say(format string, a ...any) {
	fmt.Fprintf(s.out, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

func (s *sim) close() {
	if s.back != nil {
		s.back.close()
	}
	s.procs.StopAll()
	for _, d := range s.docks {
		d.close()
	}
	if s.cluster != nil {
		s.cluster.Close()
	}
}

// figures are what docs/scaling.md reports.
type figures struct {
	Gateways, LocksPerDock, Nodes int
	Commands                      int     // commands with a result in the traffic window
	Seconds                       float64 // the traffic window
	PerSecond                     float64
	P50ms, P99ms, Maxms           float64 // publish → result at the backend
	KilledNode                    string
	FailoverMaxS, FailoverP50S    float64 // node killed → the gateway's online status via another node
	FailedOver                    int     // gateways that were on the killed node
	PresenceAgainMaxS             float64 // node killed → their presence published again
	PresenceMovedS                float64 // lock moved → its presence at the new dock routes it
	ReachableS                    float64 // lock moved → a command's result from the new dock
	OverlapStatuses               []string
	IdleMsgsPerGwMin              float64 // gateway publications per gateway per minute at idle
	IdleSeconds                   float64
	IdleByKind                    map[string]int // publications at idle by topic kind (status, locks, events, …)
	KeepAliveS                    float64
}

func (f *figures) print(w io.Writer) {
	fmt.Fprintf(w, "\n== figures: %d gateways × %d locks on a %d-node nats-server cluster\n", f.Gateways, f.LocksPerDock, f.Nodes)
	fmt.Fprintf(w, "   commands:            %d in %.0f s = %.1f/s across the fleet\n", f.Commands, f.Seconds, f.PerSecond)
	fmt.Fprintf(w, "   latency at backend:  p50 %.0f ms, p99 %.0f ms, max %.0f ms (publish → result)\n", f.P50ms, f.P99ms, f.Maxms)
	fmt.Fprintf(w, "   failover:            node %s killed: %d gateways back online via another node, p50 %.1f s, max %.1f s; presence published again after %.1f s at most\n", f.KilledNode, f.FailedOver, f.FailoverP50S, f.FailoverMaxS, f.PresenceAgainMaxS)
	fmt.Fprintf(w, "   roaming:             presence routes a moved lock after %.1f s; first result from its new dock after %.1f s\n", f.PresenceMovedS, f.ReachableS)
	fmt.Fprintf(w, "   lock heard by two:   one signed unlock sent to both: %s; the bolt moved once\n", strings.Join(f.OverlapStatuses, ", "))
	fmt.Fprintf(w, "   idle:                %.2f publications per gateway per minute over %.0f s %v (plus a PINGREQ/PINGRESP every %.0f s)\n", f.IdleMsgsPerGwMin, f.IdleSeconds, f.IdleByKind, f.KeepAliveS)
}

func (f *figures) writeJSON(path string) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func (s *sim) run() (*figures, error) {
	f := &figures{Gateways: s.o.gateways, LocksPerDock: s.o.locks, Nodes: 3, KeepAliveS: 5}
	s.say("== fleet in %s", s.dir)
	var err error
	s.cluster, err = natstest.StartCluster(s.ctx, filepath.Join(s.dir, "nats"), natstest.Options{Nodes: 3})
	if err != nil {
		return nil, err
	}
	s.say("   nats-server cluster: %s", strings.Join(s.cluster.URLs(), " "))
	s.fleet = channeltest.NewFleet(fatal{}, "acme")
	if err := config.WritePublicKey(filepath.Join(s.dir, "fleet-root.pem"), s.fleet.Root.Public().(ed25519.PublicKey)); err != nil {
		return nil, err
	}
	// The backend is on the last node: node 1 is the one killed.
	urls := s.cluster.URLs()
	slices.Reverse(urls)
	if s.back, err = newBackend(s, urls); err != nil {
		return nil, err
	}
	if err := s.startDocks(); err != nil {
		return nil, err
	}
	if err := s.waitRoutes(); err != nil {
		return nil, err
	}
	if err := s.traffic(f); err != nil {
		return f, err
	}
	if err := s.checkRetained(); err != nil {
		return f, err
	}
	if err := s.roam(f); err != nil {
		return f, err
	}
	if err := s.idle(f); err != nil {
		return f, err
	}
	return f, s.checkLedger()
}

// startDocks starts every dock (a few at a time: each is a dbus-daemon
// and a gatewayd starting up) and waits for every gatewayd's READY=1.
func (s *sim) startDocks() error {
	for k := range s.o.gateways {
		var mine []*simLock
		for i := range s.o.locks {
			l, err := newSimLock(s.fleet, k*s.o.locks+i, k)
			if err != nil {
				return err
			}
			s.locks = append(s.locks, l)
			mine = append(mine, l)
		}
		d, err := s.startDock(k, mine)
		if err != nil {
			return err
		}
		s.docks = append(s.docks, d)
		if k%5 == 4 || k == s.o.gateways-1 {
			for _, d := range s.docks[max(0, k-4) : k+1] {
				if err := d.waitReady(s.ctx); err != nil {
					return err
				}
			}
			if s.o.verbose || k == s.o.gateways-1 {
				s.say("   %d gatewayd ready", k+1)
			}
		}
	}
	return nil
}

// waitRoutes waits until the presence of every dock routes each of its
// locks to it.
func (s *sim) waitRoutes() error {
	start := time.Now()
	deadline := start.Add(3*time.Minute + time.Duration(s.o.gateways)*time.Second)
	for {
		missing := 0
		for _, l := range s.locks {
			if gw, err := s.back.table.Route(l.id); err != nil || gw != s.docks[l.home].id {
				missing++
			}
		}
		if missing == 0 {
			s.say("   every lock routed to its dock by the retained presence after %.1f s", time.Since(start).Seconds())
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d locks not routed to their dock by presence", missing, len(s.locks))
		}
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// roamers are the locks that move (kept out of the traffic): dock 0's
// first lock (heard by docks 0 and 1 at once), dock 1's first (moves to
// dock 2).
func (s *sim) roamers() (overlap, mover *simLock) {
	return s.locks[0], s.locks[s.o.locks]
}

// traffic runs one closed-loop sender per dock for the traffic window:
// a random lock of the dock, routed by presence, unlock and lock in turn.
// Halfway, broker node 1 is SIGKILLed.
func (s *sim) traffic(f *figures) error {
	s.say("== traffic for %v; node n1 is killed halfway", s.o.traffic)
	overlap, mover := s.roamers()
	start := time.Now()
	end := start.Add(s.o.traffic)
	ctx, cancel := context.WithDeadline(s.ctx, end)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(s.docks))
	for _, d := range s.docks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(d.k), 17))
			next := map[*simLock]command.Op{}
			for ctx.Err() == nil {
				l := s.locks[d.k*s.o.locks+rng.IntN(s.o.locks)]
				if l == overlap || l == mover {
					continue
				}
				gw, err := s.back.table.Route(l.id)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				op := next[l]
				if op == 0 || op == command.OpLock {
					op = command.OpUnlock
				} else {
					op = command.OpLock
				}
				next[l] = op
				c := s.back.sign(l, op)
				// Sending and waiting outlive the window: an accepted
				// command is followed to its result.
				s.back.send(s.ctx, c, gw)
				if !s.back.waitFor(s.ctx, 3*time.Minute, c.answered) {
					errs <- fmt.Errorf("command %s to %s (lock %s): no result in 3 minutes", c.id, gw, l.hex)
					return
				}
			}
		}()
	}
	time.Sleep(s.o.traffic / 2)
	killed := s.cluster.Nodes[0]
	f.KilledNode = killed.Name
	killAt := time.Now()
	killed.Kill()
	s.say("   killed node %s (%s)", killed.Name, killed.URL())
	var affected []*dock
	for _, d := range s.docks {
		if d.node == 0 {
			affected = append(affected, d)
		}
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	// Every gateway that was on the killed node published its online
	// status again through another node.
	var fo []float64
	ok := s.back.waitFor(s.ctx, time.Minute, func() bool {
		fo = fo[:0]
		for _, d := range affected {
			i := slices.IndexFunc(s.back.onlines[d.id], func(t time.Time) bool { return t.After(killAt) })
			if i < 0 {
				return false
			}
			fo = append(fo, s.back.onlines[d.id][i].Sub(killAt).Seconds())
		}
		return true
	})
	if !ok {
		return fmt.Errorf("gateways on the killed node not back online within a minute of the kill")
	}
	// And, some seconds later, its presence again (the broker may not
	// have stored the last one during the election: docs/scaling.md).
	var re []float64
	ok = s.back.waitFor(s.ctx, time.Minute, func() bool {
		re = re[:0]
		for _, d := range affected {
			i := slices.IndexFunc(s.back.locksAt[d.id], func(t time.Time) bool { return t.After(killAt) })
			if i < 0 {
				return false
			}
			re = append(re, s.back.locksAt[d.id][i].Sub(killAt).Seconds())
		}
		return true
	})
	if !ok {
		return fmt.Errorf("gateways on the killed node did not publish their presence again within a minute of the kill")
	}
	if len(re) > 0 {
		f.PresenceAgainMaxS = slices.Max(re)
	}
	slices.Sort(fo)
	f.FailedOver = len(fo)
	if len(fo) > 0 {
		f.FailoverP50S, f.FailoverMaxS = fo[len(fo)/2], fo[len(fo)-1]
	}
	// Latency and throughput over the commands of the window.
	var lat []float64
	s.back.mu.Lock()
	for _, c := range s.back.order {
		if !c.firstAt.IsZero() && c.firstAt.Before(end) {
			lat = append(lat, float64(c.firstAt.Sub(c.sentAt).Milliseconds()))
		}
	}
	s.back.mu.Unlock()
	slices.Sort(lat)
	f.Commands, f.Seconds = len(lat), s.o.traffic.Seconds()
	f.PerSecond = float64(len(lat)) / s.o.traffic.Seconds()
	if len(lat) > 0 {
		f.P50ms, f.P99ms, f.Maxms = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	}
	s.say("   %d commands answered; %d gateways failed over (max %.1f s)", f.Commands, f.FailedOver, f.FailoverMaxS)
	// Node 1 comes back, as after a repair.
	if err := killed.Restart(s.ctx); err != nil {
		return fmt.Errorf("restart %s: %w", killed.Name, err)
	}
	s.say("   node %s back", killed.Name)
	return s.checkResults()
}

// checkResults: every command the broker acknowledged has exactly one
// result from each gateway it went to (none lost, none doubled).
func (s *sim) checkResults() error {
	s.back.waitFor(s.ctx, 2*time.Minute, func() bool {
		for _, c := range s.back.order {
			if len(c.acked) > 0 && !c.answered() {
				return false
			}
		}
		return true
	})
	s.back.mu.Lock()
	defer s.back.mu.Unlock()
	var bad []string
	for _, c := range s.back.order {
		for _, gw := range c.sentTo {
			if _, ok := c.acked[gw]; !ok {
				continue
			}
			if n := len(c.results[gw]); n != 1 {
				bad = append(bad, fmt.Sprintf("command %s at %s: %d results %v (refused %q)", c.id, gw, n, c.results[gw], c.refused[gw]))
			}
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("acknowledged commands without exactly one result:\n  %s", strings.Join(bad, "\n  "))
	}
	return nil
}

// checkRetained: a new backend on a node that was never killed receives
// every gateway's retained status (online) and lock presence.
func (s *sim) checkRetained() error {
	n := s.cluster.Nodes[1]
	o := mqtt.NewClientOptions().AddBroker(n.URL()).SetClientID("fleetsim-late").SetCleanSession(true).SetConnectTimeout(10 * time.Second)
	var mu sync.Mutex
	status, locks := map[string]string{}, map[string]bool{}
	h := func(_ mqtt.Client, m mqtt.Message) {
		if !m.Retained() {
			return
		}
		gw, kind := s.back.gatewayOf(m.Topic())
		mu.Lock()
		defer mu.Unlock()
		switch kind {
		case "status":
			var st struct {
				State string `json:"state"`
			}
			_ = json.Unmarshal(m.Payload(), &st)
			status[gw] = st.State
		case "locks":
			locks[gw] = true
		}
	}
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		return fmt.Errorf("late backend: %v", tok.Error())
	}
	defer c.Disconnect(100)
	if err := subscribe(c, map[string]byte{s.back.prefix + "/gw/+/status": 1, s.back.prefix + "/gw/+/locks": 1}, h); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		var missing []string
		for _, d := range s.docks {
			if status[d.id] != "online" || !locks[d.id] {
				missing = append(missing, fmt.Sprintf("%s(status %q, locks %v)", d.id, status[d.id], locks[d.id]))
			}
		}
		mu.Unlock()
		if len(missing) == 0 {
			s.say("   a new backend on %s read every gateway's retained status (online) and presence", n.Name)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("retained status or presence missing after the node's death: %s", strings.Join(missing, " "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// roam: a lock heard by two docks at once gets the same signed unlock
// from both (the bolt moves once); then a lock leaves its dock for another
// and a command follows it there by presence.
func (s *sim) roam(f *figures) error {
	s.say("== roaming")
	overlap, mover := s.roamers()
	a, b, c := s.docks[0], s.docks[1], s.docks[2]
	if err := b.emu.AddLock(overlap.l, overlap.addr, emulatorOpts()); err != nil {
		return err
	}
	if !s.waitWhere(overlap, a.id, b.id) {
		return fmt.Errorf("lock %s not in both %s's and %s's presence", overlap.hex, a.id, b.id)
	}
	before := overlap.act.Moves()
	cmd := s.back.sign(overlap, command.OpUnlock)
	s.back.send(s.ctx, cmd, a.id, b.id)
	if !s.back.waitFor(s.ctx, 3*time.Minute, cmd.answered) {
		return fmt.Errorf("unlock sent to %s and %s: no result from both", a.id, b.id)
	}
	s.back.mu.Lock()
	f.OverlapStatuses = cmd.statuses()
	s.back.mu.Unlock()
	// One gateway ran it; the other's lock answer was duplicate_command.
	firsts, dups := 0, 0
	for _, st := range f.OverlapStatuses {
		switch {
		case strings.HasSuffix(st, ":ok"):
			firsts++
		case strings.HasSuffix(st, ":ok (duplicate_command)"):
			dups++
		}
	}
	if moved := overlap.act.Moves() - before; moved != 1 || firsts != 1 || dups != 1 {
		return fmt.Errorf("one unlock sent to two docks hearing the lock: bolt moved %d times, results %v", moved, f.OverlapStatuses)
	}
	s.say("   lock %s heard by %s and %s: one unlock sent to both → %v, bolt moved once", overlap.hex, a.id, b.id, f.OverlapStatuses)

	// The mover leaves dock 1 and appears at dock 2.
	t0 := time.Now()
	if err := b.emu.RemoveLock(mover.addr); err != nil {
		return err
	}
	if err := c.emu.AddLock(mover.l, mover.addr, emulatorOpts()); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Minute)
	defer cancel()
	gw, err := s.back.table.Wait(ctx, mover.id, b.id)
	if err != nil {
		return fmt.Errorf("lock %s moved to %s: %w", mover.hex, c.id, err)
	}
	f.PresenceMovedS = time.Since(t0).Seconds()
	if gw != c.id {
		return fmt.Errorf("lock %s moved to %s but routed to %s", mover.hex, c.id, gw)
	}
	st := s.back.sign(mover, command.OpUnlock)
	s.back.send(s.ctx, st, gw)
	if !s.back.waitFor(s.ctx, 3*time.Minute, st.answered) {
		return fmt.Errorf("lock %s at its new dock: no result", mover.hex)
	}
	f.ReachableS = time.Since(t0).Seconds()
	s.back.mu.Lock()
	sts := st.statuses()
	s.back.mu.Unlock()
	if len(sts) != 1 || !strings.HasSuffix(sts[0], ":ok") {
		return fmt.Errorf("lock %s at its new dock: %v", mover.hex, sts)
	}
	s.say("   lock %s moved %s → %s: routed there after %.1f s, unlocked through it after %.1f s", mover.hex, b.id, c.id, f.PresenceMovedS, f.ReachableS)
	return s.checkResults()
}

// waitWhere waits until l's presence shows it at every one of gws.
func (s *sim) waitWhere(l *simLock, gws ...string) bool {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) && s.ctx.Err() == nil {
		where := s.back.table.Where(l.id)
		all := true
		for _, g := range gws {
			all = all && slices.Contains(where, g)
		}
		if all {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// idle counts the gateways' publications while no command flows.
func (s *sim) idle(f *figures) error {
	s.say("== idle for %v", s.o.idle)
	s.back.idleMsgs.Store(0)
	s.back.idleMu.Lock()
	clear(s.back.idleKind)
	s.back.idleMu.Unlock()
	s.back.counting.Store(true)
	select {
	case <-s.ctx.Done():
		return s.ctx.Err()
	case <-time.After(s.o.idle):
	}
	s.back.counting.Store(false)
	f.IdleSeconds = s.o.idle.Seconds()
	s.back.idleMu.Lock()
	f.IdleByKind = maps.Clone(s.back.idleKind)
	s.back.idleMu.Unlock()
	f.IdleMsgsPerGwMin = float64(s.back.idleMsgs.Load()) / float64(len(s.docks)) / s.o.idle.Minutes()
	return nil
}

// checkLedger: every lock's bolt moved exactly once per distinct lock or
// unlock command it answered ok, across all gateways.
func (s *sim) checkLedger() error {
	s.back.mu.Lock()
	defer s.back.mu.Unlock()
	oks := map[*simLock]int{}
	for _, c := range s.back.order {
		if c.op != command.OpLock && c.op != command.OpUnlock {
			continue
		}
		for _, gw := range c.sentTo {
			if slices.ContainsFunc(c.results[gw], func(r resultKey) bool { return r.Status == "ok" }) {
				oks[c.lock]++
				break
			}
		}
	}
	var bad []string
	for _, l := range s.locks {
		if m := l.act.Moves(); m != oks[l] {
			bad = append(bad, fmt.Sprintf("lock %s: bolt moved %d times for %d successful commands", l.hex, m, oks[l]))
		}
	}
	if len(s.back.bad) > 0 {
		bad = append(bad, "route refused: "+strings.Join(s.back.bad, "; "))
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "\n"))
	}
	s.say("   every bolt moved exactly once per successful lock or unlock (%d locks)", len(s.locks))
	return nil
}
