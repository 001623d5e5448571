package operator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

// TestAcceptedCommand: a valid command is appended (durably, on a real
// database) and only then acknowledged; the scheduler gets the entry; no
// notice, no result yet.
func TestAcceptedCommand(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	in := e.intake(t, recJournal{db, e.events}, nil)
	b := e.body(command.OpUnlock, 1)
	signed := e.sign(t, e.operator, b)
	in.Enqueue(e.msg("unlock", signed))
	waitFor(t, "ack", func() bool { return e.events.index("ack unlock") >= 0 })

	app, ack := e.events.index("append "+cidOf(b).String()), e.events.index("ack unlock")
	if app < 0 || app > ack {
		t.Fatalf("events %q: the ack must follow the append's return", e.events.all())
	}
	en, err := db.Entry(context.Background(), cidOf(b))
	if err != nil {
		t.Fatal(err)
	}
	if en.State != bonds.StateReceived || en.Operator != "op-olga" || en.Operation != "unlock" ||
		en.LockID != bonds.LockID(e.lockID) || !bytes.Equal(en.Payload, signed) || !en.NotAfter.Equal(b.NotAfter) {
		t.Fatalf("entry %+v", en)
	}
	if j := e.journaled(); len(j) != 1 || j[0].ID != cidOf(b) {
		t.Fatalf("OnJournaled got %+v", j)
	}
	if n := e.pub.Messages(""); len(n) != 0 {
		t.Fatalf("published %d messages for an accepted command", len(n))
	}
	if in.journaled.Load() != 1 {
		t.Fatalf("journaled counter %d", in.journaled.Load())
	}
}

// TestEveryOpOverMQTT: whatever Verify accepts is journaled: the admin
// signs every op but allow-bond and set-revocations (nobody signs those)
// and enter-dfu (the gateway does not carry it yet:
// TestAttackEnterDFUNotCarried), the fleet root signs set-time.
func TestEveryOpOverMQTT(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	in := e.intake(t, db, nil)
	n := 0
	for op := command.OpLock; op.Valid(); op++ {
		if op == command.OpAllowBond || op == command.OpSetRevocations || op == command.OpEnterDFU {
			continue
		}
		n++
		in.Enqueue(e.msg(op.String(), e.sign(t, e.admin, e.body(op, uint64(n)))))
	}
	root, err := command.SignAsRoot(e.fleet.Root, e.fleet.RootKID, e.body(command.OpSetTime, 1))
	if err != nil {
		t.Fatal(err)
	}
	in.Enqueue(e.msg("root-set-time", root))
	n++
	waitFor(t, "acks", func() bool { return len(e.events.all()) == n })
	pending, err := db.Pending(context.Background())
	if err != nil || len(pending) != n {
		t.Fatalf("Pending = %d entries, %v; want %d", len(pending), err, n)
	}
	if op := pending[n-1].Operator; !strings.HasPrefix(op, command.RootKeyPrefix) {
		t.Fatalf("root-signed command's operator %q", op)
	}
	if len(e.notices(t)) != 0 {
		t.Fatalf("notices: %+v", e.notices(t))
	}
}

// refused sends payload and checks: a notice with reason, the message
// acknowledged after it, nothing appended to the (real) journal.
func refused(t *testing.T, e *env, payload []byte, reason Reason) Rejected {
	t.Helper()
	db := openDB(t, "", e.clock.Now)
	in := e.intake(t, recJournal{db, e.events}, nil)
	in.Enqueue(e.msg("m", payload))
	waitFor(t, "ack", func() bool { return e.events.index("ack m") >= 0 })
	ns := e.notices(t)
	if len(ns) != 1 {
		t.Fatalf("%d notices, want 1", len(ns))
	}
	n := ns[0]
	t.Logf("notice: %+v", n)
	sum := sha256.Sum256(payload)
	if n.Reason != reason || n.PayloadSHA256 != hex.EncodeToString(sum[:]) || n.PayloadSize != len(payload) ||
		!n.ReceivedAt.Equal(e.clock.Now()) {
		t.Fatalf("notice %+v, want reason %s", n, reason)
	}
	for _, ev := range e.events.all() {
		if strings.HasPrefix(ev, "append") {
			t.Fatalf("refused input appended: %q", e.events.all())
		}
	}
	pending, _ := db.Pending(context.Background())
	outbox, _ := db.Outbox(context.Background())
	if len(pending) != 0 || len(outbox) != 0 || len(e.resultsOn(t)) != 0 {
		t.Fatal("refused input left something in the journal or produced a result")
	}
	if in.refused.Load() != 1 || in.byReason[reason].Load() != 1 {
		t.Fatalf("counters: refused %d, %s %d", in.refused.Load(), reason, in.byReason[reason].Load())
	}
	return n
}

func TestAttackOversized(t *testing.T) {
	e := newEnv(t)
	p := bytes.Repeat([]byte{0x84}, command.MaxSignedSize+1)
	n := refused(t, e, p, ReasonOversized)
	if n.CommandID != "" {
		t.Fatalf("oversized payload decoded: %+v", n)
	}
}

func TestAttackMalformed(t *testing.T) {
	valid := func(e *env, t *testing.T) []byte { return e.sign(t, e.operator, e.body(command.OpUnlock, 1)) }
	cases := map[string]func(*env, *testing.T) []byte{
		"empty":     func(*env, *testing.T) []byte { return nil },
		"garbage":   func(*env, *testing.T) []byte { return []byte("{\"op\":\"unlock\"}") },
		"truncated": func(e *env, t *testing.T) []byte { v := valid(e, t); return v[:len(v)-3] },
		"trailing":  func(e *env, t *testing.T) []byte { return append(valid(e, t), 0x00) },
		"tagged":    func(e *env, t *testing.T) []byte { return append([]byte{0xd2}, valid(e, t)...) },
		"indefinite": func(e *env, t *testing.T) []byte {
			v := valid(e, t)
			return append(append([]byte{0x9f}, v[1:]...), 0xff)
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			refused(t, e, mk(e, t), ReasonMalformed)
		})
	}
}

// TestAttackUntrustedRootKID: a command "signed by the fleet root" under a
// root kid that is not trusted (another fleet's root).
func TestAttackUntrustedRootKID(t *testing.T) {
	e := newEnv(t)
	other := channeltest.NewFleet(t, "rogue-fleet")
	p, err := command.SignAsRoot(other.Root, other.RootKID, e.body(command.OpSetTime, 1))
	if err != nil {
		t.Fatal(err)
	}
	refused(t, e, p, ReasonSignerRejected)
}

// TestAttackUntrustedFleetRoot: an admin credential issued by another
// fleet root.
func TestAttackUntrustedFleetRoot(t *testing.T) {
	e := newEnv(t)
	other := channeltest.NewFleet(t, "rogue-fleet")
	rogue := other.Operator(t, "admin-ann", cred.RoleAdmin)
	n := refused(t, e, e.sign(t, rogue, e.body(command.OpUnlock, 1)), ReasonSignerRejected)
	if n.CommandID == "" || n.LockID != hex.EncodeToString(e.lockID[:]) || n.Operation != "unlock" {
		t.Fatalf("notice does not name the claimed command: %+v", n)
	}
}

func TestAttackBitFlippedSignature(t *testing.T) {
	e := newEnv(t)
	p := e.sign(t, e.operator, e.body(command.OpUnlock, 1))
	p[len(p)-1] ^= 0x01
	refused(t, e, p, ReasonBadSignature)
}

func TestAttackOperatorRoleAddUser(t *testing.T) {
	e := newEnv(t)
	refused(t, e, e.sign(t, e.operator, e.body(command.OpAddUser, 1)), ReasonForbidden)
}

// TestAttackAllowBondOverMQTT: allow-bond is gateway-initiated and never
// signed; not even an admin's signature carries it.
func TestAttackAllowBondOverMQTT(t *testing.T) {
	e := newEnv(t)
	refused(t, e, e.sign(t, e.admin, e.body(command.OpAllowBond, 1)), ReasonForbidden)
}

// TestAttackRootSignsUnlock: the fleet root signs set-time only; this one
// is refused before its signature is checked, so it is not journaled.
func TestAttackRootSignsUnlock(t *testing.T) {
	e := newEnv(t)
	p, err := command.SignAsRoot(e.fleet.Root, e.fleet.RootKID, e.body(command.OpSetTime, 1))
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite the op in the body (set-time → unlock) and drop the args: the
	// signature no longer matches, but Verify refuses at step 4.
	b := e.body(command.OpUnlock, 1)
	forged := forgeBody(t, p, b)
	refused(t, e, forged, ReasonForbidden)
}

func TestAttackNonOperatorSigners(t *testing.T) {
	for _, who := range []string{"gateway", "lock", "user"} {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t)
			p := map[string]channeltest.Party{"gateway": e.gateway, "lock": e.lock, "user": e.user}[who]
			refused(t, e, e.sign(t, p, e.body(command.OpUnlock, 1)), ReasonSignerRejected)
		})
	}
}

func TestAttackExpiredSignerCredential(t *testing.T) {
	e := newEnv(t)
	old := e.fleet.Issue(t, cred.Claims{Subject: "op-gone", Kind: cred.KindOperator, Role: cred.RoleOperator,
		Perms: cred.OperatorPerms, NotBefore: e.fleet.Now.Add(-48 * time.Hour), Expiry: e.fleet.Now.Add(-time.Hour)})
	refused(t, e, e.sign(t, old, e.body(command.OpUnlock, 1)), ReasonSignerRejected)
}

// forgeBody replaces the payload of signed command p by body b, keeping
// its headers and signature (so the signature is bad).
func forgeBody(t *testing.T, p []byte, b command.Body) []byte {
	t.Helper()
	orig, err := command.Peek(p)
	if err != nil {
		t.Fatal(err)
	}
	op, err := command.MarshalBody(&orig)
	if err != nil {
		t.Fatal(err)
	}
	nb, err := command.MarshalBody(&b)
	if err != nil {
		t.Fatal(err)
	}
	// The payload is a byte string: replace its header and content.
	i := bytes.Index(p, op)
	if i < 0 {
		t.Fatal("payload not found")
	}
	hdr := func(n int) []byte {
		switch {
		case n < 24:
			return []byte{0x40 | byte(n)}
		case n < 256:
			return []byte{0x58, byte(n)}
		}
		return []byte{0x59, byte(n >> 8), byte(n)}
	}
	h := hdr(len(op))
	out := append([]byte(nil), p[:i-len(h)]...)
	out = append(out, hdr(len(nb))...)
	out = append(out, nb...)
	out = append(out, p[i+len(op):]...)
	if got, err := command.Peek(out); err != nil || got.Op != b.Op {
		t.Fatalf("forged body does not peek: %v", err)
	}
	return out
}

// TestAttackExpired: an authentic but expired command is journaled and
// gets exactly one result, state expired; no notice.
func TestAttackExpired(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	in := e.intake(t, recJournal{db, e.events}, nil)
	b := e.body(command.OpUnlock, 1)
	e.clock.Set(b.NotAfter.Add(time.Second))
	in.Enqueue(e.msg("m", e.sign(t, e.operator, b)))
	waitFor(t, "ack", func() bool { return e.events.index("ack m") >= 0 })
	en, err := db.Entry(context.Background(), cidOf(b))
	if err != nil {
		t.Fatal(err)
	}
	if en.State != bonds.StateExpired || en.Result == nil || en.Result.Status != StatusExpired || en.Operator != "op-olga" {
		t.Fatalf("entry %+v result %+v", en, en.Result)
	}
	outbox, _ := db.Outbox(context.Background())
	if len(outbox) != 1 || outbox[0].CommandID != cidOf(b) {
		t.Fatalf("outbox %+v", outbox)
	}
	if len(e.journaled()) != 0 {
		t.Fatal("an expired command was handed to the scheduler")
	}
	if e.results != 1 || len(e.notices(t)) != 0 {
		t.Fatalf("OnResult calls %d, notices %d", e.results, len(e.notices(t)))
	}
}

// TestAttackReplaySameBytes: the same signed command again is a duplicate:
// acknowledged, a notice, no second entry and no second result.
func TestAttackReplaySameBytes(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	in := e.intake(t, recJournal{db, e.events}, func(o *IntakeOptions) { o.Concurrency = 1 })
	b := e.body(command.OpUnlock, 1)
	p := e.sign(t, e.operator, b)
	in.Enqueue(e.msg("first", p))
	in.Enqueue(e.msg("replay", p))
	waitFor(t, "notice", func() bool { return len(e.pub.Messages(e.topics.Rejected)) == 1 })
	if e.events.index("ack first") < 0 || e.events.index("ack replay") < 0 {
		t.Fatalf("events %q", e.events.all())
	}
	n := e.notices(t)[0]
	if n.Reason != ReasonDuplicate || n.CommandID != cidOf(b).String() || n.State != bonds.StateReceived {
		t.Fatalf("notice %+v", n)
	}
	if len(e.journaled()) != 1 || in.duplicates.Load() != 1 || in.journaled.Load() != 1 {
		t.Fatalf("journaled %d (scheduler), counters %d/%d", len(e.journaled()), in.journaled.Load(), in.duplicates.Load())
	}

	// The command runs and finishes; the replay after that changes nothing.
	finish(t, db, cidOf(b))
	out := e.outbox(t, db)
	waitFor(t, "result", func() bool { return len(e.resultsOn(t)) == 1 })
	out.Close()
	in.Enqueue(e.msg("late-replay", p))
	waitFor(t, "ack", func() bool { return e.events.index("ack late-replay") >= 0 })
	waitFor(t, "notice", func() bool { return len(e.notices(t)) == 2 })
	if n := e.notices(t)[1]; n.State != bonds.StateSucceeded {
		t.Fatalf("notice %+v", n)
	}
	outbox, _ := db.Outbox(context.Background())
	if len(outbox) != 0 || len(e.resultsOn(t)) != 1 {
		t.Fatalf("a replay produced a second result: outbox %d", len(outbox))
	}
}

// finish runs a journaled command to succeeded, as the scheduler does.
func finish(t *testing.T, db *bonds.DB, id bonds.CommandID) {
	t.Helper()
	ctx := context.Background()
	for _, s := range []bonds.State{bonds.StateQueued, bonds.StateRunning} {
		if _, err := db.Transition(ctx, id, s, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Transition(ctx, id, bonds.StateSucceeded, func(e *bonds.Entry) {
		e.Result = &bonds.Result{Status: "ok"}
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAttackCounterReplay: a new command ID whose counter the lock
// already passed is journaled and rejected (status replay) at once.
func TestAttackCounterReplay(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	ctx := context.Background()
	lid := bonds.LockID(e.lockID)
	if err := db.PutLock(ctx, bonds.Lock{ID: lid}); err != nil {
		t.Fatal(err)
	}
	signerKey := hex.EncodeToString(e.operator.Cert.KID)
	if _, err := db.RaiseCounter(ctx, lid, signerKey, 10); err != nil {
		t.Fatal(err)
	}
	in := e.intake(t, db, func(o *IntakeOptions) { o.Concurrency = 1 })
	old, fresh := e.body(command.OpUnlock, 10), e.body(command.OpUnlock, 11)
	in.Enqueue(e.msg("old", e.sign(t, e.operator, old)))
	in.Enqueue(e.msg("fresh", e.sign(t, e.operator, fresh)))
	waitFor(t, "acks", func() bool { return e.events.count("ack old")+e.events.count("ack fresh") == 2 })
	en, err := db.Entry(ctx, cidOf(old))
	if err != nil || en.State != bonds.StateRejected || en.Result.Status != StatusReplay {
		t.Fatalf("old counter: %+v, %v", en, err)
	}
	en, err = db.Entry(ctx, cidOf(fresh))
	if err != nil || en.State != bonds.StateReceived {
		t.Fatalf("fresh counter: %+v, %v", en, err)
	}
	if j := e.journaled(); len(j) != 1 || j[0].ID != cidOf(fresh) {
		t.Fatalf("scheduler got %+v", j)
	}
}

// TestAttackCommandIDSquatting: a rogue client sends, ahead of the real
// command, a forgery with the same command ID (bad signature; a root-kid
// envelope refused before its signature is checked). Neither is
// journaled, so the real command is.
func TestAttackCommandIDSquatting(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	in := e.intake(t, db, func(o *IntakeOptions) { o.Concurrency = 1 })
	b := e.body(command.OpUnlock, 1)
	real := e.sign(t, e.operator, b)

	flipped := bytes.Clone(real)
	flipped[len(flipped)-5] ^= 0x80
	rootSigned, err := command.SignAsRoot(e.fleet.Root, e.fleet.RootKID, e.body(command.OpSetTime, 1))
	if err != nil {
		t.Fatal(err)
	}
	squat := forgeBody(t, rootSigned, b) // same command ID, root kid, unlock

	in.Enqueue(e.msg("flipped", flipped))
	in.Enqueue(e.msg("squat", squat))
	in.Enqueue(e.msg("real", real))
	waitFor(t, "acks", func() bool { return len(e.events.all()) == 3 })
	ns := e.notices(t)
	if len(ns) != 2 || ns[0].Reason != ReasonBadSignature || ns[1].Reason != ReasonForbidden ||
		ns[0].CommandID != cidOf(b).String() || ns[1].CommandID != cidOf(b).String() {
		t.Fatalf("notices %+v", ns)
	}
	en, err := db.Entry(context.Background(), cidOf(b))
	if err != nil || en.State != bonds.StateReceived || !bytes.Equal(en.Payload, real) || en.Operator != "op-olga" {
		t.Fatalf("the real command was not journaled: %+v, %v", en, err)
	}
}

// TestNoticePublishFailureNoAck: when the notice cannot be published, the
// message is not acknowledged (the broker redelivers it); the next
// message is acknowledged in its turn; the redelivery is.
func TestNoticePublishFailureNoAck(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	in := e.intake(t, db, func(o *IntakeOptions) { o.Concurrency = 1 })
	e.pub.Fail(true)
	in.Enqueue(e.msg("bad", []byte("junk")))
	in.Enqueue(e.msg("good", e.sign(t, e.operator, e.body(command.OpUnlock, 1))))
	waitFor(t, "good ack", func() bool { return e.events.index("ack good") >= 0 })
	if e.events.index("ack bad") >= 0 {
		t.Fatal("acknowledged although its notice was not published")
	}
	if in.unacked[causeNotice].Load() != 1 {
		t.Fatalf("unacked notice_unpublished %d", in.unacked[causeNotice].Load())
	}
	e.pub.Fail(false)
	in.Enqueue(e.msg("bad", []byte("junk"))) // the broker's redelivery
	waitFor(t, "bad ack", func() bool { return e.events.index("ack bad") >= 0 })
	if len(e.notices(t)) != 1 {
		t.Fatalf("notices %+v", e.notices(t))
	}
}

// TestCloseAbandonsBlockedNotice: Close does not wait for a broker that
// never answers; the message stays unacknowledged.
func TestCloseAbandonsBlockedNotice(t *testing.T) {
	e := newEnv(t)
	e.pub.Block()
	defer e.pub.Unblock()
	db := openDB(t, "", e.clock.Now)
	in := e.intake(t, db, nil)
	changed := e.pub.Changed()
	in.Enqueue(e.msg("bad", []byte("junk")))
	<-changed // the notice's publish started
	in.Close()
	if len(e.events.all()) != 0 {
		t.Fatalf("events %q", e.events.all())
	}
	in.Enqueue(e.msg("late", []byte("junk")))
	if in.unacked[causeClosed].Load() != 1 || in.unacked[causeNotice].Load() != 1 {
		t.Fatalf("unacked closed %d notice %d", in.unacked[causeClosed].Load(), in.unacked[causeNotice].Load())
	}
}

// gateJournal is a fake journal whose AppendBatch calls announce their
// commands on entered and wait for the gate of their first command's ID,
// so they finish when the test chooses.
type gateJournal struct {
	Journal
	mu      sync.Mutex
	gates   map[bonds.CommandID]chan struct{}
	entered chan []bonds.CommandID
	ev      *events
}

func (g *gateJournal) gate(id bonds.CommandID) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gates[id] == nil {
		g.gates[id] = make(chan struct{})
	}
	return g.gates[id]
}

func (g *gateJournal) AppendBatch(ctx context.Context, cs []bonds.Arrival) ([]bonds.Entry, []error, error) {
	ids := make([]bonds.CommandID, len(cs))
	for i, a := range cs {
		ids[i] = a.Command.ID
	}
	g.entered <- ids
	<-g.gate(ids[0])
	ens := make([]bonds.Entry, len(cs))
	for i, a := range cs {
		g.ev.add("append " + a.Command.ID.String())
		ens[i] = bonds.Entry{Command: a.Command, State: bonds.StateReceived, ReceivedAt: a.ReceivedAt}
	}
	return ens, make([]error, len(cs)), nil
}

func (g *gateJournal) Lock(context.Context, bonds.LockID) (bonds.Lock, error) {
	return bonds.Lock{}, bonds.ErrNotFound
}

// TestAcksInEnqueueOrder: messages are journaled in enqueue order, in
// batches: while the first batch's append is held, the other messages are
// verified, and they are appended together in one call after it returned.
// Acks are released in enqueue order, each after its append; the
// scheduler gets the commands in that order with increasing arrival times.
func TestAcksInEnqueueOrder(t *testing.T) {
	const n = 8
	e := newEnv(t)
	g := &gateJournal{gates: map[bonds.CommandID]chan struct{}{}, entered: make(chan []bonds.CommandID, n), ev: e.events}
	var (
		subMu     sync.Mutex
		submitted []bonds.Entry
	)
	in := e.intake(t, g, func(o *IntakeOptions) {
		o.Concurrency = n
		o.OnJournaled = func(en bonds.Entry) {
			subMu.Lock()
			submitted = append(submitted, en)
			subMu.Unlock()
		}
	})
	var ids []bonds.CommandID
	for i := range n {
		b := e.body(command.OpUnlock, uint64(i+1))
		ids = append(ids, cidOf(b))
		in.Enqueue(e.msg(fmt.Sprint(i), e.sign(t, e.operator, b)))
	}
	first := <-g.entered // held until its gate opens
	if len(first) == 0 || first[0] != ids[0] {
		t.Fatalf("first batch %v does not start with message 0", first)
	}
	// Everything else is verified meanwhile and waits for the journaler.
	waitFor(t, "decisions", func() bool {
		in.seqMu.Lock()
		defer in.seqMu.Unlock()
		return len(in.decided) == n-len(first)
	})
	for _, ev := range e.events.all() {
		if strings.HasPrefix(ev, "ack") {
			t.Fatalf("%s released before message 0's append returned: %q", ev, e.events.all())
		}
	}
	if d := in.depth.Load(); d != n {
		t.Fatalf("queue depth %d, want %d", d, n)
	}
	batches := [][]bonds.CommandID{first}
	close(g.gate(ids[0]))
	if len(first) < n {
		second := <-g.entered
		batches = append(batches, second)
		close(g.gate(second[0]))
	}
	var all []bonds.CommandID
	for _, b := range batches {
		all = append(all, b...)
	}
	if fmt.Sprint(all) != fmt.Sprint(ids) {
		t.Fatalf("batches %v, want the %d messages in enqueue order in at most 2 calls", batches, n)
	}
	t.Logf("batches of %d and %d", len(first), n-len(first))
	waitFor(t, "acks", func() bool { return len(e.events.all()) == 2*n })
	var acks []string
	for _, ev := range e.events.all() {
		if strings.HasPrefix(ev, "ack") {
			acks = append(acks, ev)
		}
	}
	for i, a := range acks {
		if a != fmt.Sprintf("ack %d", i) {
			t.Fatalf("acks %q not in enqueue order", acks)
		}
	}
	for i, id := range ids {
		if e.events.index("append "+id.String()) > e.events.index(fmt.Sprintf("ack %d", i)) {
			t.Fatalf("ack %d before its append: %q", i, e.events.all())
		}
	}
	if d := in.depth.Load(); d != 0 {
		t.Fatalf("queue depth %d after all acks", d)
	}
	// The scheduler gets the commands in enqueue order too, with strictly
	// increasing arrival times: a lock's commands run in counter order.
	subMu.Lock()
	defer subMu.Unlock()
	if len(submitted) != n {
		t.Fatalf("%d commands handed on, want %d", len(submitted), n)
	}
	for i, en := range submitted {
		if en.ID != ids[i] {
			t.Fatalf("handed on out of order at %d: %v", i, en.ID)
		}
		if i > 0 && !en.ReceivedAt.After(submitted[i-1].ReceivedAt) {
			t.Fatalf("arrival times not increasing: %v then %v", submitted[i-1].ReceivedAt, en.ReceivedAt)
		}
	}
}

// TestQueueFullDropsOnlyQoS0: beyond MaxQueued a QoS 0 message is
// dropped and counted; Enqueue does not block, and a QoS 1 message is
// still taken, journaled and acknowledged.
func TestQueueFullDropsOnlyQoS0(t *testing.T) {
	e := newEnv(t)
	g := &gateJournal{gates: map[bonds.CommandID]chan struct{}{}, entered: make(chan []bonds.CommandID, 4), ev: e.events}
	in := e.intake(t, g, func(o *IntakeOptions) { o.Concurrency = 1; o.MaxQueued = 2 })
	b1, b2, b3 := e.body(command.OpUnlock, 1), e.body(command.OpUnlock, 2), e.body(command.OpUnlock, 3)
	q0 := func(p []byte) Message { return Message{Payload: p, ReceivedAt: e.clock.Now()} }
	in.Enqueue(q0(e.sign(t, e.operator, b1)))
	in.Enqueue(q0(e.sign(t, e.operator, b2)))
	in.Enqueue(q0(e.sign(t, e.operator, e.body(command.OpUnlock, 9))))
	in.Enqueue(e.msg("3", e.sign(t, e.operator, b3)))
	if got := in.qos0Dropped.Load(); got != 1 {
		t.Fatalf("qos0_dropped %d, want 1", got)
	}
	close(g.gate(cidOf(b1)))
	close(g.gate(cidOf(b2)))
	close(g.gate(cidOf(b3)))
	waitFor(t, "the QoS 1 message acknowledged", func() bool { return e.events.count("ack 3") == 1 })
	if n := len(e.journaled()); n != 3 {
		t.Fatalf("%d journaled, want 3", n)
	}
}

// TestAttackQoS1BeyondMaxInflight: a broker that sends more QoS 1
// messages than MaxInflight gets the excess acknowledged and refused as
// overloaded, in order: nothing is left unacknowledged to hold back the
// PUBACKs after it, and the messages within the limit are journaled.
func TestAttackQoS1BeyondMaxInflight(t *testing.T) {
	e := newEnv(t)
	g := &gateJournal{gates: map[bonds.CommandID]chan struct{}{}, entered: make(chan []bonds.CommandID, 4), ev: e.events}
	in := e.intake(t, g, func(o *IntakeOptions) { o.Concurrency = 1; o.MaxInflight = 2 })
	b1, b2 := e.body(command.OpUnlock, 1), e.body(command.OpUnlock, 2)
	in.Enqueue(e.msg("1", e.sign(t, e.operator, b1)))
	in.Enqueue(e.msg("2", e.sign(t, e.operator, b2)))
	in.Enqueue(e.msg("3", e.sign(t, e.operator, e.body(command.OpUnlock, 3))))
	close(g.gate(cidOf(b1)))
	close(g.gate(cidOf(b2)))
	waitFor(t, "three acks", func() bool { return e.events.count("ack 1")+e.events.count("ack 2")+e.events.count("ack 3") == 3 })
	if a1, a3 := e.events.index("ack 1"), e.events.index("ack 3"); a3 < a1 {
		t.Fatalf("acks out of order: %v", e.events.all())
	}
	ns := e.notices(t)
	if len(ns) != 1 || ns[0].Reason != ReasonOverloaded || ns[0].PayloadSize == 0 {
		t.Fatalf("notices %+v, want one overloaded", ns)
	}
	if n := len(e.journaled()); n != 2 {
		t.Fatalf("%d journaled, want 2", n)
	}
	if got := in.byReason[ReasonOverloaded].Load(); got != 1 {
		t.Fatalf("rejected{overloaded} %d", got)
	}
}

// TestAttackJunkFloodNoticesRateLimited: a flood of junk gets its
// notices rate-limited: beyond the burst, refusals are acknowledged
// without a notice and counted, and a valid command after the flood is
// journaled and acknowledged.
func TestAttackJunkFloodNoticesRateLimited(t *testing.T) {
	e := newEnv(t)
	var limiter clock
	limiter.Set(e.clock.Now())
	db := openDB(t, "", e.clock.Now)
	in := e.intake(t, db, func(o *IntakeOptions) { o.NoticeRate, o.NoticeBurst, o.clock = 1, 5, limiter.Now })
	const junk = 200
	for i := range junk {
		in.Enqueue(e.msg(fmt.Sprint("junk-", i), []byte("junk")))
	}
	b := e.body(command.OpUnlock, 1)
	in.Enqueue(e.msg("valid", e.sign(t, e.operator, b)))
	waitFor(t, "every message acknowledged", func() bool { return len(e.events.all()) == junk+1 })
	if e.events.index("ack valid") != junk {
		t.Fatalf("valid command acknowledged at %d, want last", e.events.index("ack valid"))
	}
	if n := len(e.notices(t)); n != 5 {
		t.Fatalf("%d notices, want the burst of 5", n)
	}
	if got := in.suppressed.Load(); got != junk-5 {
		t.Fatalf("notices_suppressed %d, want %d", got, junk-5)
	}
	if got := in.byReason[ReasonMalformed].Load(); got != junk {
		t.Fatalf("rejected{malformed} %d, want %d", got, junk)
	}
	if j := e.journaled(); len(j) != 1 || j[0].ID != cidOf(b) {
		t.Fatalf("journaled %+v", j)
	}
	// The bucket refills with time.
	limiter.Set(limiter.Now().Add(2 * time.Second))
	in.Enqueue(e.msg("late junk", []byte("junk")))
	waitFor(t, "a notice again", func() bool { return len(e.notices(t)) == 6 })
}

// failJournal fails every AppendBatch.
type failJournal struct{ Journal }

func (*failJournal) Lock(context.Context, bonds.LockID) (bonds.Lock, error) {
	return bonds.Lock{}, bonds.ErrNotFound
}

func (*failJournal) AppendBatch(context.Context, []bonds.Arrival) ([]bonds.Entry, []error, error) {
	return nil, nil, errors.New("disk on fire")
}

// TestJournalErrorNoAck: a command that cannot be journaled is not
// acknowledged: the batch is retried, and at Close left for redelivery.
func TestJournalErrorNoAck(t *testing.T) {
	e := newEnv(t)
	in := e.intake(t, &failJournal{}, nil)
	in.Enqueue(e.msg("m", e.sign(t, e.operator, e.body(command.OpUnlock, 1))))
	waitFor(t, "retries", func() bool { return in.unacked[causeJournal].Load() >= 2 })
	if d := in.depth.Load(); d != 1 {
		t.Fatalf("depth %d while the batch is retried, want 1", d)
	}
	in.Close()
	if d := in.depth.Load(); d != 0 {
		t.Fatalf("depth %d after Close", d)
	}
	if len(e.events.all()) != 0 || len(e.pub.Messages("")) != 0 {
		t.Fatalf("events %q", e.events.all())
	}
}

// flakyJournal fails its first n AppendBatch calls as a whole.
type flakyJournal struct {
	Journal
	mu sync.Mutex
	n  int
}

func (f *flakyJournal) AppendBatch(ctx context.Context, cs []bonds.Arrival) ([]bonds.Entry, []error, error) {
	f.mu.Lock()
	fail := f.n > 0
	f.n--
	f.mu.Unlock()
	if fail {
		return nil, nil, errors.New("disk hiccup")
	}
	return f.Journal.AppendBatch(ctx, cs)
}

// TestJournalErrorRetriedInOrder: a batch whose commit fails is retried
// before anything after it is journaled, so a disk hiccup cannot reorder
// the journal; then everything is journaled, in order, and acknowledged.
func TestJournalErrorRetriedInOrder(t *testing.T) {
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	fj := &flakyJournal{Journal: db, n: 2}
	in := e.intake(t, fj, func(o *IntakeOptions) { o.Concurrency = 4 })
	var ids []bonds.CommandID
	for i := range 6 {
		b := e.body(command.OpUnlock, uint64(i+1))
		ids = append(ids, cidOf(b))
		in.Enqueue(e.msg(fmt.Sprint(i), e.sign(t, e.operator, b)))
	}
	waitFor(t, "all acked", func() bool { return in.depth.Load() == 0 })
	p, err := db.Pending(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != len(ids) {
		t.Fatalf("%d journaled, want %d", len(p), len(ids))
	}
	for i, en := range p {
		if en.ID != ids[i] {
			t.Fatalf("journal order %d: %v, want %v", i, en.ID, ids[i])
		}
	}
	if in.unacked[causeJournal].Load() != 2 {
		t.Errorf("%d failed attempts counted, want 2", in.unacked[causeJournal].Load())
	}
}

func TestIntakeOptions(t *testing.T) {
	e := newEnv(t)
	if _, err := NewIntake(IntakeOptions{Publisher: e.pub, Topics: e.topics}); !errors.Is(err, ErrOptions) {
		t.Fatalf("no journal: %v", err)
	}
	in := e.intake(t, &failJournal{}, nil)
	if err := in.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
}

// batchRec wraps a Journal and records the command IDs of every
// AppendBatch call.
type batchRec struct {
	Journal
	mu      sync.Mutex
	batches [][]bonds.CommandID
}

func (r *batchRec) AppendBatch(ctx context.Context, cs []bonds.Arrival) ([]bonds.Entry, []error, error) {
	ids := make([]bonds.CommandID, len(cs))
	for i, a := range cs {
		ids[i] = a.Command.ID
	}
	r.mu.Lock()
	r.batches = append(r.batches, ids)
	r.mu.Unlock()
	return r.Journal.AppendBatch(ctx, cs)
}

func (r *batchRec) all() [][]bonds.CommandID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]bonds.CommandID(nil), r.batches...)
}

// TestJournalIsPrefixOfArrival: under concurrent verification, the
// journal (a real database) is written in arrival order, batch after
// batch: every AppendBatch is a contiguous run of the arrival order, and
// the calls together cover it exactly, once. So whatever a crash keeps is
// a prefix of the arrival order.
func TestJournalIsPrefixOfArrival(t *testing.T) {
	const n = 64
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	rec := &batchRec{Journal: db}
	in := e.intake(t, rec, func(o *IntakeOptions) { o.Concurrency = 8 })
	var ids []bonds.CommandID
	for i := range n {
		b := e.body(command.OpUnlock, uint64(i+1))
		b.LockID[7] ^= byte(i % 5) // a mix of locks
		ids = append(ids, cidOf(b))
		in.Enqueue(e.msg(fmt.Sprint(i), e.sign(t, e.operator, b)))
	}
	waitFor(t, "acks", func() bool { return len(e.events.all()) == n })
	for i, ev := range e.events.all() {
		if ev != fmt.Sprintf("ack %d", i) {
			t.Fatalf("acks %q not in enqueue order", e.events.all())
		}
	}
	batches := rec.all()
	next := 0
	for k, b := range batches {
		if len(b) == 0 {
			t.Fatalf("batch %d is empty", k)
		}
		for j, id := range b {
			if next >= n || id != ids[next] {
				t.Fatalf("batch %d item %d is %v, want message %d (%v): batches %v", k, j, id, next, ids[min(next, n-1)], batches)
			}
			next++
		}
	}
	if next != n {
		t.Fatalf("batches cover %d of %d messages", next, n)
	}
	t.Logf("%d messages journaled in %d AppendBatch calls", n, len(batches))
	pending, err := db.Pending(context.Background())
	if err != nil || len(pending) != n {
		t.Fatalf("Pending = %d entries, %v", len(pending), err)
	}
	for i, en := range pending {
		if en.ID != ids[i] {
			t.Fatalf("journal order at %d: %v, want %v", i, en.ID, ids[i])
		}
	}
	if j := e.journaled(); len(j) != n || j[0].ID != ids[0] || j[n-1].ID != ids[n-1] {
		t.Fatalf("OnJournaled got %d entries", len(j))
	}
}

// TestSlowNoticeDoesNotHoldUpJournal: a refused message whose notice the
// broker does not acknowledge yet does not hold up the journaling of the
// commands after it; only their acks wait for its release, as acks are
// in enqueue order.
func TestSlowNoticeDoesNotHoldUpJournal(t *testing.T) {
	const n = 4
	e := newEnv(t)
	db := openDB(t, "", e.clock.Now)
	in := e.intake(t, recJournal{db, e.events}, nil)
	e.pub.Block()
	defer e.pub.Unblock()
	changed := e.pub.Changed()
	in.Enqueue(e.msg("bad", []byte("junk")))
	var ids []bonds.CommandID
	for i := range n {
		b := e.body(command.OpUnlock, uint64(i+1))
		ids = append(ids, cidOf(b))
		in.Enqueue(e.msg(fmt.Sprint(i), e.sign(t, e.operator, b)))
	}
	<-changed // the notice's publish started (and blocks)
	waitFor(t, "appends", func() bool { return e.events.count("append "+ids[n-1].String()) == 1 })
	for _, id := range ids {
		if _, err := db.Entry(context.Background(), id); err != nil {
			t.Fatalf("%v not journaled while the notice was pending: %v", id, err)
		}
	}
	for _, ev := range e.events.all() {
		if strings.HasPrefix(ev, "ack") {
			t.Fatalf("%s released before the refused message: %q", ev, e.events.all())
		}
	}
	if len(e.journaled()) != 0 {
		t.Fatal("commands handed on before the refused message ahead of them was released")
	}
	e.pub.Unblock()
	waitFor(t, "acks", func() bool { return e.events.count("ack bad") == 1 && e.events.count(fmt.Sprintf("ack %d", n-1)) == 1 })
	var acks []string
	for _, ev := range e.events.all() {
		if strings.HasPrefix(ev, "ack") {
			acks = append(acks, ev)
		}
	}
	want := []string{"ack bad"}
	for i := range n {
		want = append(want, fmt.Sprintf("ack %d", i))
	}
	if fmt.Sprint(acks) != fmt.Sprint(want) {
		t.Fatalf("acks %q, want %q", acks, want)
	}
	if len(e.notices(t)) != 1 || len(e.journaled()) != n {
		t.Fatalf("notices %d, handed on %d", len(e.notices(t)), len(e.journaled()))
	}
}

// TestAttackEnterDFUNotCarried: an admin-signed enter-dfu is refused at
// intake as unsupported, never journaled, so no lock is sent into a
// bootloader that this gateway does not serve (docs/dfu.md).
func TestAttackEnterDFUNotCarried(t *testing.T) {
	e := newEnv(t)
	n := refused(t, e, e.sign(t, e.admin, e.body(command.OpEnterDFU, 1)), ReasonUnsupported)
	if !strings.Contains(n.Detail, "enter-dfu") || !strings.Contains(n.Detail, "docs/dfu.md") {
		t.Fatalf("detail %q does not say what and where to read", n.Detail)
	}
}

// TestOnArrivalBeforeCommitSettledAfter (issue 14, end to end): a verified
// command is handed to OnArrival before its append commits, settled
// durable after the commit and before its acknowledgement, and not handed
// to OnJournaled; a redelivery (a duplicate) is settled not durable.
func TestOnArrivalBeforeCommitSettledAfter(t *testing.T) {
	e := newEnv(t)
	db, err := bonds.Open(filepath.Join(t.TempDir(), "gatewayd.db"), bonds.Options{Now: e.clock.Now, PruneInterval: -1,
		AfterCommit: func(es []bonds.Entry) {
			for _, en := range es {
				if en.State == bonds.StateReceived {
					e.events.add("committed")
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	in := e.intake(t, db, func(o *IntakeOptions) {
		o.OnArrival = func(en bonds.Entry) func(bool) {
			e.events.add("arrival")
			if en.State != bonds.StateReceived || en.Operation != command.OpUnlock.String() {
				t.Errorf("OnArrival got %s %s", en.State, en.Operation)
			}
			return func(durable bool) { e.events.add(fmt.Sprintf("settled %v", durable)) }
		}
	})
	p := e.sign(t, e.operator, e.body(command.OpUnlock, 1))
	in.Enqueue(e.msg("one", p))
	waitFor(t, "ack", func() bool { return e.events.count("ack one") == 1 })
	if a, c, s, k := e.events.index("arrival"), e.events.index("committed"), e.events.index("settled true"), e.events.index("ack one"); a < 0 || c < a || s < c || k < s {
		t.Fatalf("events %q: want arrival, committed, settled true, ack in that order", e.events.all())
	}
	if n := len(e.journaled()); n != 0 {
		t.Errorf("%d commands handed to OnJournaled too", n)
	}
	in.Enqueue(e.msg("again", p))
	waitFor(t, "ack of the redelivery", func() bool { return e.events.count("ack again") == 1 })
	if e.events.count("arrival") != 2 || e.events.count("settled false") != 1 {
		t.Errorf("events %q: want the redelivery settled not durable", e.events.all())
	}
}
