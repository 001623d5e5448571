package lock

import (
	"context"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
	"github.com/gatewayd/gatewayd/firmware/lock/flash"
)

func withAudit(t testing.TB) func(*Options) {
	return func(o *Options) {
		log, err := audit.Open(flash.NewMem(), audit.Options{LockID: o.Cert.KID, Now: func() time.Time { return time.Unix(0, 0) }})
		if err != nil {
			t.Fatal(err)
		}
		o.Audit = AuditLog(log)
	}
}

// readAudit pages through the whole log with read-audit.
func readAudit(t *testing.T, c interface {
	ReadAudit(ctx context.Context, from uint32, max uint8) (*command.Result, error)
}, from uint32) audit.Page {
	t.Helper()
	r, err := c.ReadAudit(context.Background(), from, 16)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, r, command.StatusOK)
	p, err := audit.DecodePage(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuditLogOverTheChannel(t *testing.T) {
	e := newEnv(t, withAudit(t))
	c := e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, e.body(command.OpUnlock, command.Args{}))}), command.StatusOK)
	wantStatus(t, do(t, c, command.Request{Op: command.OpLock}), command.StatusForbidden)

	cur := audit.NewCursor(e.lockP.Cert.KID)
	p := readAudit(t, c, 0)
	if _, err := cur.Advance(p); err != nil {
		t.Fatalf("an honest page does not verify: %v", err)
	}
	var sawUnlock, sawRefusal bool
	for _, en := range p.Entries {
		sawUnlock = sawUnlock || (en.Event == audit.EventCommandOK && en.Op == uint8(command.OpUnlock) && len(en.CommandID) == 16)
		sawRefusal = sawRefusal || (en.Event == audit.EventCommandRefused && en.Status == uint16(command.StatusForbidden))
	}
	if !sawUnlock || !sawRefusal {
		t.Fatalf("log lacks the unlock (%v) or the refusal (%v): %+v", sawUnlock, sawRefusal, p.Entries)
	}
}

// TestAttackAuditChainWithOneEntryAltered: whoever carries the page (the
// gateway) changes one entry; the reader's check fails.
func TestAttackAuditChainWithOneEntryAltered(t *testing.T) {
	e := newEnv(t, withAudit(t))
	c := e.mustConnect(e.gateway, gwAddr)
	wantStatus(t, do(t, c, command.Request{Op: command.OpUnlock, Signed: e.sign(e.operator, e.body(command.OpUnlock, command.Args{}))}), command.StatusOK)
	p := readAudit(t, c, 0)
	if len(p.Entries) < 3 {
		t.Fatalf("%d entries", len(p.Entries))
	}
	for i := range p.Entries {
		for _, alter := range []func(*audit.Entry){
			func(en *audit.Entry) { en.Status ^= 1 },
			func(en *audit.Entry) { en.Time++ },
			func(en *audit.Entry) { en.Op ^= 1 },
		} {
			q := p
			q.Entries = append([]audit.Entry(nil), p.Entries...)
			alter(&q.Entries[i])
			cur := audit.NewCursor(e.lockP.Cert.KID)
			if _, err := cur.Advance(q); err == nil {
				t.Fatalf("altered entry %d went unnoticed", i)
			}
		}
	}
}
