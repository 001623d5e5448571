package config

import (
	"strings"
	"testing"
)

// TestSeveralBrokers: mqtt.brokers takes a cluster's nodes, kept in the
// order written (the gateway tries them in that order on every reconnect,
// docs/scaling.md); one bad URL among them is refused, naming it.
func TestSeveralBrokers(t *testing.T) {
	c, err := Parse([]byte("gateway_id = \"dock-1\"\n[mqtt]\nbrokers = [\"ssl://nats-2:8883\", \"ssl://nats-3:8883\", \"ssl://nats-1:8883\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.MQTT.Brokers, " "); got != "ssl://nats-2:8883 ssl://nats-3:8883 ssl://nats-1:8883" {
		t.Fatalf("brokers = %s", got)
	}
	_, err = Parse([]byte("gateway_id = \"dock-1\"\n[mqtt]\nbrokers = [\"tcp://nats-1:1883\", \"http://nats-2:1883\"]\n"))
	if err == nil || !strings.Contains(err.Error(), "http://nats-2:1883") {
		t.Fatalf("a bad URL among several: %v", err)
	}
}
