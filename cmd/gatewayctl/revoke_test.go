package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// TestRevoke: revoke signs a list with the fleet root that the gateway's
// and the lock's parser accept, naming the credentials given, and
// publishes it retained on the fleet's revocations topic.
func TestRevoke(t *testing.T) {
	d := t.TempDir()
	p := func(n string) string { return filepath.Join(d, n) }
	if out, err := runT(t, "keygen", "-o", p("root.key")); err != nil {
		t.Fatal(out, err)
	}
	rootPub, err := config.ReadPublicKey(p("root.key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	roots := cred.Roots{}
	roots.Add(cred.RootKID(rootPub), rootPub)

	if out, err := runT(t, "revoke", "-root", p("root.key"), "-serial", "7", "-o", p("list.cbor"),
		"gateway:gw-dock-7", "operator:otto", "lock:4C4B000000000001"); err != nil {
		t.Fatal(out, err)
	}
	raw, _ := os.ReadFile(p("list.cbor"))
	list, err := cred.ParseRevocations(raw, roots)
	if err != nil {
		t.Fatal(err)
	}
	gw, _ := cred.KID(cred.KindGateway, "gw-dock-7")
	op, _ := cred.KID(cred.KindOperator, "otto")
	lk, _ := cred.KID(cred.KindLock, "4c4b000000000001")
	if list.Serial != 7 || len(list.Revoked) != 3 || !list.IsRevoked(gw) || !list.IsRevoked(op) || !list.IsRevoked(lk) {
		t.Fatalf("list %+v", list)
	}

	// Published, retained: a gateway subscribing later receives it.
	b := mosquittotest.Start(t, mosquittotest.Options{})
	if out, err := runT(t, "revoke", "-root", p("root.key"), "-broker", b.URL(), "-prefix", "acme/v1", "operator:otto"); err != nil {
		t.Fatal(out, err)
	}
	got := make(chan []byte, 1)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("test-gateway"))
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	c.Subscribe("acme/v1/fleet/revocations", 1, func(_ mqtt.Client, m mqtt.Message) {
		if m.Retained() {
			got <- m.Payload()
		}
	})
	select {
	case raw = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no retained revocation list")
	}
	list, err = cred.ParseRevocations(raw, roots)
	if err != nil || !list.IsRevoked(op) || list.Serial < uint64(time.Now().Add(-time.Hour).Unix()) {
		t.Fatalf("published list %+v, %v (serial defaults to the time)", list, err)
	}
}

func TestRevokeUsage(t *testing.T) {
	for _, args := range [][]string{
		{"revoke", "operator:otto"},                            // no -root
		{"revoke", "-root", "r.key", "operator:otto"},          // neither -o nor -broker
		{"revoke", "-root", "r.key", "-o", "x", "otto"},        // no kind
		{"revoke", "-root", "r.key", "-o", "x", "robot:otto"},  // unknown kind
		{"revoke", "-root", "r.key", "-o", "x", "lock:nothex"}, // a lock subject is 16 hex digits
	} {
		if _, err := runT(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%q: %v", args, err)
		}
	}
}
