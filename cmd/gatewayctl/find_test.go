package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/fleet/operator"
	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// presenceGateway is a gateway on a real mosquitto as the backend sees
// it: its retained status and lock presence, and a command topic it
// answers with a succeeded result, counting the commands it got.
func presenceGateway(t *testing.T, broker, gw, state string, locks ...operator.SeenLock) *atomic.Int64 {
	t.Helper()
	top, err := operator.NewTopics(operator.DefaultPrefix, gw)
	if err != nil {
		t.Fatal(err)
	}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID("fake-" + gw))
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	var got atomic.Int64
	h := func(c mqtt.Client, m mqtt.Message) {
		b, err := command.Peek(m.Payload())
		if err != nil {
			return
		}
		got.Add(1)
		raw, _ := json.Marshal(operator.ResultMessage{CommandID: bonds.CommandID(b.CommandID), LockID: bonds.LockID(b.LockID),
			State: bonds.StateSucceeded, Status: "ok", FinishedAt: time.Now()})
		c.Publish(top.Result, 1, false, raw)
	}
	if tok := c.Subscribe(top.Cmd, 1, h); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if locks == nil {
		locks = []operator.SeenLock{}
	}
	lm, _ := json.Marshal(operator.LocksMessage{GatewayID: gw, UpdatedAt: time.Now().UTC(), Locks: locks})
	st, _ := json.Marshal(map[string]string{"state": state, "gateway_id": gw})
	for topic, payload := range map[string][]byte{top.Locks: lm, top.Status: st} {
		if tok := c.Publish(topic, 1, true, payload); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	return &got
}

// TestSendFindsTheGatewayThatHearsTheLock: send -lock without -gateway
// reads the gateways' retained presence and status on a real mosquitto
// and sends to the gateway where the lock proved its identity (verified),
// though another hears it louder unverified and an offline one hears it
// verified and louder still; it says which one and which others hear the
// lock. A lock no gateway hears, and one only an offline gateway hears,
// fail (exit 1) with what to do.
func TestSendFindsTheGatewayThatHearsTheLock(t *testing.T) {
	d := t.TempDir()
	p := func(n string) string { return filepath.Join(d, n) }
	for _, k := range []string{"root.key", "op.key"} {
		if code, out, errs := runCode(t, "keygen", "-o", p(k)); code != 0 {
			t.Fatal(out, errs)
		}
	}
	if code, out, errs := runCode(t, "issue", "-root", p("root.key"), "-kind", "operator", "-role", "admin", "-subject", "otto",
		"-pub", p("op.key.pub"), "-o", p("op.cwt")); code != 0 {
		t.Fatal(out, errs)
	}
	b := mosquittotest.Start(t, mosquittotest.Options{})
	lock, _ := bonds.ParseLockID("4c4b000000000001")
	alone, _ := bonds.ParseLockID("4c4b000000000003")
	now := time.Now().UTC()
	seen := func(id bonds.LockID, rssi int, verified bool) operator.SeenLock {
		return operator.SeenLock{LockID: id, Address: "C0:00:00:00:00:01", RSSI: rssi, Battery: 90, LastSeen: now, Verified: verified}
	}
	loud := presenceGateway(t, b.URL(), "dock-loud", "online", seen(lock, -40, false))
	proven := presenceGateway(t, b.URL(), "dock-proven", "online", seen(lock, -75, true))
	gone := presenceGateway(t, b.URL(), "dock-gone", "offline", seen(lock, -30, true), seen(alone, -50, true))
	other := presenceGateway(t, b.URL(), "dock-other", "online")

	send := func(lockID string) (int, string, string) {
		return runCode(t, "send", "-key", p("op.key"), "-cred", p("op.cwt"), "-broker", b.URL(), "-lock", lockID,
			"-find-wait", "2s", "-timeout", "2m", "status")
	}
	code, out, errs := send(lock.String())
	if code != exitOK {
		t.Fatalf("send without -gateway: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	if proven.Load() != 1 || loud.Load() != 0 || gone.Load() != 0 || other.Load() != 0 {
		t.Errorf("commands received: proven %d, loud %d, offline %d, other %d; want 1, 0, 0, 0",
			proven.Load(), loud.Load(), gone.Load(), other.Load())
	}
	for _, want := range []string{"lock 4c4b000000000001 is heard by gateway dock-proven (verified, rssi -75 dBm",
		"also by dock-loud (unverified, rssi -40 dBm", "dock-gone (verified, rssi -30 dBm", "status offline"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	if strings.Contains(errs, "dock-other") {
		t.Errorf("stderr names a gateway that does not hear the lock:\n%s", errs)
	}

	code, _, errs = send("4c4b000000000002")
	if code != exitFailed || !strings.Contains(errs, "no gateway reports hearing lock 4c4b000000000002 (4 gateways' presence") ||
		!strings.Contains(errs, "pass -gateway") {
		t.Errorf("a lock nobody hears: exit %d, stderr %s", code, errs)
	}
	code, _, errs = send(alone.String())
	if code != exitFailed || !strings.Contains(errs, "only by offline gateways: dock-gone") {
		t.Errorf("a lock only an offline gateway hears: exit %d, stderr %s", code, errs)
	}
	if gone.Load() != 0 || other.Load() != 0 {
		t.Errorf("a command reached a gateway that was not chosen")
	}
}
