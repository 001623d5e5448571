package lock

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// env is one lock of a test fleet, with the parties that talk to it.
type env struct {
	t        testing.TB
	fleet    *channeltest.Fleet
	lockP    channeltest.Party
	admin    channeltest.Party
	operator channeltest.Party
	gateway  channeltest.Party
	store    *locktest.Store
	act      *locktest.Actuator
	lock     *Lock
	opts     Options
	counter  uint64
}

func newEnv(t testing.TB, mod ...func(*Options)) *env {
	t.Helper()
	f := channeltest.NewFleet(t, "acme")
	e := &env{t: t, fleet: f, lockP: f.Lock(t, 0x4c4b000000000001),
		admin: f.Operator(t, "alice", cred.RoleAdmin), operator: f.Operator(t, "otto", cred.RoleOperator),
		gateway: f.Gateway(t, "gw-dock-1"), store: locktest.NewStore(), act: &locktest.Actuator{}}
	e.opts = Options{Cert: e.lockP.Cert, Key: e.lockP.Key, Roots: f.Roots, Store: e.store, Actuator: e.act,
		RTC: func() time.Time { return f.Now }, Rand: rand.Reader}
	for _, m := range mod {
		m(&e.opts)
	}
	e.boot()
	return e
}

// fresh returns a new lock of the same fleet, with empty storage and a new
// actuator (cheap: no credentials are issued).
func (e *env) fresh(t testing.TB) *env {
	n := *e
	n.t, n.store, n.act, n.counter = t, locktest.NewStore(), &locktest.Actuator{}, 0
	n.opts.Actuator = n.act
	n.boot()
	return &n
}

// boot (re)starts the lock from e.store.
func (e *env) boot() {
	e.t.Helper()
	e.opts.Store = e.store
	l, err := New(e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.lock = l
}

// connect opens a session from party p, at BLE address addr, and returns
// a client; the connection ends with the test.
func (e *env) connect(p channeltest.Party, addr string) (*lockclient.Client, error) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, b := channeltest.Pipe(185, channeltest.Faults{})
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.lock.Serve(ctx, channel.NewFragmentTransport(b, fragment.Options{}), Peer{Address: addr}); err != nil && !errors.Is(err, context.Canceled) {
			e.t.Logf("Serve(%s) ended: %v", addr, err)
		}
	})
	e.t.Cleanup(func() { cancel(); a.Close(); wg.Wait() })
	cfg := e.fleet.GatewayConfig(p)
	conn, err := channel.Dial(ctx, channel.NewFragmentTransport(a, fragment.Options{}), cfg)
	if err != nil {
		return nil, err
	}
	return lockclient.New(conn), nil
}

func (e *env) mustConnect(p channeltest.Party, addr string) *lockclient.Client {
	e.t.Helper()
	c, err := e.connect(p, addr)
	if err != nil {
		e.t.Fatalf("connect %s: %v", p.Cert.Subject, err)
	}
	return c
}

// body returns a command body for e's lock with the next counter.
func (e *env) body(op command.Op, args command.Args) command.Body {
	e.counter++
	var id [16]byte
	_, _ = rand.Read(id[:])
	return command.Body{LockID: e.lock.ID(), Op: op, Args: args, CommandID: id,
		NotAfter: e.fleet.Now.Add(time.Hour), Counter: e.counter}
}

func (e *env) sign(p channeltest.Party, b command.Body) []byte {
	e.t.Helper()
	s, err := command.Sign(p.Key, p.Cert.Raw, b)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func do(t *testing.T, c *lockclient.Client, req command.Request) *command.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Do(ctx, req)
	if err != nil {
		t.Fatalf("%v: %v", req.Op, err)
	}
	return r
}

func wantStatus(t *testing.T, r *command.Result, want command.Status) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %v (%q), want %v", r.Status, r.Detail, want)
	}
}

func userParty(e *env, name string) channeltest.Party {
	return e.fleet.Issue(e.t, cred.Claims{Subject: name, Kind: cred.KindUser, Role: cred.RoleRider, Perms: cred.RiderPerms})
}

func addUserArgs(p channeltest.Party, nbf, exp time.Time) command.Args {
	return command.Args{UserID: p.Cert.Subject, PublicKey: p.Cert.PublicKey, Role: cred.RoleRider, NotBefore: nbf, NotAfter: exp}
}
