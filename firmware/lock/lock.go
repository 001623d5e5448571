package lock

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
)

// Actuator drives the bolt.
type Actuator interface {
	// Move drives the bolt to target (StateLocked or StateUnlocked). An
	// error means the bolt did not get there: the lock reports jammed.
	Move(target command.LockState) error
}

// Event is one audit event; Kind is one of the audit package's event codes.
type Event struct {
	Kind      audit.Event
	Actor     []byte // kid of the peer or the signer, or a BLE address
	Op        command.Op
	CommandID []byte
	Status    uint16
}

// Auditor keeps the audit log. firmware/lock/audit implements it (see
// AuditLog); nil keeps none.
type Auditor interface {
	Record(at time.Time, e Event) error
	// Page returns the read-audit data for entries from fromSeq on.
	Page(fromSeq uint32, max uint8) (cbor.RawMessage, error)
}

// Options configure a Lock. Cert, Key, Roots, Store and Actuator are
// required; the rest have useful zero values.
type Options struct {
	// Cert is the lock's credential (kind lock) and Key its private key.
	Cert *cred.Cert
	Key  ed25519.PrivateKey
	// Roots are the fleet roots the lock trusts.
	Roots    cred.Roots
	Store    Store
	Actuator Actuator
	Audit    Auditor
	// RTC is the hardware clock. An nRF52832 without a backup battery
	// restarts it at each boot; the lock's clock is RTC + the offset that
	// set-time stored, never below the last saved clock. Nil: time.Now.
	RTC func() time.Time
	// Rand draws passkeys and ephemeral keys; nil: crypto/rand.
	Rand io.Reader
	// Slots is the size of the user table; default DefaultSlots (16),
	// at most command.MaxUsers.
	Slots int
	// Firmware is the version reported in results; default "1.0.0".
	Firmware string
	// Battery reports the charge in percent; nil reports 100.
	Battery func() uint8
	// Lockout is the backoff policy for failed peers.
	Lockout LockoutPolicy
	// Bootloader is the lock's way into its DFU bootloader (enter-dfu);
	// nil: the lock has none, and refuses enter-dfu with internal.
	Bootloader Bootloader
	// DFUBatteryFloor is the lowest charge, in percent, at which the lock
	// accepts enter-dfu (a transfer and activation must not run the
	// battery flat); 0: DefaultDFUBatteryFloor.
	DFUBatteryFloor uint8
	// Logger receives one line per refused handshake or command; nil
	// discards. It never sees keys, passkeys or signatures.
	Logger *slog.Logger
}

// DefaultDFUBatteryFloor is the charge below which enter-dfu is refused
// (not_ready) unless Options.DFUBatteryFloor says otherwise.
const DefaultDFUBatteryFloor = 30

// Bootloader is what the application knows of its bootloader, as the nRF5
// SDK's buttonless DFU service does: it writes the bootloader's settings
// page, then resets. firmware/lock/device implements it with the reference
// bootloader (firmware/dfu/target).
type Bootloader interface {
	// AuthoriseDFU writes initHash to the bootloader's settings page,
	// durably, before the lock answers enter-dfu: the bootloader then
	// executes only the init packet whose SHA-256 it is. An error refuses
	// the command (internal) and nothing is reset.
	AuthoriseDFU(initHash [32]byte) error
	// ResetIntoBootloader resets the lock into its bootloader's DFU mode.
	// Serve calls it once the enter-dfu result was sent.
	ResetIntoBootloader()
}

// Lock is the reference lock. It is safe for concurrent use by several
// connections.
type Lock struct {
	opts   Options
	id     [8]byte
	store  Store
	slots  int
	rnd    io.Reader
	log    *slog.Logger
	lo     *lockout
	verify *cred.Verifier

	mu     sync.Mutex
	st     state
	users  []*user
	bonds  map[string]bool
	window bondWindow
	bolt   command.LockState
	// revoked is the fleet revocation list held (revocations.go); nil:
	// none.
	revoked *cred.Revocations
	// signed is the signed command of the request being handled, once
	// verified: its result is signed (Handle).
	signed *command.Verified
	// resetting is set by an authorised enter-dfu: once its result is
	// sent, the lock resets into its bootloader and serves nothing more.
	resetting, resetTaken bool
}

// New boots a lock from its storage: it loads users, counters, clock and
// bonds, and finishes a command that a power cut interrupted by recording
// it as interrupted (never by executing it).
func New(opts Options) (*Lock, error) {
	if opts.Cert == nil || opts.Cert.Kind != cred.KindLock || len(opts.Key) != ed25519.PrivateKeySize ||
		opts.Store == nil || opts.Actuator == nil || len(opts.Roots) == 0 {
		return nil, errors.New("lock: Options need a lock Cert, its Key, Roots, a Store and an Actuator")
	}
	l := &Lock{opts: opts, store: opts.Store, slots: opts.Slots, rnd: opts.Rand, log: opts.Logger}
	copy(l.id[:], opts.Cert.KID)
	if l.slots <= 0 {
		l.slots = DefaultSlots
	}
	if l.slots > command.MaxUsers {
		return nil, fmt.Errorf("lock: %d slots, at most %d", l.slots, command.MaxUsers)
	}
	if l.rnd == nil {
		l.rnd = rand.Reader
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.opts.Firmware == "" {
		l.opts.Firmware = "1.0.0"
	}
	l.lo = newLockout(opts.Lockout)
	l.verify = &cred.Verifier{Roots: opts.Roots, Now: l.Now,
		Kinds: []cred.Kind{cred.KindGateway, cred.KindOperator, cred.KindUser}, Cache: cred.NewCache(32)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.load(); err != nil {
		return nil, err
	}
	l.bolt = l.st.Bolt
	l.record(Event{Kind: audit.EventBoot})
	if p := l.st.Pending; p != nil {
		// The counter was saved, the effect may not have happened: the
		// command is spent and reported as interrupted.
		l.st.Pending = nil
		l.st.remember(commandRecord{ID: p.ID, Op: p.Op, Status: command.StatusInterrupted})
		if err := l.saveState(); err != nil {
			return nil, err
		}
		l.record(Event{Kind: audit.EventCommandRefused, Op: p.Op, CommandID: p.ID, Status: uint16(command.StatusInterrupted)})
	}
	return l, nil
}

// Resetting reports whether the lock answered an authorised enter-dfu
// and is about to reset into its bootloader (Serve does so after sending
// the result; a BLE stack that calls Handle itself does it then).
func (l *Lock) Resetting() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.resetting
}

// ID returns the lock's 8-byte ID.
func (l *Lock) ID() [8]byte { return l.id }

// Now is the lock's clock: RTC plus the stored offset, never below the last
// saved clock.
func (l *Lock) Now() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nowLocked()
}

func (l *Lock) nowLocked() time.Time {
	rtc := time.Now()
	if l.opts.RTC != nil {
		rtc = l.opts.RTC()
	}
	t := rtc.Unix() + l.st.ClockOffset
	if t < l.st.ClockFloor {
		t = l.st.ClockFloor
	}
	return time.Unix(t, 0).UTC()
}

// Bolt returns the actuator's state as the lock believes it.
func (l *Lock) Bolt() command.LockState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bolt
}

// Bonded reports whether addr holds a bond.
func (l *Lock) Bonded(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bonds[addr]
}

// Pair is called by the BLE stack when addr completes LE Secure
// Connections passkey entry with passkey. It succeeds only inside a bond
// window opened for addr, with that window's passkey; three wrong passkeys
// close the window.
func (l *Lock) Pair(addr string, passkey uint32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.nowLocked()
	if err := l.window.pair(addr, passkey, now); err != nil {
		l.record(Event{Kind: audit.EventPairingFailed, Actor: addrActor(addr)})
		l.lo.fail(addr, now)
		return err
	}
	l.bonds[addr] = true
	if err := l.saveBonds(); err != nil {
		delete(l.bonds, addr)
		return err
	}
	l.record(Event{Kind: audit.EventPairingOK, Actor: addrActor(addr)})
	return nil
}

// BondPasskey returns the one-time passkey of the bond window open for
// addr, and whether one is open. A BLE stack that asks the lock for the
// passkey of a pairing (BlueZ's Agent1.RequestPasskey, the nRF SoftDevice's
// static passkey) gives SMP this value; SMP itself then checks what the
// peer entered. It is a secret: never log it.
func (l *Lock) BondPasskey(addr string) (uint32, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.window.passkeyFor(addr, l.nowLocked())
}

// PairingFailed is called by a BLE stack that checks the passkey itself
// (SMP's confirm values) when pairing with addr failed: it counts like a
// wrong passkey given to Pair, and three failures close the window. It
// returns the error Pair would have returned.
func (l *Lock) PairingFailed(addr string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.nowLocked()
	err := l.window.fail(addr, now)
	l.record(Event{Kind: audit.EventPairingFailed, Actor: addrActor(addr)})
	l.lo.fail(addr, now)
	return err
}

// record appends to the audit log. A full or failing log must not stop
// the lock from working; the failure is logged.
func (l *Lock) record(e Event) {
	if l.opts.Audit == nil {
		return
	}
	if err := l.opts.Audit.Record(l.nowLocked(), e); err != nil {
		l.log.Warn("audit append failed", "err", err)
	}
}

// addrActor is a BLE address "AA:BB:CC:DD:EE:FF" as the 6 bytes an audit
// actor holds (at most audit.MaxActor bytes of anything else).
func addrActor(addr string) []byte {
	if b, err := hex.DecodeString(strings.ReplaceAll(addr, ":", "")); err == nil && len(b) == 6 {
		return b
	}
	if len(addr) > audit.MaxActor {
		addr = addr[:audit.MaxActor]
	}
	return []byte(addr)
}

// AuditLog adapts the audit package's log to the lock's Auditor.
func AuditLog(log *audit.Log) Auditor { return auditLog{log} }

type auditLog struct{ l *audit.Log }

func (a auditLog) Record(at time.Time, e Event) error {
	actor := e.Actor
	if len(actor) > audit.MaxActor {
		actor = actor[:audit.MaxActor]
	}
	_, err := a.l.Append(audit.Entry{Time: uint64(max(at.Unix(), 0)), Event: e.Kind, Actor: actor,
		Op: uint8(e.Op), CommandID: e.CommandID, Status: e.Status})
	return err
}

func (a auditLog) Page(fromSeq uint32, max uint8) (cbor.RawMessage, error) {
	p, err := a.l.Page(uint64(fromSeq), int(max))
	if err != nil {
		return nil, err
	}
	return audit.EncodePage(p)
}

// resultLocked fills the fields every result carries.
func (l *Lock) resultLocked(reqID uint32, s command.Status) *command.Result {
	b := uint8(100)
	if l.opts.Battery != nil {
		b = l.opts.Battery()
	}
	return &command.Result{RequestID: reqID, Status: s, LockState: l.bolt, Battery: b,
		Firmware: l.opts.Firmware, Clock: l.nowLocked()}
}

// Serve runs one BLE connection: it waits for a handshake, serves the
// session's commands until it closes, and waits for the next handshake,
// until ctx ends or the transport fails.
func (l *Lock) Serve(ctx context.Context, t Transport, peer Peer) error {
	for {
		if err := l.serveOne(ctx, t, peer); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, errTransport) || errors.Is(err, ErrReset) {
				return err
			}
		}
	}
}

// Peer is what the BLE stack knows of the connected device.
type Peer struct {
	// Address is the peer's BLE address, "AA:BB:CC:DD:EE:FF".
	Address string
	// Encrypted is set by a BLE stack that has encrypted the link with the
	// long-term key of this lock's bond with Address (LE Secure
	// Connections): the peer proved it holds the bond, which an attacker
	// who only copies the address cannot. A bonded, encrypted peer is not
	// throttled by the global backoff (docs/protocol.md §13.8). False
	// (the default) claims nothing.
	Encrypted bool
}

// reserved reports whether peer keeps its handshakes through the global
// throttle: bonded with this lock, over a link encrypted with that bond.
func (l *Lock) reserved(peer Peer) bool {
	if !peer.Encrypted {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bonds[peer.Address]
}
