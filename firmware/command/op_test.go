package command

import "testing"

// TestParseOp: every op's spec name parses back to it; anything else,
// including String's "op(N)" for an undefined code, does not.
func TestParseOp(t *testing.T) {
	for o := OpLock; o.Valid(); o++ {
		if got, ok := ParseOp(o.String()); !ok || got != o {
			t.Errorf("ParseOp(%q) = %v, %v", o.String(), got, ok)
		}
	}
	for _, name := range []string{"", "Unlock", "op(0)", Op(200).String(), "self-destruct"} {
		if _, ok := ParseOp(name); ok {
			t.Errorf("ParseOp(%q) accepted", name)
		}
	}
}
