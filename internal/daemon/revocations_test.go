package daemon

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet/operator"
)

// TestAttackRevokedOperatorEndToEnd: the fleet publishes a revocation
// list, retained, on P/fleet/revocations. The gateway takes it, refuses
// the revoked operator's command at intake (a notice, no result, the bolt
// never moves), carries the list to the lock after its next handshake, and
// ignores an older list published later.
func TestAttackRevokedOperatorEndToEnd(t *testing.T) {
	d := newDock(t, 1, emulator.Options{})
	mallory := d.fleet.Operator(t, "mallory", cred.RoleOperator)
	list := func(serial uint64, kids ...[]byte) []byte {
		raw, err := cred.IssueRevocations(d.fleet.Root, d.fleet.RootKID, serial, d.now(), kids)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	oc := d.client
	retain := func(payload []byte) {
		tok := oc.c.Publish(d.topics.Revocations, 1, true, payload)
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish revocations: %v", tok.Error())
		}
	}
	// Published before the gateway starts: it gets the retained copy.
	retain(list(5, mallory.Cert.KID))
	r := d.run()
	oc.until("retained status online", func() bool {
		return len(oc.status) > 0 && strings.Contains(oc.status[len(oc.status)-1], `"online"`)
	})
	scrape := func() string {
		resp, err := http.Get("http://" + r.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(scrape(), `gatewayd_revocations_serial 5`) {
		if time.Now().After(deadline) {
			t.Fatal("the gateway did not install the retained revocation list")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The revoked operator's unlock: refused at intake.
	b := command.Body{LockID: d.locks[0].id, Op: command.OpUnlock, CommandID: [16]byte{0xee, 1},
		NotAfter: d.now().Add(time.Hour).Truncate(time.Second), Counter: 1}
	signed, err := command.Sign(mallory.Key, mallory.Cert.Raw, b)
	if err != nil {
		t.Fatal(err)
	}
	oc.publish(signed)
	oc.until("a notice", func() bool { return len(oc.rejected) == 1 })
	oc.mu.Lock()
	n := oc.rejected[0]
	oc.mu.Unlock()
	if n.Reason != operator.ReasonSignerRejected || !strings.Contains(n.Detail, "revoked") {
		t.Errorf("notice %+v", n)
	}

	// An honest command reaches the lock, and with it the list.
	hb, hs := d.sign(0, command.OpStatus, command.Args{})
	oc.publish(hs)
	oc.until("the status result", func() bool { return len(oc.resultsFor(hb.CommandID)) == 1 })
	if got := d.locks[0].lock.RevocationSerial(); got != 5 {
		t.Errorf("the lock holds revocation serial %d, want 5", got)
	}

	// An older list, retained over the newer one: refused, counted.
	retain(list(4))
	deadline = time.Now().Add(60 * time.Second)
	for !strings.Contains(scrape(), `gatewayd_revocations_offers_total{outcome="refused"} 1`) {
		if time.Now().After(deadline) {
			t.Fatal("the older list was not refused")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s := scrape(); !strings.Contains(s, `gatewayd_revocations_serial 5`) {
		t.Errorf("serial after an older list:\n%s", grepLines(s, "revocations"))
	}
	if d.locks[0].act.Moves() != 0 {
		t.Error("the bolt moved")
	}
	r.stop(t)
}
