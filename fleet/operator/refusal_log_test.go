package operator

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/internal/ratelog"
)

// syncBuf is a bytes.Buffer safe for the intake's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAttackRefusalsLoggedPerSignerAndReason: 30 forgeries naming an
// operator and 2 unlocks signed with a stolen gateway key, through the
// daemon's rate-limited log: the gateway-key refusals get a line of
// their own, naming the gateway's credential (issue 11, item 3: the 32
// refusals used to leave one line), and a forgery with a credential of an
// unknown root is logged as unverified, not under the name it claims.
func TestAttackRefusalsLoggedPerSignerAndReason(t *testing.T) {
	e := newEnv(t)
	var buf syncBuf
	log := slog.New(ratelog.New(slog.NewTextHandler(&buf, nil), ratelog.Options{}))
	db := openDB(t, "", e.clock.Now)
	in := e.intake(t, db, func(o *IntakeOptions) { o.Logger = log; o.Concurrency = 1 })
	forged := e.sign(t, e.operator, e.body(command.OpUnlock, 1))
	forged[len(forged)-1] ^= 1
	for i := range 32 {
		p := forged
		if i == 17 || i == 29 {
			p = e.sign(t, e.gateway, e.body(command.OpUnlock, uint64(i)))
		}
		in.Enqueue(e.msg(fmt.Sprint(i), p))
	}
	rogue := channeltest.NewFleet(t, "rogue-fleet").Operator(t, "op-olga", cred.RoleAdmin)
	in.Enqueue(e.msg("rogue", e.sign(t, rogue, e.body(command.OpUnlock, 40))))
	waitFor(t, "33 acks", func() bool { return len(e.events.all()) == 33 })
	var refusals []string
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.Contains(l, `msg="command refused"`) {
			refusals = append(refusals, l)
		}
	}
	if len(refusals) != 3 {
		t.Fatalf("%d refusal lines, want 3 (one per reason and signer):\n%s", len(refusals), strings.Join(refusals, "\n"))
	}
	if !strings.Contains(refusals[0], "reason=bad_signature signer=op-olga reason_total=1") ||
		!strings.Contains(refusals[1], "reason=signer_rejected signer=gw-dock-7 reason_total=1") ||
		!strings.Contains(refusals[2], "reason=signer_rejected signer=unverified reason_total=3") {
		t.Fatalf("refusal lines:\n%s", strings.Join(refusals, "\n"))
	}
	if got := in.byReason[ReasonBadSignature].Load(); got != 30 {
		t.Fatalf("rejected{bad_signature} = %d", got)
	}
}
