package device_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/dfu/controller"
	"github.com/gatewayd/gatewayd/firmware/dfu/dfutest"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
	"github.com/gatewayd/gatewayd/firmware/lock/device"
	"github.com/gatewayd/gatewayd/firmware/lock/flash"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

const (
	lockAddr = "DC:A6:32:01:02:03"
	gwAddr   = "AA:BB:CC:00:00:01"
	oldVer   = 10000 // "1.0.0"
	newVer   = 10100 // "1.1.0"
)

var oldImage = []byte("the lock's application before the update, version 1.0.0")

func dfuKey(t testing.TB, label string) *ecdsa.PrivateKey {
	t.Helper()
	d := sha256.Sum256([]byte("device test dfu key: " + label))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newImage(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

// env is one lock (application and bootloader) of a test fleet, with the
// parties that talk to it.
type env struct {
	t        *testing.T
	fleet    *channeltest.Fleet
	lockP    channeltest.Party
	admin    channeltest.Party
	operator channeltest.Party
	gateway  channeltest.Party
	key      *ecdsa.PrivateKey
	act      *locktest.Actuator
	battery  uint8
	auditLog *audit.Log
	dev      *device.Device
	counter  uint64
	mu       sync.Mutex
}

func newEnv(t *testing.T, cut func(target.CutPoint) bool) *env {
	t.Helper()
	f := channeltest.NewFleet(t, "acme")
	e := &env{t: t, fleet: f, lockP: f.Lock(t, 0x4c4b000000000001),
		admin: f.Operator(t, "alice", cred.RoleAdmin), operator: f.Operator(t, "otto", cred.RoleOperator),
		gateway: f.Gateway(t, "gw-dock-1"), key: dfuKey(t, "fleet"), act: &locktest.Actuator{}, battery: 80}
	var err error
	e.auditLog, err = audit.Open(flash.NewMem(), audit.Options{LockID: e.lockP.Cert.KID, Now: func() time.Time { return f.Now }})
	if err != nil {
		t.Fatal(err)
	}
	e.dev, err = device.New(device.Options{
		Lock: lock.Options{Cert: e.lockP.Cert, Key: e.lockP.Key, Roots: f.Roots, Store: locktest.NewStore(),
			Actuator: e.act, Audit: lock.AuditLog(e.auditLog), RTC: func() time.Time { return f.Now }, Rand: rand.Reader,
			Battery: func() uint8 { e.mu.Lock(); defer e.mu.Unlock(); return e.battery }},
		Bootloader: target.Options{Key: &e.key.PublicKey, Firmware: oldImage, Cut: cut,
			Device: dfu.Device{HWVersion: 52, SoftDeviceFWID: 0x0101, AppVersion: oldVer, BootloaderVersion: 1}},
		Address: lockAddr,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) setBattery(b uint8) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.battery = b
}

// pkg builds and verifies an application package of version v signed by
// key (the fleet's unless given).
func (e *env) pkg(v uint32, fw []byte, key *ecdsa.PrivateKey) *dfu.Image {
	e.t.Helper()
	if key == nil {
		key = e.key
	}
	data, err := dfu.Generate(dfu.Spec{Key: key, HWVersion: 52, SDReq: []uint32{0x0101},
		Images: []dfu.ImageSpec{{Kind: dfu.KindApplication, Name: "lock_app", Firmware: fw, FWVersion: v}}})
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := dfu.Parse(data, dfu.Limits{})
	if err != nil {
		e.t.Fatal(err)
	}
	return p.Images[0]
}

// session is one connection to the running application.
type session struct {
	c     *lockclient.Client
	serve chan error // what Serve returned
}

// connect opens a session from party p to the running application.
func (e *env) connect(p channeltest.Party) *session {
	e.t.Helper()
	l, err := e.dev.Lock()
	if err != nil {
		e.t.Fatalf("Lock: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, b := channeltest.Pipe(185, channeltest.Faults{})
	s := &session{serve: make(chan error, 1)}
	var wg sync.WaitGroup
	wg.Go(func() {
		s.serve <- l.Serve(ctx, channel.NewFragmentTransport(b, fragment.Options{}), lock.Peer{Address: gwAddr})
		a.Close() // the lock ended the connection
	})
	e.t.Cleanup(func() { cancel(); a.Close(); wg.Wait() })
	conn, err := channel.Dial(ctx, channel.NewFragmentTransport(a, fragment.Options{}), e.fleet.GatewayConfig(p))
	if err != nil {
		e.t.Fatalf("connect %s: %v", p.Cert.Subject, err)
	}
	s.c = lockclient.New(conn)
	return s
}

func ctx(t testing.TB) context.Context {
	// A safety net only: nothing waits on time in these tests.
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// body is a command for the lock with the signer's next counter.
func (e *env) body(op command.Op, args command.Args) command.Body {
	e.counter++
	var id [16]byte
	_, _ = rand.Read(id[:])
	l, err := e.dev.Lock()
	var lockID [8]byte
	if err == nil {
		lockID = l.ID()
	} else {
		copy(lockID[:], e.lockP.Cert.KID)
	}
	return command.Body{LockID: lockID, Op: op, Args: args, CommandID: id,
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

// enterDFU signs an enter-dfu for img as p and sends it over s.
func (e *env) enterDFU(s *session, p channeltest.Party, img *dfu.Image) *command.Result {
	e.t.Helper()
	h := img.InitHash()
	r, err := s.c.EnterDFU(ctx(e.t), e.sign(p, e.body(command.OpEnterDFU, command.Args{InitHash: h[:]})))
	if err != nil {
		e.t.Fatalf("enter-dfu: %v", err)
	}
	e.waitReset(s, r)
	return r
}

// waitReset waits, after an accepted enter-dfu, for the lock to reset
// into its bootloader: Serve returns lock.ErrReset once the result is
// sent.
func (e *env) waitReset(s *session, r *command.Result) {
	e.t.Helper()
	if r.Status != command.StatusOK {
		return
	}
	if err := <-s.serve; !errors.Is(err, lock.ErrReset) {
		e.t.Fatalf("Serve returned %v after enter-dfu, want lock.ErrReset", err)
	}
}

func wantStatus(t *testing.T, r *command.Result, want command.Status) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %v (%q), want %v", r.Status, r.Detail, want)
	}
}

// status asks the running application for its status as the gateway.
func (e *env) status() *command.Result {
	e.t.Helper()
	r, err := e.connect(e.gateway).c.Status(ctx(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	wantStatus(e.t, r, command.StatusOK)
	return r
}

// transfer sends img to the bootloader over dfutest's link at ATT MTU 247.
func (e *env) transfer(img *dfu.Image) (*dfutest.Link, error) {
	e.t.Helper()
	bl, err := e.dev.Bootloader()
	if err != nil {
		return nil, err
	}
	link := dfutest.Connect(bl, 247)
	_, err = controller.New(controller.Options{}).Send(ctx(e.t), link, img)
	return link, err
}

// runs checks the lock runs image fw at version v, in application mode.
func (e *env) runs(fw []byte, v uint32) {
	e.t.Helper()
	if m := e.dev.Mode(); m != device.ModeApplication {
		e.t.Fatalf("mode %v, want application", m)
	}
	img, ver := e.dev.Firmware()
	if string(img) != string(fw) || ver != v {
		e.t.Fatalf("runs %d bytes at version %d, want %d bytes at %d", len(img), ver, len(fw), v)
	}
	if r := e.status(); r.Firmware != device.VersionString(v) {
		e.t.Fatalf("status reports firmware %q, want %q", r.Firmware, device.VersionString(v))
	}
}

// events returns the audit log's events of kind k.
func (e *env) events(k audit.Event) []audit.Entry {
	e.t.Helper()
	p, err := e.auditLog.Page(0, audit.MaxPageEntries)
	var out []audit.Entry
	for err == nil && len(p.Entries) > 0 {
		for _, x := range p.Entries {
			if x.Event == k {
				out = append(out, x)
			}
		}
		p, err = e.auditLog.Page(p.Entries[len(p.Entries)-1].Seq+1, audit.MaxPageEntries)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}
