package fleet_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
	"github.com/gatewayd/gatewayd/fleet"
	"github.com/gatewayd/gatewayd/fleet/fleettest"
	"github.com/gatewayd/gatewayd/internal/ratelog"
)

// *bonds.DB is the audit store the daemon passes.
var _ fleet.AuditStore = (*bonds.DB)(nil)

// newAuditEnv is a refEnv whose locks keep audit logs.
func newAuditEnv(t *testing.T) *refEnv {
	e := newRefEnv(t)
	e.link.Audit = true
	return e
}

// addLock boots reference lock n with its record in the database (the
// daemon makes it when it first hears the lock).
func (e *refEnv) addLock(t *testing.T, n uint64) *fleettest.RefLock {
	t.Helper()
	l := e.link.AddLock(t, n)
	if err := e.db.PutLock(context.Background(), bonds.Lock{ID: l.ID}); err != nil {
		t.Fatal(err)
	}
	return l
}

// status journals an unsigned status for l (the gateway's own credential
// allows it) and returns its entry.
func (e *refEnv) status(t *testing.T, l *fleettest.RefLock, n uint64) bonds.Entry {
	t.Helper()
	e.clk.Add(time.Second)
	return appendCmd(t, e.db, bonds.Command{ID: cmdID(uint64(l.ID[7]), n), LockID: l.ID, Operator: "otto", Operation: "status"})
}

// cursor reads l's audit cursor (zero if none).
func (e *refEnv) cursor(t *testing.T, l *fleettest.RefLock) bonds.AuditCursor {
	t.Helper()
	c, err := e.db.AuditCursor(context.Background(), l.ID)
	if err != nil {
		return bonds.AuditCursor{}
	}
	return c
}

// checkPending asserts that l's pending records are exactly the lock's
// entries 0..cursor-1, in order, byte for byte.
func (e *refEnv) checkPending(t *testing.T, l *fleettest.RefLock) bonds.AuditCursor {
	t.Helper()
	c := e.cursor(t, l)
	all, err := l.AuditLog.Page(0, audit.MaxPageEntries)
	if err != nil {
		t.Fatal(err)
	}
	entries := all.Entries
	for len(entries) < int(c.Seq) {
		p, err := l.AuditLog.Page(uint64(len(entries)), audit.MaxPageEntries)
		if err != nil || len(p.Entries) == 0 {
			t.Fatalf("lock's log from %d: %v", len(entries), err)
		}
		entries = append(entries, p.Entries...)
	}
	if len(c.Pending) != int(c.Seq) {
		t.Fatalf("cursor at %d with %d pending records, want one per entry", c.Seq, len(c.Pending))
	}
	for i, r := range c.Pending {
		want, _ := entries[i].Encode()
		if r.Seq != uint64(i) || !bytes.Equal(r.Entry, want) {
			t.Errorf("pending record %d: seq %d, entry %x; want seq %d, %x", i, r.Seq, r.Entry, i, want)
		}
	}
	if len(entries) > 0 && c.Seq > 0 && !bytes.Equal(c.Head, entries[c.Seq-1].Hash()) {
		t.Errorf("cursor head %x is not the hash of entry %d", c.Head, c.Seq-1)
	}
	return c
}

// TestAuditAfterSession: a command session ends with reading the lock's
// audit log, after its commands: every entry, in order, verified and
// queued for the broker with the cursor's move; the result comes first.
func TestAuditAfterSession(t *testing.T) {
	e := newAuditEnv(t)
	l := e.addLock(t, 1)
	var mu sync.Mutex
	var events []string
	note := func(s string) func() {
		return func() { mu.Lock(); events = append(events, s); mu.Unlock() }
	}
	s := start(t, e.db, e.link, e.clk, func(o *fleet.Options) {
		o.OnResult = note("result")
		o.Audit = fleet.AuditOptions{Store: e.db, OnEntries: note("audit")}
	})
	if problems, err := testutil.CollectAndLint(s); err != nil || len(problems) > 0 {
		t.Fatalf("metric lint: %v %v", problems, err)
	}
	en := e.add(t, l, command.OpUnlock, 1, e.op)
	s.Submit(en)
	waitTerminal(t, e.db, en.ID)
	until(t, "audit entries queued", func() bool { return e.cursor(t, l).Seq > 0 })
	// OnEntries runs once the entries are stored, which the cursor shows
	// a moment before: wait for both callbacks, then check their order.
	until(t, "the result and audit callbacks", func() bool { mu.Lock(); defer mu.Unlock(); return len(events) >= 2 })
	c := e.checkPending(t, l)
	mu.Lock()
	if len(events) < 2 || events[0] != "result" || events[1] != "audit" {
		t.Errorf("events = %v, want the result before the audit entries", events)
	}
	mu.Unlock()
	// The unlock's own entry is among those read.
	found := false
	for _, r := range c.Pending {
		ent, err := audit.DecodeEntry(r.Entry)
		if err != nil {
			t.Fatal(err)
		}
		found = found || ent.Event == audit.EventCommandOK && bytes.Equal(ent.CommandID, en.ID[:])
	}
	if !found {
		t.Errorf("no command_ok entry for the unlock among %d entries", len(c.Pending))
	}
	if got := metricValue(t, s, "gatewayd_audit_entries_read_total"); got != float64(c.Seq) {
		t.Errorf("entries_read_total = %v, want %d", got, c.Seq)
	}

	// A second session reads on from the cursor: still one record per
	// entry, none twice.
	en = e.status(t, l, 2)
	s.Submit(en)
	waitTerminal(t, e.db, en.ID)
	until(t, "more audit entries", func() bool { return e.cursor(t, l).Seq > c.Seq })
	e.checkPending(t, l)
}

// TestAuditBoundedPerSession: a session reads at most Pages pages, so a
// long log does not hold the lock's slot; the next sessions read on.
func TestAuditBoundedPerSession(t *testing.T) {
	e := newAuditEnv(t)
	l := e.addLock(t, 1)
	for i := range 70 {
		if _, err := l.AuditLog.Append(audit.Entry{Event: audit.EventTimeSet, Time: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	s := start(t, e.db, e.link, e.clk, func(o *fleet.Options) {
		o.Audit = fleet.AuditOptions{Store: e.db, Pages: 2}
	})
	en := e.status(t, l, 1)
	s.Submit(en)
	waitTerminal(t, e.db, en.ID)
	until(t, "two pages read", func() bool { return e.cursor(t, l).Seq >= 2*audit.MaxPageEntries })
	until(t, "the session's end", func() bool { return metricValue(t, s, "gatewayd_fleet_sessions_active") == 0 })
	if got := e.cursor(t, l).Seq; got != 2*audit.MaxPageEntries {
		t.Errorf("after one session the cursor is at %d, want %d (2 pages)", got, 2*audit.MaxPageEntries)
	}
	for n := uint64(2); e.cursor(t, l).Seq < 70; n++ {
		en := e.status(t, l, n)
		s.Submit(en)
		waitTerminal(t, e.db, en.ID)
		if n > 10 {
			t.Fatalf("cursor at %d after %d sessions", e.cursor(t, l).Seq, n)
		}
	}
	e.checkPending(t, l)
}

// TestAuditScheduled: a lock heard, with no command for it, gets a
// session of its own every Interval to read its log.
func TestAuditScheduled(t *testing.T) {
	e := newAuditEnv(t)
	l := e.addLock(t, 1)
	start(t, e.db, e.link, e.clk, func(o *fleet.Options) {
		o.Audit = fleet.AuditOptions{Store: e.db, Interval: 20 * time.Millisecond,
			Heard: func() []bonds.LockID { return []bonds.LockID{l.ID} }}
	})
	until(t, "a scheduled audit read", func() bool { return e.cursor(t, l).Seq > 0 })
	first := e.cursor(t, l).Seq
	// Each read is itself an entry of the log (a command that ran), so
	// the next scheduled read finds something new.
	until(t, "a second scheduled audit read", func() bool { return e.cursor(t, l).Seq > first })
	e.checkPending(t, l)
	if d := l.Dials(); d < 2 {
		t.Errorf("lock dialled %d times, want a session per read", d)
	}
}

// tamper is a Link in front of a RefLink whose sessions' read-audit
// answers are rewritten by fn while it is set: a tampering relay, or a
// lock whose flash was rewritten.
type tamper struct {
	fleet.Link
	mu   sync.Mutex
	fn   func(p *audit.Page, from uint64) (replay bool)
	gate chan struct{} // if not nil, Dial waits for it to close
}

// hold makes Dial wait until release is called, so that commands
// submitted meanwhile are all in the lock's queue when its session starts.
func (tl *tamper) hold() (release func()) {
	ch := make(chan struct{})
	tl.mu.Lock()
	tl.gate = ch
	tl.mu.Unlock()
	return func() {
		tl.mu.Lock()
		tl.gate = nil
		tl.mu.Unlock()
		close(ch)
	}
}

func (tl *tamper) set(fn func(p *audit.Page, from uint64) bool) {
	tl.mu.Lock()
	tl.fn = fn
	tl.mu.Unlock()
}

func (tl *tamper) Dial(ctx context.Context, id bonds.LockID) (fleet.Session, error) {
	tl.mu.Lock()
	gate := tl.gate
	tl.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s, err := tl.Link.Dial(ctx, id)
	if err != nil {
		return nil, err
	}
	return &tamperSession{Session: s, tl: tl}, nil
}

type tamperSession struct {
	fleet.Session
	tl *tamper
}

func (s *tamperSession) PeerKey() ed25519.PublicKey {
	if pk, ok := s.Session.(fleet.PeerKeyer); ok {
		return pk.PeerKey()
	}
	return nil
}

func (s *tamperSession) ReadAudit(ctx context.Context, from uint64, max int) (*command.Result, error) {
	s.tl.mu.Lock()
	fn := s.tl.fn
	s.tl.mu.Unlock()
	ar := s.Session.(fleet.AuditReader)
	if fn == nil {
		return ar.ReadAudit(ctx, from, max)
	}
	// A probe: does fn want the page from 0 (a replay)?
	var probe audit.Page
	at := from
	if fn(&probe, from) {
		at = 0
	}
	res, err := ar.ReadAudit(ctx, at, max)
	if err != nil || res.Status != command.StatusOK {
		return res, err
	}
	p, err := audit.DecodePage(res.Data)
	if err != nil {
		return nil, err
	}
	fn(&p, from)
	if res.Data, err = audit.EncodePage(p); err != nil {
		// fn made it unencodable: send bytes that are no page at all.
		res.Data = []byte{0xa1, 0x01, 0x00} // {1: 0}
	}
	return res, nil
}

// logLines records the lines a logger lets through.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (h *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (h *logLines) Handle(_ context.Context, r slog.Record) error {
	s := r.Message
	r.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
	h.mu.Lock()
	h.lines = append(h.lines, s)
	h.mu.Unlock()
	return nil
}
func (h *logLines) WithAttrs(as []slog.Attr) slog.Handler { return &scoped{h, as} }
func (h *logLines) WithGroup(string) slog.Handler         { return h }

func (h *logLines) matching(sub string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, l := range h.lines {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

type scoped struct {
	h  *logLines
	as []slog.Attr
}

func (s *scoped) Enabled(context.Context, slog.Level) bool { return true }
func (s *scoped) Handle(ctx context.Context, r slog.Record) error {
	r.AddAttrs(s.as...)
	return s.h.Handle(ctx, r)
}
func (s *scoped) WithAttrs(as []slog.Attr) slog.Handler {
	return &scoped{s.h, append(append([]slog.Attr{}, s.as...), as...)}
}
func (s *scoped) WithGroup(string) slog.Handler { return s }

// attackAudit runs the common script of the audit attack tests: a clean
// session establishes the cursor; then every page the gateway reads is
// rewritten by fn for two sessions, each of which must be detected as
// reason, counted, logged once (rate-limited) with the lock ID and
// sequence number, and leave the cursor and its pending records as they
// were; once the tampering stops, reading resumes from the same cursor
// with nothing lost or repeated.
func attackAudit(t *testing.T, reason string, fn func(p *audit.Page, from uint64) bool) {
	attackAuditOn(t, newAuditEnv(t), reason, fn)
}

func attackAuditOn(t *testing.T, e *refEnv, reason string, fn func(p *audit.Page, from uint64) bool) {
	l := e.addLock(t, 1)
	tl := &tamper{Link: e.link}
	lines := &logLines{}
	log := slog.New(ratelog.New(lines, ratelog.Options{Every: time.Hour}))
	s := start(t, e.db, tl, e.clk, func(o *fleet.Options) {
		o.Logger = log
		o.Audit = fleet.AuditOptions{Store: e.db}
	})
	breaks := func() float64 {
		return metricValue(t, s, "gatewayd_audit_chain_breaks_total", "reason", reason)
	}
	n := uint64(0)
	// session carries cmds commands in one session (then the audit read).
	session := func(cmds int) {
		t.Helper()
		release := tl.hold()
		var ids []bonds.CommandID
		for range cmds {
			n++
			en := e.status(t, l, n)
			ids = append(ids, en.ID)
			s.Submit(en)
		}
		// All admitted (none waits in the inbox), the first one's
		// attempt begun and held at the connect.
		until(t, "one session for them all", func() bool { w, _ := s.Progress(); return w == 1 })
		release()
		waitTerminal(t, e.db, ids...)
	}
	session(1)
	until(t, "the first audit read", func() bool { return e.cursor(t, l).Seq > 0 })
	before := e.checkPending(t, l)

	tl.set(fn)
	for i := 1; i <= 2; i++ {
		session(3)
		until(t, "the break counted", func() bool { return breaks() >= float64(i) })
		if c := e.cursor(t, l); c.Seq != before.Seq || !bytes.Equal(c.Head, before.Head) || len(c.Pending) != len(before.Pending) {
			t.Fatalf("after a %s page the cursor moved: %d/%x with %d pending, was %d/%x with %d", reason,
				c.Seq, c.Head, len(c.Pending), before.Seq, before.Head, len(before.Pending))
		}
	}
	if got := breaks(); got != 2 {
		t.Errorf("chain_breaks_total{reason=%q} = %v, want 2", reason, got)
	}
	for _, other := range []string{fleet.BreakAltered, fleet.BreakReordered, fleet.BreakGap, fleet.BreakRewound, fleet.BreakMalformed, fleet.BreakSignature} {
		if other == reason {
			continue
		}
		if got := metricValue(t, s, "gatewayd_audit_chain_breaks_total", "reason", other); got != 0 {
			t.Errorf("chain_breaks_total{reason=%q} = %v, want 0", other, got)
		}
	}
	got := lines.matching("audit chain break")
	if len(got) != 1 {
		t.Errorf("%d chain break lines, want 1 (rate-limited): %q", len(got), got)
	} else {
		for _, want := range []string{"lock=" + l.ID.String(), "reason=" + reason, " seq=" + strconv.FormatUint(before.Seq, 10), "page_sha256=", "page="} {
			if !strings.Contains(got[0], want) {
				t.Errorf("chain break line %q lacks %q", got[0], want)
			}
		}
		// The page kept as evidence never carries the lock's signature.
		if _, v, ok := strings.Cut(got[0], " page="); ok {
			v, _, _ = strings.Cut(v, " ")
			if raw, err := base64.StdEncoding.DecodeString(v); err == nil {
				if p, err := audit.DecodePage(raw); err != nil || len(p.Sig) != 0 {
					t.Errorf("logged page: %v, signature of %d bytes", err, len(p.Sig))
				}
			}
		}
	}

	tl.set(nil)
	session(1)
	until(t, "reading resumed", func() bool { return e.cursor(t, l).Seq > before.Seq })
	e.checkPending(t, l)
}

// metricValue gathers c and returns the value of the counter or gauge
// name with the label pairs given.
func metricValue(t testing.TB, c prometheus.Collector, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, lp := range m.GetLabel() {
					ok = ok || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !ok {
					continue metrics
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

// TestAttackAuditAlteredEntry: an entry altered in transit or in flash
// (its time changed) no longer hashes to the next entry's prev_hash.
func TestAttackAuditAlteredEntry(t *testing.T) {
	attackAudit(t, fleet.BreakAltered, func(p *audit.Page, _ uint64) bool {
		if len(p.Entries) > 1 {
			p.Entries[1].Time += 3600
		}
		return false
	})
}

// TestAttackAuditAlteredHead: the newest entry altered (its status), so
// only head_hash betrays it.
func TestAttackAuditAlteredHead(t *testing.T) {
	attackAudit(t, fleet.BreakAltered, func(p *audit.Page, _ uint64) bool {
		if n := len(p.Entries); n > 0 {
			p.Entries[n-1].Status ^= 1
		}
		return false
	})
}

// TestAttackAuditReorderedPage: two entries swapped.
func TestAttackAuditReorderedPage(t *testing.T) {
	attackAudit(t, fleet.BreakReordered, func(p *audit.Page, _ uint64) bool {
		if len(p.Entries) > 2 {
			p.Entries[1], p.Entries[2] = p.Entries[2], p.Entries[1]
		}
		return false
	})
}

// TestAttackAuditGap: an entry removed from the page (a skipped sequence
// number), the rest intact.
func TestAttackAuditGap(t *testing.T) {
	attackAudit(t, fleet.BreakGap, func(p *audit.Page, _ uint64) bool {
		if len(p.Entries) > 2 {
			p.Entries = append(p.Entries[:1], p.Entries[2:]...)
		}
		return false
	})
}

// TestAttackAuditGapAtStart: the page withholds its first entries and
// starts after the cursor although the lock retains them.
func TestAttackAuditGapAtStart(t *testing.T) {
	attackAudit(t, fleet.BreakGap, func(p *audit.Page, _ uint64) bool {
		if len(p.Entries) > 1 {
			p.Entries = p.Entries[1:]
		}
		return false
	})
}

// TestAttackAuditRewoundReplay: an old page replayed (the log from 0
// again, valid in itself) instead of the entries after the cursor.
func TestAttackAuditRewoundReplay(t *testing.T) {
	attackAudit(t, fleet.BreakRewound, func(p *audit.Page, from uint64) bool { return true })
}

// TestAttackAuditRewoundLog: a log that went back, its next_seq below the
// gateway's cursor (a lock wiped and its log restarted, or a relay
// serving a stale snapshot).
func TestAttackAuditRewoundLog(t *testing.T) {
	attackAudit(t, fleet.BreakRewound, func(p *audit.Page, from uint64) bool {
		if p.Head == nil {
			return false // the probe
		}
		p.Entries, p.Oldest, p.Next = nil, 0, from-1
		return false
	})
}

// countLink counts the sessions open at once through it.
type countLink struct {
	fleet.Link
	mu        sync.Mutex
	open, max int
}

func (c *countLink) Dial(ctx context.Context, id bonds.LockID) (fleet.Session, error) {
	s, err := c.Link.Dial(ctx, id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.open++
	c.max = max(c.max, c.open)
	c.mu.Unlock()
	return &countSession{Session: s, c: c}, nil
}

func (c *countLink) maxOpen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}

type countSession struct {
	fleet.Session
	c    *countLink
	done bool
}

func (s *countSession) ReadAudit(ctx context.Context, from uint64, max int) (*command.Result, error) {
	return s.Session.(fleet.AuditReader).ReadAudit(ctx, from, max)
}

func (s *countSession) Close() error {
	if !s.done {
		s.done = true
		s.c.mu.Lock()
		s.c.open--
		s.c.mu.Unlock()
	}
	return s.Session.Close()
}

// TestAuditOnlySessionsOneAtATime: scheduled reads of several locks run
// one session at a time, so they never take more than one of the
// session slots from commands; a command for another lock runs
// meanwhile.
func TestAuditOnlySessionsOneAtATime(t *testing.T) {
	e := newAuditEnv(t)
	var heard []bonds.LockID
	for n := uint64(1); n <= 4; n++ {
		heard = append(heard, e.addLock(t, n).ID)
	}
	cmdLock := e.addLock(t, 5)
	cl := &countLink{Link: e.link}
	s := start(t, e.db, cl, e.clk, func(o *fleet.Options) {
		o.MaxSessions = 4
		o.Audit = fleet.AuditOptions{Store: e.db, Interval: 10 * time.Millisecond,
			Heard: func() []bonds.LockID { return heard }}
	})
	for _, id := range heard {
		until(t, "each heard lock's log read", func() bool {
			c, err := e.db.AuditCursor(context.Background(), id)
			return err == nil && c.Seq > 0
		})
	}
	en := e.status(t, cmdLock, 1)
	s.Submit(en)
	if got := waitTerminal(t, e.db, en.ID)[en.ID]; got.State != bonds.StateSucceeded {
		t.Errorf("the command during scheduled reads: %s", got.State)
	}
	// The command's session and one audit-only session at most.
	if got := cl.maxOpen(); got > 2 {
		t.Errorf("%d sessions open at once; audit-only ones must take one slot at most", got)
	}
}

// TestAuditLockWithoutLog: a lock that keeps no audit log refuses
// read-audit; its commands are unaffected, the refusal is counted, and
// it is not asked again after every session, only after Interval.
func TestAuditLockWithoutLog(t *testing.T) {
	e := newRefEnv(t) // no audit logs
	l := e.addLock(t, 1)
	s := start(t, e.db, e.link, e.clk, func(o *fleet.Options) {
		o.Audit = fleet.AuditOptions{Store: e.db, Interval: time.Hour}
	})
	for n := uint64(1); n <= 3; n++ {
		en := e.status(t, l, n)
		s.Submit(en)
		if got := waitTerminal(t, e.db, en.ID)[en.ID]; got.State != bonds.StateSucceeded {
			t.Errorf("status %d: %s", n, got.State)
		}
		until(t, "the session's end", func() bool { return metricValue(t, s, "gatewayd_fleet_sessions_active") == 0 })
	}
	if got := metricValue(t, s, "gatewayd_audit_read_failures_total", "cause", "refused"); got != 1 {
		t.Errorf("read_failures_total{cause=refused} = %v, want 1 (asked once per interval)", got)
	}
	if _, err := e.db.AuditCursor(context.Background(), l.ID); err == nil {
		t.Error("a cursor for a lock that keeps no log")
	}
}

// TestAttackAuditForgedSignature: the locks sign their pages; a page
// whose chain holds but whose signature does not verify under the lock's
// key (a forged or replayed head statement) is refused. The clean reads
// before and after prove honest signed pages verify.
func TestAttackAuditForgedSignature(t *testing.T) {
	e := newAuditEnv(t)
	e.link.AuditSign = true
	attackAuditOn(t, e, fleet.BreakSignature, func(p *audit.Page, _ uint64) bool {
		if len(p.Sig) > 0 {
			p.Sig[0] ^= 1
		}
		return false
	})
}

// TestAttackAuditMalformedPage: bytes that are not an audit page.
func TestAttackAuditMalformedPage(t *testing.T) {
	attackAudit(t, fleet.BreakMalformed, func(p *audit.Page, _ uint64) bool {
		if p.Head != nil {
			p.Head = p.Head[:31] // unencodable: tamperSession sends {1: 0}
		}
		return false
	})
}

// TestAuditBacklogStopsReading: while the broker acknowledges nothing,
// at most MaxAuditPending records wait in the database; reading stops
// short of it (the lock's log holds the rest) and resumes where it
// stopped once they were published.
func TestAuditBacklogStopsReading(t *testing.T) {
	e := newAuditEnv(t)
	l := e.addLock(t, 1)
	for i := range 200 {
		if _, err := l.AuditLog.Append(audit.Entry{Event: audit.EventTimeSet, Time: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	s := start(t, e.db, e.link, e.clk, func(o *fleet.Options) {
		o.Audit = fleet.AuditOptions{Store: e.db, Pages: 16}
	})
	session := func(n uint64) {
		en := e.status(t, l, n)
		s.Submit(en)
		waitTerminal(t, e.db, en.ID)
		until(t, "the session's end", func() bool { return metricValue(t, s, "gatewayd_fleet_sessions_active") == 0 })
	}
	session(1)
	c := e.checkPending(t, l)
	if c.Seq == 0 || len(c.Pending) > bonds.MaxAuditPending || len(c.Pending)+audit.MaxPageEntries+1 <= bonds.MaxAuditPending {
		t.Fatalf("after a session without acknowledgements: %d pending, want just short of %d", len(c.Pending), bonds.MaxAuditPending)
	}
	if got := metricValue(t, s, "gatewayd_audit_read_failures_total", "cause", "backlog"); got != 1 {
		t.Errorf("read_failures_total{cause=backlog} = %v, want 1", got)
	}
	session(2)
	if c2 := e.cursor(t, l); c2.Seq != c.Seq {
		t.Errorf("the cursor moved from %d to %d with the backlog full", c.Seq, c2.Seq)
	}
	// The broker acknowledges everything: reading resumes.
	if err := e.db.AckAudit(context.Background(), []bonds.AuditAck{{LockID: l.ID, Seq: c.Seq}}); err != nil {
		t.Fatal(err)
	}
	session(3)
	c3 := e.cursor(t, l)
	if c3.Seq <= 200 || len(c3.Pending) == 0 || c3.Pending[0].Seq != c.Seq {
		t.Errorf("after the backlog drained: cursor %d, first pending %v; want past 200, from %d", c3.Seq, c3.Pending, c.Seq)
	}
}
