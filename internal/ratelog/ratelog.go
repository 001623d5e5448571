// Package ratelog is a slog.Handler that lets a repeated log line through
// at most once per interval: a dock's SD card wears out, and journald
// rate-limits a noisy unit as a whole, losing the lines that matter. A
// line repeats when its level, message, logger scope (the attributes and
// groups of With/WithGroup, such as the subsystem) and its key attributes
// (Options.KeyAttrs: by default "reason", "signer", "uid", "client_id")
// are the same; its
// other attributes (an error's text) may differ. So the first refusal of
// each reason by each signer is always logged, however many others were
// refused. The first line after a quiet spell carries suppressed=N, how
// many were held back.
//
// Its memory is bounded: at most MaxPerMessage key-attribute combinations
// per level, message and scope are tracked in one interval (beyond them,
// lines share one key per message, so a flood of made-up signers cannot
// grow it), and at most MaxKeys keys in all.
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

// DefaultKeyAttrs are the key attributes of a zero Options: why
// something was refused, and who asked (a command's signer, an admin
// socket peer's uid, an MQTT client ID).
var DefaultKeyAttrs = []string{"reason", "signer", "uid", "client_id"}

// Options configure New. Zero values are useful.
type Options struct {
	// Every is the least time between two lines with the same key; 0 is
	// one minute.
	Every time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// MaxKeys bounds the memory of keys seen; 0 is 4096. When it is
	// reached, keys quiet for longer than Every are forgotten, and if that
	// is not enough, all of them (repeats pass once more).
	MaxKeys int
	// KeyAttrs names the record attributes whose values are part of a
	// line's key (top-level attributes of the record, not of With); nil
	// is DefaultKeyAttrs, an empty slice none.
	KeyAttrs []string
	// MaxPerMessage bounds the key-attribute combinations tracked per
	// level, message and scope in one interval; 0 is 64. Lines beyond it
	// share the key of their message (with overflow=true).
	MaxPerMessage int
}

type state struct {
	mu   sync.Mutex
	opts Options
	seen map[string]*entry
	per  map[string]*window // by base key (scope, level, message)
}

type entry struct {
	last       time.Time
	suppressed int
}

// window counts the key-attribute combinations a base key took in the
// interval that started at start.
type window struct {
	start time.Time
	n     int
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
	if opts.KeyAttrs == nil {
		opts.KeyAttrs = DefaultKeyAttrs
	}
	if opts.MaxPerMessage <= 0 {
		opts.MaxPerMessage = 64
	}
	return &Handler{next: next, st: &state{opts: opts, seen: map[string]*entry{}, per: map[string]*window{}}}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle implements slog.Handler: a repeat within Every is dropped and
// counted; the next one let through carries the count.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	base := h.scope + "\x00" + r.Level.String() + "\x00" + r.Message
	key := base
	if extra := h.keyAttrs(r); extra != "" {
		key = base + "\x00" + extra
	}
	st := h.st
	st.mu.Lock()
	now := st.opts.Now()
	overflow := false
	e := st.seen[key]
	if e == nil && key != base {
		// A new combination for this message: within the bound, or
		// sharing the message's overflow key.
		w := st.per[base]
		if w == nil || now.Sub(w.start) >= st.opts.Every {
			w = &window{start: now}
			st.per[base] = w
		}
		if w.n >= st.opts.MaxPerMessage {
			overflow = true
			key = base + "\x00\x03overflow"
			e = st.seen[key]
		} else {
			w.n++
		}
	}
	if e != nil && now.Sub(e.last) < st.opts.Every {
		e.suppressed++
		st.mu.Unlock()
		return nil
	}
	held := 0
	if e != nil {
		held = e.suppressed
	} else if len(st.seen) >= st.opts.MaxKeys {
		st.forget(now)
	}
	st.seen[key] = &entry{last: now}
	st.mu.Unlock()
	if held > 0 || overflow {
		r = r.Clone()
		if overflow {
			r.AddAttrs(slog.Bool("overflow", true))
		}
		if held > 0 {
			r.AddAttrs(slog.Int("suppressed", held))
		}
	}
	return h.next.Handle(ctx, r)
}

// forget drops the keys quiet for longer than Every (their next line
// passes anyway), and everything if that frees nothing. Called with mu.
func (st *state) forget(now time.Time) {
	for k, e := range st.seen {
		if now.Sub(e.last) >= st.opts.Every {
			delete(st.seen, k)
		}
	}
	for k, w := range st.per {
		if now.Sub(w.start) >= st.opts.Every {
			delete(st.per, k)
		}
	}
	if len(st.seen) >= st.opts.MaxKeys {
		clear(st.seen)
		clear(st.per)
	}
}

// keyAttrs returns the values of r's key attributes, in Options order.
func (h *Handler) keyAttrs(r slog.Record) string {
	names := h.st.opts.KeyAttrs
	if len(names) == 0 {
		return ""
	}
	vals := make([]string, len(names))
	found := false
	r.Attrs(func(a slog.Attr) bool {
		for i, n := range names {
			if a.Key == n {
				vals[i] = a.Value.String()
				found = true
			}
		}
		return true
	})
	if !found {
		return ""
	}
	return strings.Join(vals, "\x01")
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
