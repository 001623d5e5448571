package dbustest

import (
	"context"
	"testing"
	"time"
)

func TestPrivateBusAndMatchRuleCount(t *testing.T) {
	b := Start(t)
	a, c := b.Conn(t), b.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	before, err := b.MatchRules(ctx, c, a.Names()[0])
	if err != nil {
		t.Fatal(err)
	}
	rule := "type='signal',interface='org.example.Test',path='/x'"
	if err := a.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.AddMatch", 0, rule).Err; err != nil {
		t.Fatal(err)
	}
	during, _ := b.MatchRules(ctx, c, a.Names()[0])
	if err := a.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.RemoveMatch", 0, rule).Err; err != nil {
		t.Fatal(err)
	}
	after, _ := b.MatchRules(ctx, c, a.Names()[0])
	if during != before+1 || after != before {
		t.Fatalf("match rules %d → %d → %d", before, during, after)
	}
	// The bus is of type system: org.bluez can be owned.
	reply, err := a.RequestName("org.bluez", 0)
	if err != nil || reply != 1 {
		t.Fatalf("RequestName: %v %v", reply, err)
	}
}
