package daemon

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/deploy/mosquitto"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// TestAttackJunkFloodKeepsCommandsFlowing: any client floods the
// gateway's command topic with 10,000 junk messages (garbage and forged
// signatures), first at QoS 0, then at QoS 1, with valid signed commands
// sent between them. Every valid command gets exactly one result, without
// a reconnect: junk never holds back the acknowledgement of a valid
// command (issue 11, item 2: one dropped message used to freeze every
// later PUBACK until a reconnect). The broker runs with the limits of the
// shipped configuration (deploy/mosquitto).
func TestAttackJunkFloodKeepsCommandsFlowing(t *testing.T) {
	d := newDockBroker(t, 2, emulator.Options{}, mosquittotest.Options{Extra: mosquitto.Limits()})
	r := d.run()
	oc := d.client
	oc.until("retained status online", func() bool {
		return len(oc.status) > 0 && strings.Contains(oc.status[len(oc.status)-1], `"online"`)
	})

	o := mqtt.NewClientOptions().AddBroker(d.broker.URL()).SetClientID("flooder").SetCleanSession(true).
		SetWriteTimeout(30 * time.Second)
	attacker := mqtt.NewClient(o)
	if tok := attacker.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("attacker connect: %v", tok.Error())
	}
	t.Cleanup(func() { attacker.Disconnect(100) })
	_, valid := d.sign(0, command.OpStatus, command.Args{})
	forged := bytes.Clone(valid)
	forged[len(forged)-1] ^= 1

	const junk, every = 10000, 1000
	var ids [][16]byte
	for _, qos := range []byte{0, 1} {
		var toks []mqtt.Token
		for i := range junk {
			if i%every == every/2 {
				b, s := d.sign(len(ids)%2, command.OpStatus, command.Args{})
				oc.publish(s)
				ids = append(ids, b.CommandID)
			}
			p := []byte("unlock everything " + strconv.Itoa(i))
			if i%10 == 0 {
				p = forged
			}
			toks = append(toks, attacker.Publish(d.topics.Cmd, qos, false, p))
		}
		for _, tok := range toks {
			if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
				t.Fatalf("junk publish at QoS %d: %v", qos, tok.Error())
			}
		}
		b, s := d.sign(0, command.OpStatus, command.Args{})
		oc.publish(s)
		ids = append(ids, b.CommandID)
		oc.until("one result for every valid command", func() bool {
			for _, id := range ids {
				if len(oc.resultsFor(id)) == 0 {
					return false
				}
			}
			return true
		})
	}
	m := scrape(t, r.metrics)
	oc.mu.Lock()
	defer oc.mu.Unlock()
	for i, id := range ids {
		if n := len(oc.resultsFor(id)); n != 1 {
			t.Errorf("valid command %d: %d results, want 1", i, n)
		}
	}
	// The flood really was one: notices were rate-limited, and nothing
	// needed a reconnect.
	if v := metric(t, m, `gatewayd_intake_notices_suppressed_total`); v < 1000 {
		t.Errorf("notices_suppressed_total %v: the flood did not flood", v)
	}
	if v := metric(t, m, `gatewayd_mqtt_connects_total`); v != 1 {
		t.Errorf("mqtt connects_total %v, want 1 (no reconnect)", v)
	}
	if v := metric(t, m, `gatewayd_mqtt_oldest_unacked_age_seconds`); v > 60 {
		t.Errorf("oldest_unacked_age_seconds %v after the flood", v)
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metric returns the value of the sample named exactly series.
func metric(t *testing.T, exposition, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(exposition)
	if m == nil {
		t.Fatalf("no sample %s", series)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
