package ratelog

import (
	"bytes"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"
)

func newLogger(t *testing.T, every time.Duration, maxKeys int) (*slog.Logger, *bytes.Buffer, *time.Time) {
	t.Helper()
	var buf bytes.Buffer
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	h := New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}), Options{Every: every, Now: func() time.Time { return now }, MaxKeys: maxKeys})
	return slog.New(h), &buf, &now
}

func lines(buf *bytes.Buffer) []string {
	s := strings.TrimSpace(buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestRepeatsHeldBackAndCounted(t *testing.T) {
	log, buf, now := newLogger(t, time.Minute, 0)
	for i := range 100 {
		log.Warn("restarting discovery failed", "err", errors.New("attempt "+string(rune('a'+i%26))))
		*now = now.Add(time.Second)
	}
	// 100 s: the first line, and one more after a minute carrying the 59
	// held back in between.
	got := lines(buf)
	if len(got) != 2 {
		t.Fatalf("%d lines:\n%s", len(got), buf)
	}
	if strings.Contains(got[0], "suppressed") || !strings.Contains(got[1], "suppressed=59") {
		t.Fatalf("lines:\n%s", buf)
	}
}

func TestScopeLevelAndMessageKeyRepeats(t *testing.T) {
	log, buf, _ := newLogger(t, time.Minute, 0)
	bz, bonds := log.With("subsystem", "bluez"), log.With("subsystem", "bonds")
	for range 3 {
		bz.Warn("open failed")
		bonds.Warn("open failed") // another subsystem: its own key
		bz.Error("open failed")   // another level
		bz.Warn("close failed")   // another message
		bz.WithGroup("dev").Warn("open failed")
	}
	if got := lines(buf); len(got) != 5 {
		t.Fatalf("%d lines, want 5:\n%s", len(got), buf)
	}
}

func TestMaxKeysForgets(t *testing.T) {
	log, buf, _ := newLogger(t, time.Hour, 2)
	log.Info("a")
	log.Info("b")
	log.Info("a") // held back
	log.Info("c") // the memory is full: forgotten, c passes
	log.Info("a") // passes once more
	if got := lines(buf); len(got) != 4 {
		t.Fatalf("%d lines, want 4:\n%s", len(got), buf)
	}
}

// TestAttackRefusalsKeyedOnReasonAndSigner: 30 forged commands that name
// one operator and 2 unlocks signed with a stolen gateway key, all within
// a minute: the stolen-key refusal is logged, not hidden behind the
// forgeries' line (issue 11, item 3: 32 refusals left one line).
func TestAttackRefusalsKeyedOnReasonAndSigner(t *testing.T) {
	log, buf, now := newLogger(t, time.Minute, 0)
	intake := log.With("subsystem", "intake")
	for i := range 32 {
		if i == 17 || i == 29 {
			intake.Warn("command refused", "reason", "signer_rejected", "signer", "gw-dock-9", "op", "unlock")
		} else {
			intake.Warn("command refused", "reason", "bad_signature", "signer", "op-olga", "op", "unlock")
		}
		*now = now.Add(time.Second)
	}
	got := lines(buf)
	if len(got) != 2 || !strings.Contains(got[0], "reason=bad_signature") ||
		!strings.Contains(got[1], "reason=signer_rejected") || !strings.Contains(got[1], "signer=gw-dock-9") {
		t.Fatalf("want the first line of each reason and signer, got:\n%s", buf)
	}
	// A minute on, each is logged again with its count.
	*now = now.Add(time.Minute)
	intake.Warn("command refused", "reason", "bad_signature", "signer", "op-olga")
	intake.Warn("command refused", "reason", "signer_rejected", "signer", "gw-dock-9")
	got = lines(buf)
	if len(got) != 4 || !strings.Contains(got[2], "suppressed=29") || !strings.Contains(got[3], "suppressed=1") {
		t.Fatalf("lines:\n%s", buf)
	}
}

// TestAttackRandomSignersBoundedMemory: a flood of made-up signers grows
// neither the log nor the limiter's memory beyond MaxPerMessage per
// message and interval.
func TestAttackRandomSignersBoundedMemory(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	h := New(slog.NewTextHandler(&buf, nil), Options{Now: func() time.Time { return now }, MaxPerMessage: 8})
	log := slog.New(h)
	for i := range 100000 {
		log.Warn("command refused", "reason", "signer_rejected", "signer", "made-up-"+strconv.Itoa(i))
	}
	if got := lines(&buf); len(got) != 9 || !strings.Contains(got[8], "overflow=true") {
		t.Fatalf("%d lines, want 8 signers and 1 overflow line", len(got))
	}
	if n := len(h.st.seen); n > 9 {
		t.Fatalf("%d keys remembered, want at most 9", n)
	}
	// The next interval has room for new signers again, and the overflow
	// line reports what it held back.
	now = now.Add(time.Minute)
	buf.Reset()
	for i := range 20 {
		log.Warn("command refused", "reason", "signer_rejected", "signer", "later-"+strconv.Itoa(i))
	}
	if got := lines(&buf); len(got) != 9 || !strings.Contains(got[8], "suppressed=99991") {
		t.Fatalf("next minute:\n%s", buf.String())
	}
	if n := len(h.st.seen); n > 4096 {
		t.Fatalf("%d keys remembered", n)
	}
}

// TestKeyAttrsNone: an empty KeyAttrs keys on scope, level and message
// only.
func TestKeyAttrsNone(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(New(slog.NewTextHandler(&buf, nil), Options{KeyAttrs: []string{}}))
	log.Warn("command refused", "reason", "a")
	log.Warn("command refused", "reason", "b")
	if got := lines(&buf); len(got) != 1 {
		t.Fatalf("%d lines, want 1", len(got))
	}
}
