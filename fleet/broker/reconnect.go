package broker

import (
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/internal/backoff"
)

// minReconnectInterval is the first wait of the reconnect backoff (the
// first attempt after a lost connection waits nothing).
const minReconnectInterval = 100 * time.Millisecond

// pahoSleep is what paho's own waits between connection attempts are set
// to: nothing to speak of, since the pacer does the waiting. paho's
// backoff doubles up to MaxReconnectInterval and is never reset by a
// successful connection, only by a long enough quiet spell: brief broker
// outages a few seconds apart left the gateway disconnected for up to the
// cap (30 s then) after the broker was back.
const pahoSleep = time.Millisecond

// pacer paces the session's connection attempts with internal/backoff: the
// first attempt after a connection was lost (or the first at Start) goes
// at once, the next ones wait a jittered, doubling delay from
// minReconnectInterval up to MaxReconnectInterval, and a successful
// connection starts again from nothing. paho calls before with each round
// of attempts (one per broker URL), on its connecting goroutine.
type pacer struct {
	closing <-chan struct{}

	mu    sync.Mutex
	b     backoff.Backoff
	tried bool // a round began since the last connection
}

func newPacer(max time.Duration, closing <-chan struct{}) *pacer {
	return &pacer{closing: closing, b: backoff.Backoff{Min: min(minReconnectInterval, max), Max: max}}
}

// notify is paho's connection notification handler: it waits before a
// round of attempts.
func (p *pacer) notify(_ mqtt.Client, n mqtt.ConnectionNotification) {
	if _, ok := n.(mqtt.ConnectionNotificationConnecting); ok {
		p.before()
	}
}

// before waits before a round of attempts, as the backoff says, or until
// the session closes.
func (p *pacer) before() {
	p.mu.Lock()
	var wait time.Duration
	if p.tried {
		wait = p.b.Next()
	}
	p.tried = true
	p.mu.Unlock()
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.closing:
	}
}

// connected resets the backoff after a successful connection.
func (p *pacer) connected() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tried = false
	p.b.Reset()
}
