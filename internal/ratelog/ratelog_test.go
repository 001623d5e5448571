package ratelog

import (
	"bytes"
	"errors"
	"log/slog"
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
