package broker

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// reconnectBound is how soon after the broker is back the session must be
// connected again in TestReconnectAfterRepeatedOutages. The session
// reconnects within about MaxReconnectInterval (1 s); the bound leaves
// room for a loaded machine, and is well under what paho's own backoff
// took (it doubled to 8, 16 and 30 s across outages a few seconds apart,
// never reset by the connections in between).
const reconnectBound = 5 * time.Second

// TestReconnectAfterRepeatedOutages: mosquitto is SIGKILLed and started
// again six times, a second or two apart. After each return the session
// (with the default MaxReconnectInterval) is connected and subscribed
// again within reconnectBound, and a command published then reaches it:
// the backoff starts again from nothing after every successful connection.
func TestReconnectAfterRepeatedOutages(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	r := newRecorder()
	s := session(t, b, "gatewayd-outages", r, func(o *Options) { o.MaxReconnectInterval = 0 })
	op := newOperator(t, b, "operator-outages", true)
	var took []time.Duration
	for i := range 6 {
		b.Kill()
		deadline := time.Now().Add(wait)
		for s.Connected() {
			if time.Now().After(deadline) {
				t.Fatal("session still connected after the broker died")
			}
			time.Sleep(5 * time.Millisecond)
		}
		// The outage; Restart returns once mosquitto accepts connections.
		time.Sleep(time.Second + time.Duration(i%3)*500*time.Millisecond)
		b.Restart(t)
		back := time.Now()
		for !s.Connected() {
			if time.Since(back) > wait {
				t.Fatalf("outage %d: not connected %v after the broker came back", i+1, wait)
			}
			time.Sleep(5 * time.Millisecond)
		}
		took = append(took, time.Since(back))
		msg := fmt.Sprintf("after-outage-%d", i+1)
		op.publish(t, "gw/1/cmd/lock", msg, false)
		for {
			m := r.next(t)
			m.Ack()
			if string(m.Payload) == msg {
				break
			}
		}
	}
	t.Logf("connected again after the broker's return: %v", took)
	if worst := slices.Max(took); worst > reconnectBound {
		t.Errorf("reconnected %v after the broker's return at worst (all: %v), want under %v", worst, took, reconnectBound)
	}
}
