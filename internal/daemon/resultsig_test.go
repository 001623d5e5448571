package daemon

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/fleet/operator"
)

// TestDaemonPublishesSignedResults: through real mosquitto, the BlueZ
// emulator and reference locks, every result a lock answered carries the
// lock's signature and credential, and verifies with the backend library
// against the fleet root and the command sent; a result the gateway made
// itself (an expired command) is marked unsigned and does not verify.
func TestDaemonPublishesSignedResults(t *testing.T) {
	d := newDock(t, 2, emulator.Options{})
	d.run()
	oc := d.client
	// Online: subscribed to its command topic.
	oc.until("retained status online", func() bool {
		return len(oc.status) > 0 && strings.Contains(oc.status[len(oc.status)-1], `"online"`)
	})

	bu, su := d.sign(0, command.OpUnlock, command.Args{})
	oc.publish(su)
	bs, ss := d.sign(1, command.OpStatus, command.Args{})
	oc.publish(ss)
	bl, sl := d.sign(1, command.OpListUsers, command.Args{})
	oc.publish(sl)
	// Authentic, but expired before it arrived: the gateway answers it.
	d.mu.Lock()
	d.ctr++
	ctr := d.ctr
	d.mu.Unlock()
	be := command.Body{LockID: d.locks[0].id, Op: command.OpLock, NotAfter: d.now().Add(-time.Minute).Truncate(time.Second),
		Counter: ctr, CommandID: [16]byte{0xde, 0xad}}
	se, err := command.Sign(d.op.Key, d.op.Cert.Raw, be)
	if err != nil {
		t.Fatal(err)
	}
	oc.publish(se)

	oc.until("four results", func() bool {
		for _, b := range []command.Body{bu, bs, bl, be} {
			if len(oc.resultsFor(b.CommandID)) != 1 {
				return false
			}
		}
		return true
	})
	oc.mu.Lock()
	res := map[[16]byte]operator.ResultMessage{}
	for _, b := range []command.Body{bu, bs, bl, be} {
		res[b.CommandID] = oc.resultsFor(b.CommandID)[0]
	}
	oc.mu.Unlock()

	now := func() time.Time { return d.now() }
	for _, b := range []command.Body{bu, bs, bl} {
		m := res[b.CommandID]
		if len(m.LockSignature) == 0 || len(m.LockCredential) == 0 || m.Unsigned != "" {
			t.Fatalf("%v: published without signature or credential: unsigned %q", b.Op, m.Unsigned)
		}
		v, err := operator.VerifyResult(&m, operator.VerifyOptions{Roots: d.fleet.Roots, CommandID: bonds.CommandID(b.CommandID),
			Operation: b.Op.String(), Counter: b.Counter, Now: now})
		if err != nil {
			t.Fatalf("%v: published result does not verify: %v", b.Op, err)
		}
		if v.Outcome != command.StatusOK || v.Statement.LockID != [8]byte(b.LockID) || v.Statement.Counter != b.Counter {
			t.Errorf("%v: verified %v", b.Op, v)
		}
		t.Logf("%v: verified: %v", b.Op, v)
	}
	if v, _ := operator.VerifyResult(ptr(res[bu.CommandID]), operator.VerifyOptions{Roots: d.fleet.Roots, Now: now}); v == nil ||
		v.Statement.LockState != command.StateUnlocked {
		t.Errorf("unlock's signed lock state: %v", v)
	}
	// The result of one command is not the result of another.
	m := res[bs.CommandID]
	if _, err := operator.VerifyResult(&m, operator.VerifyOptions{Roots: d.fleet.Roots, CommandID: bonds.CommandID(bl.CommandID), Now: now}); !errors.Is(err, command.ErrResultMismatch) {
		t.Errorf("status result taken for list-users': %v", err)
	}
	// The gateway's own answer to the expired command.
	m = res[be.CommandID]
	if m.State != bonds.StateExpired || m.Unsigned != operator.UnsignedGateway || m.LockSignature != nil {
		t.Errorf("expired command's result: state %s, unsigned %q", m.State, m.Unsigned)
	}
	if _, err := operator.VerifyResult(&m, operator.VerifyOptions{Roots: d.fleet.Roots, Now: now}); !errors.Is(err, command.ErrUnsignedResult) {
		t.Errorf("gateway-made result: %v, want unsigned", err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestAttackForgedResultOnResultTopic: a rogue client that may publish on
// the result topic (or a compromised broker) takes the lock's genuine
// "unlocked" result and republishes it saying "locked", and fabricates a
// "succeeded" result for a command the lock never ran. The backend, through
// real mosquitto, receives both and refuses both with a reason; the
// genuine result still verifies.
func TestAttackForgedResultOnResultTopic(t *testing.T) {
	d := newDock(t, 1, emulator.Options{})
	d.run()
	oc := d.client
	oc.until("retained status online", func() bool {
		return len(oc.status) > 0 && strings.Contains(oc.status[len(oc.status)-1], `"online"`)
	})
	bu, su := d.sign(0, command.OpUnlock, command.Args{})
	oc.publish(su)
	oc.until("the unlock's result", func() bool { return len(oc.resultsFor(bu.CommandID)) == 1 })
	oc.mu.Lock()
	genuine := oc.resultsFor(bu.CommandID)[0]
	oc.mu.Unlock()

	forged := genuine
	forged.LockState = "locked"
	// A command that was signed but never sent to the gateway: the rogue
	// reports it done, with the lock's signature of another command.
	bl, _ := d.sign(0, command.OpLock, command.Args{})
	fabricated := genuine
	fabricated.CommandID, fabricated.Operation, fabricated.LockState = bonds.CommandID(bl.CommandID), "lock", "locked"
	for _, m := range []operator.ResultMessage{forged, fabricated} {
		tok := oc.c.Publish(d.topics.Result, 1, false, mustJSON(t, m))
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("rogue publish: %v", tok.Error())
		}
	}
	oc.until("the rogue's two results", func() bool {
		return len(oc.resultsFor(bu.CommandID)) == 2 && len(oc.resultsFor(bl.CommandID)) == 1
	})
	oc.mu.Lock()
	got := append(oc.resultsFor(bu.CommandID), oc.resultsFor(bl.CommandID)...)
	oc.mu.Unlock()

	now := func() time.Time { return d.now() }
	verified := 0
	for _, m := range got {
		want := bu
		if m.CommandID == bonds.CommandID(bl.CommandID) {
			want = bl
		}
		_, err := operator.VerifyResult(&m, operator.VerifyOptions{Roots: d.fleet.Roots, CommandID: bonds.CommandID(want.CommandID),
			Operation: want.Op.String(), Counter: want.Counter, Now: now})
		switch {
		case err == nil && m.LockState == "unlocked" && m.CommandID == bonds.CommandID(bu.CommandID):
			verified++
		case errors.Is(err, command.ErrResultMismatch):
			t.Logf("refused %s %s: %v", m.Operation, m.LockState, err)
		default:
			t.Errorf("result %s (%s, %s): %v", m.CommandID, m.Operation, m.LockState, err)
		}
	}
	if verified != 1 {
		t.Errorf("%d results verified, want the genuine one only", verified)
	}
	if d.locks[0].act.Moves() != 1 {
		t.Errorf("bolt moved %d times", d.locks[0].act.Moves())
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
