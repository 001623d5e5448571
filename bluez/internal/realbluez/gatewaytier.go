package realbluez

import (
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
)

// The gateway tier (docs/real-bluez.md, "The gateway on real BlueZ"): the
// real gatewayd, mosquitto and gatewayctl in the guest, gatewayd central on
// hci0 and five reference locks as BlueZ peripherals on hci1..hci5, run by
// cmd/gwtier. Its results are Result lines too, with scenarios named
// "gw-…".
const (
	// GatewayID is the gateway's ID in the tier.
	GatewayID = "dock-0042"
	// FirstGatewayLock is the ID of the lock on hci1; the lock on hciN
	// has FirstGatewayLock+N-1.
	FirstGatewayLock = 0x4c4b000000000001
	// GatewayLocks is how many locks the tier hosts (hci1..hci5).
	GatewayLocks = 5
)

// GatewayLockID is the ID of lock n (1-based, on hci n), in hex.
func GatewayLockID(n int) string { return fmt.Sprintf("%016x", uint64(FirstGatewayLock+n-1)) }

// AdapterAddress is the address btvirt gives hciN: 00:AA:01:0N:00:0N
// (hci0 is 00:AA:01:00:00:00).
func AdapterAddress(n int) string { return fmt.Sprintf("00:AA:01:%02X:00:%02X", n, n) }

// NewGatewayLock makes lock number id of fleet as a dock's lock runs: the
// real clock (the gateway's credential is issued by gatewayctl now), the
// default lockout policy, a bolt that counts its moves.
func NewGatewayLock(fleet *channeltest.Fleet, id uint64) (*lock.Lock, *locktest.Actuator, error) {
	p := fleet.Lock(fatalTB{}, id)
	act := &locktest.Actuator{}
	l, err := lock.New(lock.Options{Cert: p.Cert, Key: p.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
		Actuator: act, RTC: time.Now, Rand: rand.Reader})
	if err != nil {
		return nil, nil, err
	}
	return l, act, nil
}

// Timing is one row of the real-stack timing table: a step's durations
// over every result of it.
type Timing struct {
	Step   string  `json:"step"`
	What   string  `json:"what"`
	N      int     `json:"n"`
	P50ms  float64 `json:"p50_ms"`
	MaxMs  float64 `json:"max_ms"`
	Source string  `json:"source"` // the results it is taken from
}

type timingStep struct {
	step, what string
	keys       []string
}

// timingSteps maps the table's rows to the client scenarios' steps
// (bletier's results, scenario/step; "bond/connect#2" is the second
// connect of the bond scenario).
var timingSteps = []timingStep{
	{"connect", "Device1.Connect until ServicesResolved (the lock's GATT service found)", []string{"handshake/connect", "badsig/connect", "wrongpasskey/connect", "restart/connect", "bond/connect#1"}},
	{"edhoc", "EDHOC handshake over the link (3 messages, fragmented at the ATT MTU)", []string{"handshake/handshake", "badsig/handshake", "wrongpasskey/handshake", "restart/handshake", "bond/handshake#1"}},
	{"pairing", "allow-bond's window open, then Pair with the one-time passkey (LE SC passkey entry)", []string{"bond/pair"}},
	{"first-command", "the first command on a fresh secure channel (status)", []string{"handshake/status", "restart/status", "bond/status#1"}},
	{"next-command", "the next command on the same link (a signed unlock)", []string{"handshake/unlock"}},
	{"bonded-reconnect", "connect again to the bonded lock (LTK encryption, GATT cache)", []string{"bond/connect#2"}},
	{"bonded-handshake", "EDHOC on the bonded reconnection", []string{"bond/handshake#2"}},
}

// Timings computes the timing table from client results (any number of
// runs, all modes): p50 and max per step, ok results only.
func Timings(rs []Result) []Timing {
	seen := map[string]int{}
	byKey := map[string][]float64{}
	for _, r := range rs {
		k := r.Scenario + "/" + r.Step
		// The n-th occurrence of a step within one run (a mode's results).
		seen[r.Mode+" "+k]++
		if !r.OK || r.Step == "done" {
			continue
		}
		byKey[k] = append(byKey[k], float64(r.Millis))
		nk := fmt.Sprintf("%s#%d", k, seen[r.Mode+" "+k])
		byKey[nk] = append(byKey[nk], float64(r.Millis))
	}
	return table(timingSteps, byKey)
}

func table(steps []timingStep, byKey map[string][]float64) []Timing {
	var out []Timing
	for _, s := range steps {
		var v []float64
		for _, k := range s.keys {
			v = append(v, byKey[k]...)
		}
		t := Timing{Step: s.step, What: s.what, N: len(v), Source: strings.Join(s.keys, ", ")}
		if len(v) > 0 {
			slices.Sort(v)
			t.P50ms, t.MaxMs = v[(len(v)-1)/2], v[len(v)-1]
		}
		out = append(out, t)
	}
	return out
}

// gatewaySteps are the gateway scenarios' rows: whole operations through
// MQTT, gatewayctl to result.
var gatewaySteps = []timingStep{
	{"first-contact", "status to all five locks at once, unbonded: discovery done, connect, EDHOC, allow-bond, Pair, status (all five)", []string{"gw-first-contact/status-all"}},
	{"command", "one command through MQTT to a bonded lock (gatewayctl send to its result)", []string{"gw-commands/unlock", "gw-commands/lock", "gw-commands/status", "gw-commands/add-user", "gw-commands/list-users", "gw-commands/remove-user", "gw-commands/list-users-after-remove"}},
	{"burst-50", "50 commands over five locks, all in flight (wall)", []string{"gw-burst/send-50"}},
	{"bluetoothd-kill", "bluetoothd SIGKILLed mid-command until the command's result", []string{"gw-bluetoothd-kill/one-result"}},
	{"bluetoothd-recovered", "gatewayd sees the new bluetoothd, then a status to the bonded lock", []string{"gw-bluetoothd-kill/recovered"}},
	{"gatewayd-restart", "gatewayd started again after SIGKILL, until READY=1", []string{"gw-gatewayd-kill/restart"}},
}

// GatewayTimings is the table of the gateway scenarios' results.
func GatewayTimings(rs []Result) []Timing {
	byKey := map[string][]float64{}
	for _, r := range rs {
		if r.OK {
			k := r.Scenario + "/" + r.Step
			byKey[k] = append(byKey[k], float64(r.Millis))
		}
	}
	return table(gatewaySteps, byKey)
}

// TimingTable prints the table, one line per step.
func TimingTable(ts []Timing) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-20s %4s %9s %9s  %s\n", "step", "n", "p50", "max", "what")
	for _, t := range ts {
		fmt.Fprintf(&b, "%-20s %4d %7.0fms %7.0fms  %s\n", t.Step, t.N, t.P50ms, t.MaxMs, t.What)
	}
	return b.String()
}
