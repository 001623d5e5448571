// Command channeldemo runs the lock protocol end to end in one process: a
// gateway and a lock of a test fleet open the secure channel (EDHOC, fleet
// credentials, protected frames) over an in-memory BLE link with the
// minimum ATT MTU, packet reordering and duplication; then it shows what a
// sniffer sees, replays the attacks of the design brief against it, and
// sends operator-signed commands to the reference lock.
//
// It is the project's demo until the daemon exists (scripts/demo.sh).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/frame"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

// Steps is the number of steps the demo shows (-steps prints it), so that
// scripts/demo.sh numbers the next part's steps on from it.
const Steps = 5

// first is the number of the demo's first step (-first), next the number
// of the next step.
var first, next = 1, 1

// step starts the next step: a blank line, then its number and title.
func step(format string, a ...any) {
	if next > first {
		fmt.Println()
	}
	fmt.Printf("== %d. "+format+"\n", append([]any{next}, a...)...)
	next++
}

func main() {
	mtu := flag.Int("mtu", 23, "ATT MTU of the simulated link (23..247)")
	flag.IntVar(&first, "first", 1, "the number of the first step (scripts/demo.sh numbers its three parts' steps on)")
	steps := flag.Bool("steps", false, "print the number of steps the demo shows, and exit")
	flag.Parse()
	if *steps {
		fmt.Println(Steps)
		return
	}
	next = first
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, *mtu); err != nil {
		fmt.Fprintln(os.Stderr, "channeldemo:", err)
		os.Exit(1)
	}
}

// fatal satisfies channeltest.TB outside a test: a fixture failure ends
// the demo.
type fatal struct{}

func (fatal) Helper() {}
func (fatal) Fatalf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "channeldemo: "+f+"\n", a...)
	os.Exit(1)
}

type session struct {
	gw, lock *channel.Conn
	gwErr    error
	lockErr  error
	a, b     *channeltest.PacketLink
	took     time.Duration
}

func connect(ctx context.Context, mtu int, faults channeltest.Faults, g, l channel.Config) session {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	a, b := channeltest.Pipe(mtu, faults)
	done := make(chan struct{})
	var s session
	go func() {
		defer close(done)
		s.lock, s.lockErr = channel.Accept(ctx, channel.NewFragmentTransport(b, fragment.Options{}), l)
	}()
	start := time.Now()
	s.gw, s.gwErr = channel.Dial(ctx, channel.NewFragmentTransport(a, fragment.Options{}), g)
	if s.gwErr != nil {
		a.Close()
	}
	<-done
	s.took = time.Since(start)
	s.a, s.b = a, b
	return s
}

func run(ctx context.Context, mtu int) error {
	missed, next = 0, first
	t := fatal{}
	fleet := channeltest.NewFleet(t, "demo-fleet")
	gw := fleet.Gateway(t, "gw-dock-17")
	lock := fleet.Lock(t, 0x4c4b00000000002a)
	fmt.Printf("fleet root kid %x; gateway %q (%d-byte credential); lock %s (%d-byte credential)\n\n",
		fleet.RootKID, gw.Cert.Subject, len(gw.Cert.Raw), lock.Cert.Subject, len(lock.Cert.Raw))

	faults := channeltest.Faults{Seed: 1, Swap: 0.25, Duplicate: 0.1}
	step("Handshake over a BLE link with ATT MTU %d, %d%% of packets reordered, %d%% duplicated",
		mtu, int(faults.Swap*100), int(faults.Duplicate*100))
	s := connect(ctx, mtu, faults, fleet.GatewayConfig(gw), fleet.LockConfig(lock))
	if s.gwErr != nil || s.lockErr != nil {
		return fmt.Errorf("handshake: gateway %v, lock %v", s.gwErr, s.lockErr)
	}
	fmt.Printf("   done in %v: %d packets gateway→lock, %d lock→gateway\n", s.took.Round(time.Microsecond), len(s.a.Sent), len(s.b.Sent))
	fmt.Printf("   gateway authenticated %s %s; lock authenticated %s %q (may: %v)\n",
		s.gw.Peer().Kind, s.gw.Peer().Subject, s.lock.Peer().Kind, s.lock.Peer().Subject, s.lock.Peer().Effective())

	step("Protected requests and responses")
	secret := []byte("status please, user 42")
	for i := range 3 {
		req := fmt.Appendf(nil, "%s #%d", secret, i)
		if err := s.gw.Send(ctx, frame.TypeRequest, req); err != nil {
			return err
		}
		_, got, err := s.lock.Recv(ctx)
		if err != nil {
			return err
		}
		if err := s.lock.Send(ctx, frame.TypeResponse, append([]byte("ok: "), got...)); err != nil {
			return err
		}
		_, resp, err := s.gw.Recv(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("   gateway → lock %q, lock → gateway %q\n", req, resp)
	}

	var air []byte
	for _, p := range append(s.a.Sent, s.b.Sent...) {
		air = append(air, p...)
	}
	step("A sniffer captured %d bytes. Does it see…", len(air))
	for name, v := range map[string][]byte{
		"the gateway's name": []byte(gw.Cert.Subject), "the lock's ID": lock.Cert.KID,
		"either credential": lock.Cert.Raw, "the request text": secret,
	} {
		fmt.Printf("   %-20s %v\n", name+"?", bytes.Contains(air, v))
	}

	step("Attacks")
	// Re-send every fragment of the last request under a fresh fragment
	// msg_id, so that only the frame layer can tell it is a replay.
	lastID := s.a.Sent[len(s.a.Sent)-1][0]
	for _, p := range s.a.Sent {
		if p[0] == lastID {
			p = append([]byte(nil), p...)
			p[0] += 100
			if err := s.a.Inject(ctx, p); err != nil {
				return err
			}
		}
	}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	_, _, err := s.lock.Recv(rctx)
	rcancel()
	report("replay a captured request", err, frame.ErrReplay)
	s.a.Close()

	rogue := channeltest.NewFleet(t, "rogue-fleet")
	r := connect(ctx, mtu, channeltest.Faults{}, fleet.GatewayConfig(gw), rogue.LockConfig(rogue.Lock(t, 0x4c4b00000000002a)))
	report("spoofed lock with a rogue root's credential", r.gwErr, cred.ErrUnknownRoot)

	op := fleet.Operator(t, "mallory", cred.RoleAdmin)
	r = connect(ctx, mtu, channeltest.Faults{}, fleet.GatewayConfig(gw), fleet.LockConfig(op))
	report("operator credential posing as a lock", r.gwErr, cred.ErrWrongKind)

	old := fleet.Issue(t, cred.Claims{Subject: "gw-stolen", Kind: cred.KindGateway, Perms: cred.GatewayPerms,
		NotBefore: fleet.Now.AddDate(0, -2, 0), Expiry: fleet.Now.AddDate(0, -1, 0)})
	r = connect(ctx, mtu, channeltest.Faults{}, fleet.GatewayConfig(old), fleet.LockConfig(lock))
	report("expired gateway credential", r.lockErr, cred.ErrExpired)

	other := fleet.Lock(t, 7)
	r = connect(ctx, mtu, channeltest.Faults{}, fleet.GatewayConfig(other), fleet.LockConfig(lock))
	report("a lock's credential dialing another lock", r.lockErr, cred.ErrWrongKind)
	if err := commands(ctx, mtu, fleet, gw); err != nil {
		return err
	}
	if missed > 0 {
		return fmt.Errorf("%d attacks were not refused as expected", missed)
	}
	fmt.Println("\nAll attacks refused.")
	return nil
}

// commands runs the reference lock (firmware/lock) behind the channel and
// sends it operator-signed commands through the gateway.
func commands(ctx context.Context, mtu int, fleet *channeltest.Fleet, gw channeltest.Party) error {
	t := fatal{}
	lp := fleet.Lock(t, 0x4c4b000000000077)
	op := fleet.Operator(t, "otto", cred.RoleOperator)
	bolt := &locktest.Actuator{}
	l, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
		Actuator: bolt, RTC: func() time.Time { return fleet.Now }})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a, b := channeltest.Pipe(mtu, channeltest.Faults{})
	defer a.Close()
	const gwAddr = "AA:BB:CC:00:00:17"
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.Serve(ctx, channel.NewFragmentTransport(b, fragment.Options{}), lock.Peer{Address: gwAddr})
	}()
	defer func() { cancel(); <-done }()
	conn, err := channel.Dial(ctx, channel.NewFragmentTransport(a, fragment.Options{}), fleet.GatewayConfig(gw))
	if err != nil {
		return err
	}
	c := lockclient.New(conn)
	step("Commands to the reference lock %s, through gateway %q", lp.Cert.Subject, gw.Cert.Subject)
	show := func(what string, r *command.Result, err error) *command.Result {
		if err != nil {
			fmt.Printf("   %-46s error: %v\n", what, err)
			missed++
			return nil
		}
		fmt.Printf("   %-46s %-18s bolt %v\n", what, r.Status, r.LockState)
		return r
	}
	var n uint64
	sign := func(o command.Op) []byte {
		n++
		var id [16]byte
		id[15] = byte(n)
		s, err := command.Sign(op.Key, op.Cert.Raw, command.Body{LockID: l.ID(), Op: o, CommandID: id,
			NotAfter: fleet.Now.Add(time.Hour), Counter: n})
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		return s
	}
	r, err := c.Status(ctx)
	show("status (gateway's own authority)", r, err)
	unlock := sign(command.OpUnlock)
	want := command.ResultExpect{LockID: l.ID(), Op: command.OpUnlock, Counter: n}
	want.CommandID[15] = byte(n)
	r, err = c.Signed(ctx, command.OpUnlock, unlock)
	if r = show("unlock signed by operator otto", r, err); r != nil {
		// The lock signed its result: the operator checks it against the
		// lock's credential; a stolen gateway cannot change or strip it.
		if _, err := command.VerifyResult(r, lp.Cert, want); err != nil {
			fmt.Printf("   %-46s NOT VERIFIED: %v\n", "the operator checks the lock's signature", err)
			missed++
		} else {
			fmt.Printf("   %-46s verified\n", "the operator checks the lock's signature")
		}
		forged := *r
		forged.LockState = command.StateLocked
		_, err := command.VerifyResult(&forged, lp.Cert, want)
		report("a stolen gateway reports \"locked\" instead", err, command.ErrResultMismatch)
		forged = *r
		forged.Signature = nil
		_, err = command.VerifyResult(&forged, lp.Cert, want)
		report("... or strips the lock's signature", err, command.ErrUnsignedResult)
	}
	r, err = c.Signed(ctx, command.OpUnlock, unlock)
	if r = show("the same signed unlock, replayed", r, err); r != nil && r.Status != command.StatusDuplicateCommand {
		missed++
	}
	r, err = c.Do(ctx, command.Request{Op: command.OpLock})
	if r = show("lock on the gateway's own authority", r, err); r != nil && r.Status != command.StatusForbidden {
		missed++
	}
	r, err = c.Signed(ctx, command.OpLock, sign(command.OpLock))
	show("lock signed by operator otto", r, err)
	r, err = c.AllowBond(ctx, 30*time.Second)
	if r = show("allow-bond for the gateway's own address", r, err); r != nil {
		if w, err := r.BondWindow(); err == nil {
			fmt.Printf("   %-46s %v\n", "pairing with the one-time passkey", result(l.Pair(gwAddr, w.Passkey)))
			fmt.Printf("   %-46s %v\n", "a stranger pairing with it", result(l.Pair("DE:AD:BE:EF:00:01", w.Passkey)))
		}
	}
	fmt.Printf("   the bolt moved %d times\n", bolt.Moves())
	return nil
}

func result(err error) string {
	if err != nil {
		return "refused: " + err.Error()
	}
	return "bonded"
}

// report prints the outcome of one attack and counts the ones that were
// not refused for the expected reason.
func report(what string, err, want error) {
	verdict := "REFUSED"
	if err == nil || !errors.Is(err, want) {
		verdict = "NOT REFUSED AS EXPECTED"
		missed++
	}
	fmt.Printf("   %-45s %s: %v\n", what, verdict, err)
}

var missed int
