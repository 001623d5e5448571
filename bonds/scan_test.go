package bonds

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestTopStrings: the fast path reads the top-level string fields a
// strict decode reads, ignores the same names nested deeper or inside
// strings, and gives up (so the caller decodes with encoding/json) on
// anything it cannot read for certain.
func TestTopStrings(t *testing.T) {
	keys := []string{"state", "address"}
	vals := make([][]byte, 2)
	good := []struct{ in, state, addr string }{
		{`{"state":"succeeded"}`, "succeeded", ""},
		{` { "x" : {"state":"running","a":[1,{"state":"q"}]}, "s":"\"state\":\"y\"", "state" : "failed" , "address":"C0:01"} `, "failed", "C0:01"},
		{`{"result":{"state":"failed"},"n":[],"o":{}}`, "", ""},
		{`{"a":"x\\","b":"\\\"state\":","state":"queued"}`, "queued", ""},
	}
	for _, g := range good {
		if !topStrings([]byte(g.in), keys, vals) || string(vals[0]) != g.state || string(vals[1]) != g.addr {
			t.Errorf("topStrings(%s) = %q, want %q %q", g.in, vals, g.state, g.addr)
		}
	}
	for _, bad := range []string{``, `[]`, `{"state":"a"`, `{"state":"a"} x`, `{"state":"a\"b"}`, `{"state":1}`,
		`{"state":null}`, `{"state":"a","state":"b"}`, `{"x":"unterminated}`, `{"x":[}`, `{"x":{"y":1}}}`} {
		if topStrings([]byte(bad), keys, vals) {
			t.Errorf("topStrings(%s) = true, want false", bad)
		}
	}
	// A real record: what the fast path reads is what encoding/json reads.
	now := time.Now().UTC()
	l := Lock{ID: lid(7), Address: "C0:00:00:00:00:07", Bond: BondBonded, BondedAt: now, LastSeen: now.Add(time.Second),
		Credential: []byte(`"state":"x"`), Counters: map[string]uint64{"address": 1}, CreatedAt: now, UpdatedAt: now}
	b, err := json.Marshal(&l)
	if err != nil {
		t.Fatal(err)
	}
	var fast lockBond
	var slow lockBondJSON
	if !fastLockBond(b, &fast) {
		t.Fatalf("fastLockBond(%s) = false", b)
	}
	if err := json.Unmarshal(b, &slow); err != nil {
		t.Fatal(err)
	}
	var times [3]time.Time
	for i := range times {
		var ok bool
		if times[i], ok = fast.time(i); !ok {
			t.Fatalf("time %d does not parse", i)
		}
	}
	if fast.ID != l.ID || string(fast.Address) != slow.Address || fast.Bond != slow.Bond || !times[0].Equal(slow.BondedAt) ||
		!times[1].Equal(slow.LastSeen) || !times[2].Equal(slow.CreatedAt) {
		t.Errorf("fast %+v, encoding/json %+v", fast, slow)
	}
	if last, ok := fast.lastActive(time.Time{}); !ok || !last.Equal(l.LastSeen) {
		t.Errorf("lastActive = %v, %v; want %v", last, ok, l.LastSeen)
	}
	// A bond state the fast path does not know: encoding/json decides.
	b2 := []byte(strings.Replace(string(b), `"bond":"bonded"`, `"bond":"weird"`, 1))
	if fastLockBond(b2, &fast) {
		t.Errorf("fastLockBond took an unknown bond state")
	}
}
