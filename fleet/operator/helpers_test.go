package operator

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet/operator/operatortest"
)

// *bonds.DB is the Journal the daemon passes.
var _ Journal = (*bonds.DB)(nil)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// env is a test fleet with a lock, an admin, an operator and credentials
// of the other kinds, a clock, topics and a fake publisher.
type env struct {
	fleet                 *channeltest.Fleet
	lockID                [8]byte
	lock, admin, operator channeltest.Party
	gateway, user         channeltest.Party
	clock                 *clock
	topics                Topics
	pub                   *operatortest.Publisher
	events                *events
	cidSeq                uint32
	journaledMu           sync.Mutex
	journaledEntries      []bonds.Entry
	results               int
	resultsMu             sync.Mutex
}

func newEnv(t *testing.T) *env {
	t.Helper()
	f := channeltest.NewFleet(t, "operator-test")
	e := &env{fleet: f, clock: &clock{t: f.Now}, pub: &operatortest.Publisher{}, events: &events{}}
	e.lock = f.Lock(t, 0x0102030405060708)
	copy(e.lockID[:], e.lock.Cert.KID)
	e.admin = f.Operator(t, "admin-ann", cred.RoleAdmin)
	e.operator = f.Operator(t, "op-olga", cred.RoleOperator)
	e.gateway = f.Gateway(t, "gw-dock-7")
	e.user = f.Issue(t, cred.Claims{Subject: "rider-rita", Kind: cred.KindUser, Role: cred.RoleRider, Perms: cred.RiderPerms})
	var err error
	if e.topics, err = NewTopics("", "gw-dock-7"); err != nil {
		t.Fatal(err)
	}
	return e
}

// body returns a body for op on the env's lock, with a fresh command ID,
// valid for 5 minutes.
func (e *env) body(op command.Op, counter uint64) command.Body {
	e.cidSeq++
	var cid [16]byte
	cid[0] = 0xc0
	binary.BigEndian.PutUint32(cid[12:], e.cidSeq)
	var args command.Args
	switch op {
	case command.OpAddUser:
		pub := ed25519.NewKeyFromSeed(channeltest.Seed("rider-rob")).Public().(ed25519.PublicKey)
		args = command.Args{UserID: "rider-rob", PublicKey: pub, Role: cred.RoleRider,
			NotBefore: e.fleet.Now, NotAfter: e.fleet.Now.Add(24 * time.Hour)}
	case command.OpRemoveUser:
		args = command.Args{UserID: "rider-rob"}
	case command.OpAllowBond:
		args = command.Args{WindowSeconds: 30}
	case command.OpReadAudit:
		args = command.Args{FromSeq: 1, Max: 16}
	case command.OpSetTime:
		args = command.Args{Time: e.fleet.Now}
	case command.OpEnterDFU:
		args = command.Args{InitHash: make([]byte, command.InitHashLen)}
	}
	return command.Body{LockID: e.lockID, Op: op, Args: args, CommandID: cid,
		NotAfter: e.fleet.Now.Add(5 * time.Minute), Counter: counter}
}

func (e *env) sign(t *testing.T, p channeltest.Party, b command.Body) []byte {
	t.Helper()
	s, err := command.Sign(p.Key, p.Cert.Raw, b)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return s
}

// openDB opens a real database in a temporary directory, with fsync.
func openDB(t *testing.T, path string, now func() time.Time) *bonds.DB {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "gatewayd.db")
	}
	db, err := bonds.Open(path, bonds.Options{Now: now, PruneInterval: -1})
	if err != nil {
		t.Fatalf("bonds.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil && !errors.Is(err, bonds.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// intake returns a started Intake on journal j, closed at cleanup.
func (e *env) intake(t *testing.T, j Journal, tweak func(*IntakeOptions)) *Intake {
	t.Helper()
	o := IntakeOptions{Journal: j, Publisher: e.pub, Topics: e.topics, Roots: e.fleet.Roots, Now: e.clock.Now,
		OnJournaled: func(en bonds.Entry) {
			e.journaledMu.Lock()
			e.journaledEntries = append(e.journaledEntries, en)
			e.journaledMu.Unlock()
		},
		OnResult: func() {
			e.resultsMu.Lock()
			e.results++
			e.resultsMu.Unlock()
		}}
	if tweak != nil {
		tweak(&o)
	}
	in, err := NewIntake(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	return in
}

func (e *env) journaled() []bonds.Entry {
	e.journaledMu.Lock()
	defer e.journaledMu.Unlock()
	return append([]bonds.Entry(nil), e.journaledEntries...)
}

// events is an ordered log of what happened, shared by fakes and acks.
type events struct {
	mu  sync.Mutex
	log []string
}

func (ev *events) add(s string) {
	ev.mu.Lock()
	ev.log = append(ev.log, s)
	ev.mu.Unlock()
}

func (ev *events) all() []string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return append([]string(nil), ev.log...)
}

func (ev *events) index(s string) int {
	for i, x := range ev.all() {
		if x == s {
			return i
		}
	}
	return -1
}

func (ev *events) count(s string) int {
	n := 0
	for _, x := range ev.all() {
		if x == s {
			n++
		}
	}
	return n
}

// msg returns a message whose Ack logs "ack <name>".
func (e *env) msg(name string, payload []byte) Message {
	return Message{Payload: payload, ReceivedAt: e.clock.Now(), Ack: func() { e.events.add("ack " + name) }}
}

// recJournal wraps a Journal and logs "append <command ID>" for each
// command of an AppendBatch when it returns.
type recJournal struct {
	Journal
	ev *events
}

func (r recJournal) AppendBatch(ctx context.Context, cs []bonds.Arrival) ([]bonds.Entry, []error, error) {
	ens, errs, err := r.Journal.AppendBatch(ctx, cs)
	for _, a := range cs {
		r.ev.add("append " + a.Command.ID.String())
	}
	return ens, errs, err
}

// waitFor polls cond until it holds; the deadline only bounds a failing
// test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// notices returns the rejection notices published so far.
func (e *env) notices(t *testing.T) []Rejected {
	t.Helper()
	var out []Rejected
	for _, m := range e.pub.Messages(e.topics.Rejected) {
		var n Rejected
		if err := json.Unmarshal(m.Payload, &n); err != nil {
			t.Fatalf("notice %s: %v", m.Payload, err)
		}
		if m.Retain {
			t.Fatal("notice retained")
		}
		out = append(out, n)
	}
	return out
}

// resultsOn returns the result messages published so far.
func (e *env) resultsOn(t *testing.T) []ResultMessage {
	t.Helper()
	var out []ResultMessage
	for _, m := range e.pub.Messages(e.topics.Result) {
		var r ResultMessage
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			t.Fatalf("result %s: %v", m.Payload, err)
		}
		if m.Retain {
			t.Fatal("result retained")
		}
		out = append(out, r)
	}
	return out
}

func cidOf(b command.Body) bonds.CommandID { return bonds.CommandID(b.CommandID) }
