package fragment

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// The worked examples of docs/protocol.md §2.7 are generated here, from
// Split and Reassembler; TestSpecExamples fails when the document no longer
// shows exactly what the code does, and prints the block to paste.

const specPath = "../../docs/protocol.md"

// hexFragment shows a fragment as its header, a bar, then its payload.
func hexFragment(f []byte) string {
	return fmt.Sprintf("% x | % x", f[:HeaderSize], f[HeaderSize:])
}

// specExample1 is a 40-byte message (bytes 0x00..0x27) split at ATT MTU 23.
func specExample1(t testing.TB) string {
	t.Helper()
	msg := seq(0, 40)
	frags := mustSplit(t, 0x2a, msg, 23)
	var b strings.Builder
	fmt.Fprintf(&b, "message (%d bytes):\n", len(msg))
	for i := 0; i < len(msg); i += 20 {
		fmt.Fprintf(&b, "  % x\n", msg[i:min(i+20, len(msg))])
	}
	fmt.Fprintf(&b, "msg_id 0x2a, ATT MTU 23: fragments of at most 20 bytes, 15 of payload\n")
	for i, f := range frags {
		fmt.Fprintf(&b, "fragment %d (%d bytes): %s\n", i+1, len(f), hexFragment(f))
	}
	return b.String()
}

// specExample1Table breaks the fragments of example 1 into fields.
func specExample1Table(t testing.TB) string {
	t.Helper()
	frags := mustSplit(t, 0x2a, seq(0, 40), 23)
	var b strings.Builder
	b.WriteString("| fragment | msg_id | offset | total_len | payload |\n")
	b.WriteString("| --- | --- | --- | --- | --- |\n")
	for i, f := range frags {
		off := int(f[1])<<8 | int(f[2])
		n := len(f) - HeaderSize
		fmt.Fprintf(&b, "| %d | `%02x` | `%02x %02x` (%d) | `%02x %02x` (%d) | %d bytes, message bytes %d..%d |\n",
			i+1, f[0], f[1], f[2], off, f[3], f[4], int(f[3])<<8|int(f[4]), n, off, off+n-1)
	}
	return b.String()
}

// specExample1Large is the message of example 1 at ATT MTU 247.
func specExample1Large(t testing.TB) string {
	t.Helper()
	frags := mustSplit(t, 0x2a, seq(0, 40), 247)
	if len(frags) != 1 {
		t.Fatalf("%d fragments at MTU 247; want 1", len(frags))
	}
	f := frags[0]
	return fmt.Sprintf("The same message at ATT_MTU 247 (`P = 239`) is %d fragment of %d bytes:\n`%s`.\n",
		len(frags), len(f), hexFragment(f))
}

// sentinelName names the sentinel an error wraps, as the spec names it.
func sentinelName(err error) string {
	names := []string{"BAD_MTU", "SHORT_FRAGMENT", "MESSAGE_TOO_LARGE", "BAD_LENGTH",
		"CONFLICT", "DISCARDED", "TOO_MANY_IN_FLIGHT", "TIMEOUT"}
	for i, s := range sentinels {
		if errors.Is(err, s) {
			return names[i]
		}
	}
	return "?"
}

// specExample2 is a receiver's trace: fragments arriving out of order, with
// an identical duplicate, a malformed fragment, a straggler after
// completion, and a conflicting duplicate.
func specExample2(t testing.TB) string {
	t.Helper()
	r, _ := newTestReassembler(t, Options{})
	msg := seq(0, 40)
	a := mustSplit(t, 0x2b, msg, 23)
	c := mustSplit(t, 0x2c, msg, 23)
	conflicting := slices.Clone(c[0])
	conflicting[HeaderSize+2] = 0xff
	steps := []struct {
		frag []byte
		note string
	}{
		{a[2], "first fragment of msg_id 0x2b to arrive: a new message starts"},
		{a[0], ""},
		{a[2], "identical duplicate of row 1 (step 6b)"},
		{raw(0x2b, 35, 40, seq(35, 10)...), "offset 35 + 10 > total_len 40 (step 5)"},
		{a[1], "last missing bytes"},
		{a[0], "late duplicate, within Timeout of completion (step 7a)"},
		{c[0], "msg_id 0x2c: a new message"},
		{conflicting, "same range as before, byte 2 differs (step 6b)"},
		{c[1], "rest of the discarded message (step 7c)"},
	}
	var b strings.Builder
	b.WriteString("| row | header | payload | receiver's result | in progress afterwards |\n")
	b.WriteString("| --- | --- | --- | --- | --- |\n")
	have := func(id uint8) int {
		if m := r.find(id); m != nil {
			return m.have
		}
		return -1
	}
	for i, s := range steps {
		before := have(s.frag[0])
		got, err := r.Add(s.frag)
		var result string
		switch {
		case err != nil:
			result = "dropped, error " + sentinelName(err)
		case got != nil:
			result = fmt.Sprintf("stored; **message delivered** (%d bytes)", len(got))
		case have(s.frag[0]) != before:
			result = "stored"
		default:
			result = "ignored, no error"
		}
		if s.note != "" {
			result += "; " + s.note
		}
		var state []string
		for _, m := range r.slots {
			if m.used {
				state = append(state, fmt.Sprintf("0x%02x: %d of %d bytes", m.id, m.have, m.total))
			}
		}
		st := "none"
		if state != nil {
			st = strings.Join(state, ", ")
		}
		fmt.Fprintf(&b, "| %d | `% x` | `% x` | %s | %s |\n", i+1, s.frag[:HeaderSize], s.frag[HeaderSize:], result, st)
	}
	return b.String()
}

func TestSpecExamples(t *testing.T) {
	doc, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]string{
		"example 1":       specExample1(t),
		"example 1 table": specExample1Table(t),
		"example 1 large": specExample1Large(t),
		"example 2":       specExample2(t),
	} {
		if !strings.Contains(string(doc), block) {
			t.Errorf("%s: %s does not show what the code does; it should contain:\n%s", specPath, name, block)
		}
	}
}
