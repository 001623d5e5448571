package operator

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

func (e *env) revocationList(t *testing.T, serial uint64, parties ...channeltest.Party) []byte {
	t.Helper()
	var kids [][]byte
	for _, p := range parties {
		kids = append(kids, p.Cert.KID)
	}
	raw, err := cred.IssueRevocations(e.fleet.Root, e.fleet.RootKID, serial, e.fleet.Now, kids)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (e *env) revocations(t *testing.T, path string) *Revocations {
	t.Helper()
	r, err := NewRevocations(RevocationsOptions{Roots: e.fleet.Roots, Path: path, OwnKID: e.gateway.Cert.KID, GatewayID: "gw-dock-7"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRevocationsTopic(t *testing.T) {
	tp, err := NewTopics("acme/v1", "gw-1")
	if err != nil || tp.Revocations != "acme/v1/fleet/revocations" {
		t.Fatalf("revocations topic %q, %v", tp.Revocations, err)
	}
}

// TestAttackOlderRevocationListOnGateway: an older list never replaces a
// newer one, neither in memory nor across a restart.
func TestAttackOlderRevocationListOnGateway(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "revocations.cbor")
	r := e.revocations(t, path)
	newer, older := e.revocationList(t, 8, e.operator), e.revocationList(t, 7)
	if ok, err := r.Offer(newer); !ok || err != nil {
		t.Fatalf("newer list: %v %v", ok, err)
	}
	if ok, err := r.Offer(older); ok || !errors.Is(err, ErrRevocations) {
		t.Fatalf("older list: %v %v", ok, err)
	}
	if ok, err := r.Offer(e.revocationList(t, 8)); ok || !errors.Is(err, ErrRevocations) {
		t.Fatalf("another list with the same serial: %v %v", ok, err)
	}
	if ok, err := r.Offer(newer); ok || err != nil {
		t.Fatalf("the same list again: %v %v", ok, err)
	}
	if s, rev := r.Revoked(e.operator.Cert.KID); s != 8 || !rev {
		t.Fatalf("Revoked: %d %v", s, rev)
	}
	// Restart: the stored list is back, and the older one still refused.
	r = e.revocations(t, path)
	if r.Current() == nil || r.Current().Serial != 8 {
		t.Fatalf("after restart: %+v", r.Current())
	}
	if ok, _ := r.Offer(older); ok {
		t.Fatal("an older list replaced the stored one after a restart")
	}
	// Retained delivery: Handle acknowledges whatever the outcome.
	acked := 0
	r.Handle(Message{Payload: older, Ack: func() { acked++ }})
	r.Handle(Message{Payload: nil, Ack: func() { acked++ }})
	if acked != 2 || r.Current().Serial != 8 {
		t.Fatalf("acked %d, serial %d", acked, r.Current().Serial)
	}
	if got := testutil.ToFloat64(serialGauge{r}); got != 8 {
		t.Fatalf("gatewayd_revocations_serial %v", got)
	}
}

func TestAttackRevocationListNotSignedByFleetRootOnGateway(t *testing.T) {
	e := newEnv(t)
	r := e.revocations(t, filepath.Join(t.TempDir(), "revocations.cbor"))
	rogue := channeltest.NewFleet(t, "rogue")
	forged, err := cred.IssueRevocations(rogue.Root, rogue.RootKID, 99, e.fleet.Now, [][]byte{e.admin.Cert.KID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Offer(forged); !errors.Is(err, cred.ErrUnknownRoot) {
		t.Fatalf("rogue root: %v", err)
	}
	forged, _ = cred.IssueRevocations(rogue.Root, e.fleet.RootKID, 99, e.fleet.Now, [][]byte{e.admin.Cert.KID})
	if _, err := r.Offer(forged); !errors.Is(err, cred.ErrBadSignature) {
		t.Fatalf("forged under the fleet root's kid: %v", err)
	}
	if _, err := r.Offer(e.sign(t, e.admin, e.body(command.OpUnlock, 1))); !errors.Is(err, cred.ErrMalformed) {
		t.Fatalf("a signed command offered as a list: %v", err)
	}
	if r.Current() != nil {
		t.Fatal("a refused list was installed")
	}
	// A corrupt stored file stops the start (fail closed).
	path := filepath.Join(t.TempDir(), "revocations.cbor")
	if err := writeFile(path, forged); err != nil {
		t.Fatal(err)
	}
	if _, err := NewRevocations(RevocationsOptions{Roots: e.fleet.Roots, Path: path}); err == nil {
		t.Fatal("a stored list that does not verify was loaded")
	}
}

// TestAttackRevokedOperatorAtIntake: a command signed by a revoked
// operator is refused before the journal, with a notice naming the list.
func TestAttackRevokedOperatorAtIntake(t *testing.T) {
	e := newEnv(t)
	r := e.revocations(t, "")
	if _, err := r.Offer(e.revocationList(t, 3, e.operator)); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, "", e.clock.Now)
	in := e.intake(t, recJournal{db, e.events}, func(o *IntakeOptions) { o.Revoked = r.Revoked })
	in.Enqueue(e.msg("revoked", e.sign(t, e.operator, e.body(command.OpUnlock, 1))))
	in.Enqueue(e.msg("other", e.sign(t, e.admin, e.body(command.OpUnlock, 1))))
	waitFor(t, "acks", func() bool { return e.events.index("ack revoked") >= 0 && e.events.index("ack other") >= 0 })
	ns := e.notices(t)
	if len(ns) != 1 || ns[0].Reason != ReasonSignerRejected || !strings.Contains(ns[0].Detail, "revoked by the fleet revocation list 3") {
		t.Fatalf("notices %+v", ns)
	}
	j := e.journaled()
	if len(j) != 1 || j[0].Operator != e.admin.Cert.Subject {
		t.Fatalf("journaled %+v: want only the admin's command", j)
	}
}

// serialGauge collects only the serial gauge, for testutil.ToFloat64.
type serialGauge struct{ r *Revocations }

func (g serialGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.r.descSerial }
func (g serialGauge) Collect(ch chan<- prometheus.Metric) { collectOnly(g.r, g.r.descSerial, ch) }

// revokedGauge collects only gatewayd_revocations_gateway_revoked.
type revokedGauge struct{ r *Revocations }

func (g revokedGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.r.descRevoked }
func (g revokedGauge) Collect(ch chan<- prometheus.Metric) { collectOnly(g.r, g.r.descRevoked, ch) }

func collectOnly(r *Revocations, d *prometheus.Desc, ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric, 8)
	r.Collect(all)
	close(all)
	for m := range all {
		if m.Desc() == d {
			ch <- m
		}
	}
}

// TestAttackGatewayRevokedGauge: a list that revokes this gateway's own
// credential sets gatewayd_revocations_gateway_revoked to 1 (the alert
// GatewaydCredentialRevoked), also when the list is loaded from disk at
// start; a list that revokes others leaves it at 0.
func TestAttackGatewayRevokedGauge(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "revocations.cbor")
	r := e.revocations(t, path)
	if got := testutil.ToFloat64(revokedGauge{r}); got != 0 || r.OwnRevoked() {
		t.Fatalf("no list: gauge %v", got)
	}
	if _, err := r.Offer(e.revocationList(t, 1, e.operator)); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(revokedGauge{r}); got != 0 || r.OwnRevoked() {
		t.Fatalf("a list revoking an operator: gauge %v", got)
	}
	if _, err := r.Offer(e.revocationList(t, 2, e.operator, e.gateway)); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(revokedGauge{r}); got != 1 || !r.OwnRevoked() {
		t.Fatalf("a list revoking this gateway: gauge %v", got)
	}
	if got := testutil.ToFloat64(revokedGauge{e.revocations(t, path)}); got != 1 {
		t.Fatalf("after a restart: gauge %v", got)
	}
	if probs, err := testutil.CollectAndLint(r); err != nil || len(probs) > 0 {
		t.Fatalf("metric lint: %v %v", probs, err)
	}
	// Without its own kid the gateway cannot tell, and claims nothing.
	blind, err := NewRevocations(RevocationsOptions{Roots: e.fleet.Roots, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(revokedGauge{blind}); got != 0 {
		t.Fatalf("without OwnKID: gauge %v", got)
	}
}

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }

// TestRevocationsReloadAndSetRoots: Reload takes a newer list copied to
// the file, ignores the same one and refuses an older one (the held list
// stays); SetRoots refuses roots under which the held list does not
// verify (the old roots stay: a list of theirs is still accepted), and
// takes roots that still verify it, after which lists are checked
// against the new roots.
func TestRevocationsReloadAndSetRoots(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "revocations.cbor")
	r := e.revocations(t, path)
	if ok, err := r.Reload(); ok || err != nil {
		t.Fatalf("reload without a file: %v %v", ok, err)
	}
	if err := writeFile(path, e.revocationList(t, 3, e.operator)); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Reload(); !ok || err != nil {
		t.Fatalf("reload of a newer list: %v %v", ok, err)
	}
	if s, revoked := r.Revoked(e.operator.Cert.KID); s != 3 || !revoked {
		t.Fatalf("after the reload: serial %d, revoked %v", s, revoked)
	}
	if ok, err := r.Reload(); ok || err != nil {
		t.Fatalf("reload of the same list: %v %v", ok, err)
	}
	if err := writeFile(path, e.revocationList(t, 2)); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Reload(); ok || !errors.Is(err, ErrRevocations) {
		t.Fatalf("reload of an older list: %v %v", ok, err)
	}
	if s, _ := r.Revoked(nil); s != 3 {
		t.Fatalf("serial %d after an older list", s)
	}

	other := channeltest.NewFleet(t, "other")
	if err := r.SetRoots(other.Roots); !errors.Is(err, ErrRevocations) || !errors.Is(err, cred.ErrUnknownRoot) {
		t.Fatalf("roots that do not verify the held list: %v", err)
	}
	if ok, err := r.Offer(e.revocationList(t, 4)); !ok || err != nil {
		t.Fatalf("a list of the kept roots: %v %v", ok, err)
	}
	both := cred.Roots{}
	for kid, pub := range e.fleet.Roots {
		both.Add([]byte(kid), pub)
	}
	for kid, pub := range other.Roots {
		both.Add([]byte(kid), pub)
	}
	if err := r.SetRoots(both); err != nil {
		t.Fatalf("roots that verify the held list: %v", err)
	}
	raw, err := cred.IssueRevocations(other.Root, other.RootKID, 5, other.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Offer(raw); !ok || err != nil {
		t.Fatalf("a list of the new root: %v %v", ok, err)
	}
}
