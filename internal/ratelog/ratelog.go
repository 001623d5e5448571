// Package ratelog is a slog.Handler that lets a repeated log line through
// at most once per interval: a dock's SD card wears out, and journald
// rate-limits a noisy unit as a whole, losing the lines that matter. A
// line repeats when its level, message and logger scope (the attributes
// and groups of With/WithGroup, such as the subsystem) are the same; its
// other attributes (an error's text) may differ. The first line after a
// quiet spell carries suppressed=N, how many were held back.
//
// It may import the standard library only.
package ratelog

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Options configure New. Zero values are useful.
type Options struct {
	// Every is the least time between two lines with the same key; 0 is
	// one minute.
	Every time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// MaxKeys bounds the memory of keys seen; 0 is 4096. When it is
	// reached the memory is forgotten (repeats pass once more).
	MaxKeys int
}

type state struct {
	mu   sync.Mutex
	opts Options
	seen map[string]*entry
}

type entry struct {
	last       time.Time
	suppressed int
}

// Handler rate-limits repeated lines on their way to the next handler.
type Handler struct {
	next  slog.Handler
	st    *state
	scope string
}

// New wraps next.
func New(next slog.Handler, opts Options) *Handler {
	if opts.Every <= 0 {
		opts.Every = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = 4096
	}
	return &Handler{next: next, st: &state{opts: opts, seen: map[string]*entry{}}}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle implements slog.Handler: a repeat within Every is dropped and
// counted; the next one let through carries the count.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	key := h.scope + "\x00" + r.Level.String() + "\x00" + r.Message
	st := h.st
	st.mu.Lock()
	now := st.opts.Now()
	e := st.seen[key]
	if e != nil && now.Sub(e.last) < st.opts.Every {
		e.suppressed++
		st.mu.Unlock()
		return nil
	}
	held := 0
	if e != nil {
		held = e.suppressed
	} else if len(st.seen) >= st.opts.MaxKeys {
		clear(st.seen)
	}
	st.seen[key] = &entry{last: now}
	st.mu.Unlock()
	if held > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", held))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler; the attributes become part of the
// scope that keys repeats.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.scope)
	for _, a := range as {
		b.WriteString("\x01" + a.String())
	}
	return &Handler{next: h.next.WithAttrs(as), st: h.st, scope: b.String()}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), st: h.st, scope: h.scope + "\x02" + name}
}
