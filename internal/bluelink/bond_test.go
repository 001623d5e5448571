package bluelink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/fleet"
)

// bondEvent is one OnBond call.
type bondEvent struct {
	lock  bonds.LockID
	addr  string
	state bonds.BondState
	err   error
}

// bondRecorder records ShouldBond questions and OnBond calls.
type bondRecorder struct {
	should bool

	mu     sync.Mutex
	asked  []string
	events []bondEvent
}

func (b *bondRecorder) shouldBond(id bonds.LockID, addr string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.asked = append(b.asked, id.String()+" "+addr)
	return b.should
}

func (b *bondRecorder) onBond(id bonds.LockID, addr string, state bonds.BondState, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, bondEvent{id, addr, state, err})
}

// take returns the events so far and forgets them.
func (b *bondRecorder) take() []bondEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	ev := b.events
	b.events = nil
	return ev
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// bondingLink is a Link on the rig's connection with our agent exported
// and registered on it, bonding as rec says, logging to log (nil
// discards).
func (r *rig) bondingLink(t *testing.T, rec *bondRecorder, log *slog.Logger) *Link {
	t.Helper()
	agent, err := bluez.NewAgent(t.Context(), r.conn, bluez.AgentOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Close() })
	l, err := New(Options{Adapter: r.ad, Channel: r.fleet.GatewayConfig(r.gw), Logger: log,
		Conn: r.conn, Agent: agent, ShouldBond: rec.shouldBond, OnBond: rec.onBond, BondTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// session dials lock i, runs the handshake (and with it any bonding),
// checks the gateway's status command goes through, and closes.
func (r *rig) session(t *testing.T, l *Link, i int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := l.Dial(ctx, r.ids[i])
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := s.(fleet.Handshaker).Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := s.Do(ctx, command.OpStatus, nil)
	if err != nil || res.Status != command.StatusOK {
		t.Fatalf("status after the handshake: %v %v", res, err)
	}
}

func (r *rig) paired(t *testing.T, i int) bool {
	t.Helper()
	addrs, err := r.ad.PairedDevices(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(addrs, r.addrs[i])
}

func states(ev []bondEvent) []bonds.BondState {
	var out []bonds.BondState
	for _, e := range ev {
		out = append(out, e.state)
	}
	return out
}

// TestBondAfterHandshake: with ShouldBond true, the handshake bonds (the
// lock's window, its passkey through our agent), OnBond sees bonding then
// bonded, BlueZ holds the bond, and the session's commands go through. A
// later session finds the bond in BlueZ and does not bond again.
func TestBondAfterHandshake(t *testing.T) {
	r := newRig(t, 2)
	rec := &bondRecorder{should: true}
	l := r.bondingLink(t, rec, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	s, err := l.Dial(ctx, r.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := s.(fleet.Handshaker).Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	if !r.paired(t, 1) || r.paired(t, 0) {
		t.Errorf("paired after the handshake: lock 1 %v, lock 0 %v", r.paired(t, 1), r.paired(t, 0))
	}
	ev := rec.take()
	if got := states(ev); !slices.Equal(got, []bonds.BondState{bonds.BondBonding, bonds.BondBonded}) {
		t.Fatalf("OnBond states %v, want bonding, bonded (%+v)", got, ev)
	}
	for _, e := range ev {
		if e.lock != r.ids[1] || e.addr != r.addrs[1] || e.err != nil {
			t.Errorf("OnBond %+v, want lock %s at %s, no error", e, r.ids[1], r.addrs[1])
		}
	}
	if want := r.ids[1].String() + " " + r.addrs[1]; !slices.Equal(rec.asked, []string{want}) {
		t.Errorf("ShouldBond asked %v, want [%s]", rec.asked, want)
	}
	res, err := s.Do(ctx, command.OpUnlock, r.signed(t, 1, command.OpUnlock, 1))
	if err != nil || res.Status != command.StatusOK {
		t.Fatalf("unlock in the bonded session: %v %v", res, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if r.acts[1].Moves() != 1 {
		t.Errorf("moves %d", r.acts[1].Moves())
	}

	// The next session: BlueZ holds the bond; no allow-bond, no Pair.
	r.session(t, l, 1)
	if got := states(rec.take()); !slices.Equal(got, []bonds.BondState{bonds.BondBonded}) {
		t.Errorf("second session: OnBond states %v, want bonded only", got)
	}
	if !r.paired(t, 1) {
		t.Error("the bond went away")
	}
}

// TestBondFailureKeepsSession: a pairing that fails (an SMP Pairing
// Failed) is reported with state none and the error; it dropped the link,
// as real BlueZ does (the emulator follows it), so the session connects
// again, through the emulator's reconnect stall, and its command still
// goes through; a later session bonds.
func TestBondFailureKeepsSession(t *testing.T) {
	r := newRig(t, 1)
	rec := &bondRecorder{should: true}
	l := r.bondingLink(t, rec, nil)
	if err := r.emu.InjectFaults(r.addrs[0], emulator.Faults{PairFail: 1}); err != nil {
		t.Fatal(err)
	}
	r.session(t, l, 0)
	ev := rec.take()
	if got := states(ev); !slices.Equal(got, []bonds.BondState{bonds.BondBonding, bonds.BondNone}) {
		t.Fatalf("OnBond states %v, want bonding, none (%+v)", got, ev)
	}
	if err := ev[1].err; !errors.Is(err, bluez.ErrAuthentication) {
		t.Errorf("failure reported as %v, want bluez.ErrAuthentication", err)
	}
	if r.paired(t, 0) {
		t.Error("paired despite the failure")
	}

	r.session(t, l, 0)
	ev = rec.take()
	if got := states(ev); !slices.Equal(got, []bonds.BondState{bonds.BondBonding, bonds.BondBonded}) {
		t.Fatalf("second session: OnBond states %v, want bonding, bonded (%+v)", got, ev)
	}
	if !r.paired(t, 0) {
		t.Error("not paired after the second session")
	}
}

// TestNoBond: ShouldBond false (or nil) never pairs; ShouldBond without
// the connection and agent is a configuration error.
func TestNoBond(t *testing.T) {
	r := newRig(t, 1)
	rec := &bondRecorder{should: false}
	l := r.bondingLink(t, rec, nil)
	r.session(t, l, 0)
	r.session(t, r.link, 0) // ShouldBond nil
	if ev := rec.take(); len(ev) != 0 {
		t.Errorf("OnBond called: %+v", ev)
	}
	if len(rec.asked) != 1 {
		t.Errorf("ShouldBond asked %d times, want 1", len(rec.asked))
	}
	if r.paired(t, 0) {
		t.Error("paired although ShouldBond said no")
	}
	if _, err := New(Options{Adapter: r.ad, Channel: r.fleet.GatewayConfig(r.gw), ShouldBond: rec.shouldBond}); err == nil {
		t.Error("ShouldBond without Conn and Agent accepted")
	}
}

// sixDigits is a number of exactly six digits standing alone: what a
// passkey looks like when printed.
var sixDigits = regexp.MustCompile(`\b\d{6}\b`)

// TestPasskeyNeverLogged: the debug log of the link and the agent, over a
// failed and then a successful bonding, holds neither the passkey of the
// failed attempt's window (still open on the lock, so the test can read
// it) nor any six-digit number.
func TestPasskeyNeverLogged(t *testing.T) {
	r := newRig(t, 1)
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{} // timestamps are not passkeys
			}
			return a
		}}))
	rec := &bondRecorder{should: true}
	l := r.bondingLink(t, rec, log)
	if err := r.emu.InjectFaults(r.addrs[0], emulator.Faults{PairFail: 1}); err != nil {
		t.Fatal(err)
	}
	r.session(t, l, 0)
	own, err := l.adapterAddress(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pk, open := r.locks[0].BondPasskey(own)
	if !open {
		t.Fatalf("no bond window open for %s after the failed pairing", own)
	}
	r.session(t, l, 0)
	ev := rec.take()
	if got := states(ev); !slices.Equal(got, []bonds.BondState{bonds.BondBonding, bonds.BondNone, bonds.BondBonding, bonds.BondBonded}) {
		t.Fatalf("OnBond states %v", got)
	}

	out := buf.String()
	for _, want := range []string{"bonding failed", "msg=bonded", "RequestPasskey answered"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q:\n%s", want, out)
		}
	}
	if s := fmt.Sprintf("%06d", pk); strings.Contains(out, s) {
		t.Errorf("the log holds the passkey %s:\n%s", s, out)
	}
	if m := sixDigits.FindAllString(out, -1); m != nil {
		t.Errorf("the log holds six-digit numbers %v:\n%s", m, out)
	}
	for _, e := range ev {
		if e.err != nil && strings.Contains(e.err.Error(), fmt.Sprintf("%06d", pk)) {
			t.Errorf("an OnBond error holds the passkey: %v", e.err)
		}
	}
}
