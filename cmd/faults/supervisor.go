package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gatewayd/gatewayd/internal/fleetproc"
)

// unitRules are the parts of the systemd unit the supervisor applies.
type unitRules struct {
	restart      string // Restart=
	restartDelay time.Duration
	prevent      []int // RestartPreventExitStatus=
	watchdog     time.Duration
	startTimeout time.Duration
	stopTimeout  time.Duration
}

func (u unitRules) String() string {
	return fmt.Sprintf("Restart=%s RestartSec=%v RestartPreventExitStatus=%v WatchdogSec=%v TimeoutStartSec=%v TimeoutStopSec=%v",
		u.restart, u.restartDelay, u.prevent, u.watchdog, u.startTimeout, u.stopTimeout)
}

// readUnit reads the [Service] rules of the unit file at path.
func readUnit(path string) (unitRules, error) {
	f, err := os.Open(path)
	if err != nil {
		return unitRules{}, fmt.Errorf("the unit file: %w (run from the repository's root, or give -unit)", err)
	}
	defer f.Close()
	return parseUnit(bufio.NewScanner(f))
}

func parseUnit(sc *bufio.Scanner) (unitRules, error) {
	u := unitRules{restart: "no", restartDelay: 100 * time.Millisecond, startTimeout: 90 * time.Second, stopTimeout: 90 * time.Second}
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		var err error
		switch k {
		case "Restart":
			u.restart = v
		case "RestartSec":
			u.restartDelay, err = unitDuration(v)
		case "WatchdogSec":
			u.watchdog, err = unitDuration(v)
		case "TimeoutStartSec":
			u.startTimeout, err = unitDuration(v)
		case "TimeoutStopSec":
			u.stopTimeout, err = unitDuration(v)
		case "RestartPreventExitStatus":
			for f := range strings.FieldsSeq(v) {
				n, e := strconv.Atoi(f)
				if e != nil {
					err = e
					break
				}
				u.prevent = append(u.prevent, n)
			}
		}
		if err != nil {
			return u, fmt.Errorf("unit: %s=%s: %w", k, v, err)
		}
	}
	if err := sc.Err(); err != nil {
		return u, err
	}
	if u.restart != "on-failure" && u.restart != "always" {
		return u, fmt.Errorf("unit: Restart=%s: the supervisor implements on-failure and always", u.restart)
	}
	return u, nil
}

// unitDuration parses a systemd time span of the forms the unit uses:
// "5s", "30s", "2min", "500ms", or plain seconds.
func unitDuration(s string) (time.Duration, error) {
	s = strings.ReplaceAll(s, "min", "m")
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(s)
}

// supEvent is something the supervisor saw or did.
type supEvent struct {
	At   time.Time
	What string // "start", "ready", "exit", "watchdog", "start-timeout", "not-restarted"
	Pid  int
	Note string
}

// supervisor runs gatewayd as systemd runs the unit: NOTIFY_SOCKET and
// WATCHDOG_USEC in its environment, READY=1 awaited for TimeoutStartSec,
// a kill (SIGABRT, as WatchdogSignal's default, then SIGKILL after
// TimeoutStopSec) when WATCHDOG=1 does not come within WatchdogSec, and a
// restart RestartSec after a failure unless the exit status is in
// RestartPreventExitStatus.
type supervisor struct {
	r  *rig
	u  unitRules
	ns *fleetproc.NotifySocket

	mu       sync.Mutex
	cond     *sync.Cond
	cur      *fleetproc.Proc
	readyAt  time.Time
	events   []supEvent
	wanted   bool // the daemon should run (false: stopped on purpose)
	running  bool // a gatewayd started and its exit not yet recorded
	quit     bool
	kick     chan struct{}
	finished chan struct{}
}

func newSupervisor(r *rig, ns *fleetproc.NotifySocket) *supervisor {
	s := &supervisor{r: r, u: r.unit, ns: ns, kick: make(chan struct{}, 1), finished: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *supervisor) event(what string, pid int, note string) {
	s.mu.Lock()
	s.events = append(s.events, supEvent{At: time.Now(), What: what, Pid: pid, Note: note})
	s.cond.Broadcast()
	s.mu.Unlock()
	if what != "start" && what != "ready" {
		s.r.say("   [supervisor] %s %s", what, note)
	}
}

// start starts the supervisor's loop, which starts gatewayd.
func (s *supervisor) start() {
	s.mu.Lock()
	s.wanted = true
	s.mu.Unlock()
	go s.loop()
}

func (s *supervisor) loop() {
	defer close(s.finished)
	defer s.ns.Close()
	for {
		s.mu.Lock()
		for !s.wanted && !s.quit {
			s.mu.Unlock()
			select {
			case <-s.kick:
			case <-s.r.ctx.Done():
				return
			}
			s.mu.Lock()
		}
		quit := s.quit
		s.running = !quit // under the same lock as the wanted check: stopDaemon waits for this run
		s.mu.Unlock()
		if quit {
			return
		}
		restart, deliberate := s.runOnce()
		s.mu.Lock()
		s.running = false
		s.cond.Broadcast()
		s.mu.Unlock()
		if deliberate {
			continue // stopped on purpose: wait to be wanted again
		}
		s.mu.Lock()
		if !restart {
			s.wanted = false
		}
		quit = s.quit
		wanted := s.wanted
		s.mu.Unlock()
		if quit {
			return
		}
		if wanted {
			select {
			case <-time.After(s.u.restartDelay):
			case <-s.r.ctx.Done():
				return
			}
		}
	}
}

// runOnce runs gatewayd until it exits and says whether to restart it, or
// that it was stopped on purpose (stopDaemon, stop).
func (s *supervisor) runOnce() (restart, deliberate bool) {
	cmd, w, logf, err := s.r.daemonCmd(s.ns.Path)
	if err != nil {
		s.event("exit", 0, err.Error())
		return true, false
	}
	p, err := s.r.procs.Start("gatewayd", cmd, w, logf)
	if err != nil {
		s.event("exit", 0, err.Error())
		return true, false
	}
	started := time.Now()
	s.mu.Lock()
	s.cur = p
	s.readyAt = time.Time{}
	s.mu.Unlock()
	s.event("start", p.Pid(), "")
	ready := false
	deadline := started.Add(s.u.startTimeout)
	killedFor := ""
	for !p.Exited() {
		s.mu.Lock()
		stop := !s.wanted || s.quit
		s.mu.Unlock()
		if stop {
			_ = p.Stop(syscall.SIGTERM, s.u.stopTimeout)
			deliberate = true
			break
		}
		m, err := s.ns.Read(100 * time.Millisecond)
		now := time.Now()
		if err == nil {
			if strings.Contains(m, "READY=1") && !ready {
				ready = true
				s.mu.Lock()
				s.readyAt = now
				s.mu.Unlock()
				s.event("ready", p.Pid(), "")
			}
			if strings.Contains(m, "WATCHDOG=1") || strings.Contains(m, "READY=1") {
				deadline = now.Add(s.u.watchdog)
			}
		}
		if now.After(deadline) && killedFor == "" {
			killedFor = "watchdog"
			if !ready {
				killedFor = "start-timeout"
				_ = p.Cmd.Process.Signal(syscall.SIGTERM)
			} else {
				_ = p.Cmd.Process.Signal(syscall.SIGABRT)
			}
			s.event(killedFor, p.Pid(), fmt.Sprintf("pid %d after %v", p.Pid(), now.Sub(started).Round(time.Millisecond)))
			go func() {
				select {
				case <-p.Done():
				case <-time.After(s.u.stopTimeout):
					_ = p.Cmd.Process.Kill()
				}
			}()
		}
	}
	<-p.Done()
	code := p.ExitCode()
	st, _ := p.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	note := fmt.Sprintf("pid %d: exit status %d", p.Pid(), code)
	if st.Signaled() {
		note = fmt.Sprintf("pid %d: killed by signal %d (%v)", p.Pid(), int(st.Signal()), st.Signal())
	}
	if deliberate {
		note += ", stopped on purpose"
	}
	s.event("exit", p.Pid(), note)
	s.mu.Lock()
	s.running = false
	s.cond.Broadcast()
	quit := s.quit
	s.mu.Unlock()
	if deliberate || quit {
		return false, true
	}
	for _, c := range s.u.prevent {
		if !st.Signaled() && code == c {
			s.event("not-restarted", p.Pid(), fmt.Sprintf("exit status %d is in RestartPreventExitStatus", code))
			return false, false
		}
	}
	clean := !st.Signaled() && code == 0 ||
		st.Signaled() && (st.Signal() == syscall.SIGTERM || st.Signal() == syscall.SIGINT || st.Signal() == syscall.SIGHUP || st.Signal() == syscall.SIGPIPE)
	if clean && killedFor == "" && s.u.restart == "on-failure" {
		s.event("not-restarted", p.Pid(), "clean exit under Restart=on-failure")
		return false, false
	}
	return true, false
}

// kill SIGKILLs the running gatewayd (the supervisor restarts it).
func (s *supervisor) kill() error {
	s.mu.Lock()
	p := s.cur
	s.mu.Unlock()
	if p == nil || p.Exited() {
		return errors.New("gatewayd is not running")
	}
	return p.Stop(syscall.SIGKILL, 10*time.Second)
}

// pid is the running gatewayd's process ID, or 0.
func (s *supervisor) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || s.cur.Exited() {
		return 0
	}
	return s.cur.Pid()
}

// waitReady waits for a READY=1 after after, and returns its time.
func (s *supervisor) waitReady(after time.Time, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		at := s.readyAt
		wanted := s.wanted
		s.mu.Unlock()
		if !at.IsZero() && at.After(after) {
			return at, nil
		}
		if !wanted {
			return time.Time{}, errors.New("gatewayd is stopped and the supervisor will not restart it")
		}
		if time.Now().After(deadline) || s.r.ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("no READY=1 from gatewayd within %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopDaemon stops gatewayd with SIGTERM, as systemctl stop, and keeps it
// stopped until startDaemon.
func (s *supervisor) stopDaemon() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wanted = false
	for s.running {
		s.cond.Wait()
	}
}

// startDaemon starts gatewayd again, as systemctl start.
func (s *supervisor) startDaemon() {
	s.mu.Lock()
	s.wanted = true
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// stop ends the supervisor: gatewayd gets SIGTERM and is not restarted.
func (s *supervisor) stop() {
	s.mu.Lock()
	s.quit = true
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	<-s.finished
}

// history returns the events so far.
func (s *supervisor) history() []supEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]supEvent(nil), s.events...)
}
