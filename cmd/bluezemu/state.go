package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
)

// With -state DIR, bluezemu keeps what real hardware keeps across a
// kill -9 of bluetoothd: each lock's flash (firmware/lock/flash, a file
// per lock: counters, recent command IDs, users, bonds), the adapter's
// bonds (as /var/lib/bluetooth does), and the locks' own record of what
// they did, DIR/ledger.jsonl: one JSON line per bolt move and per signed
// command run or refused, appended with one write(2) each before the lock
// goes on, so a SIGKILL of bluezemu never loses a line the kernel took.
// The fault campaign (cmd/faults) reads it after the run.

// LedgerEntry is one line of ledger.jsonl.
type LedgerEntry struct {
	Time time.Time `json:"t"`
	Lock string    `json:"lock"` // 16 hex digits
	// Kind is "move" (the bolt moved to Target), "ok" (a command ran),
	// "refused" (a signed command was refused; Status says why) or "boot".
	Kind      string `json:"kind"`
	Target    string `json:"target,omitempty"`
	Op        string `json:"op,omitempty"`
	CommandID string `json:"command_id,omitempty"` // hex
	Status    string `json:"status,omitempty"`
}

// ledger appends LedgerEntry lines to a file.
type ledger struct {
	mu sync.Mutex
	f  *os.File
}

func openLedger(path string) (*ledger, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &ledger{f: f}, nil
}

func (l *ledger) add(e LedgerEntry) error {
	e.Time = time.Now().UTC()
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err = l.f.Write(append(b, '\n'))
	return err
}

func (l *ledger) Close() error { return l.f.Close() }

// ledgerAudit is a lock.Auditor that writes the lock's command events to
// the ledger. It keeps no readable audit log: Page fails, as a lock
// without an audit log refuses read-audit.
type ledgerAudit struct {
	led  *ledger
	lock string
}

// errNoAudit is returned by ledgerAudit.Page: bluezemu keeps no readable audit log.
var errNoAudit = errors.New("bluezemu: no audit log")

func (a ledgerAudit) Record(_ time.Time, e lock.Event) error {
	switch e.Kind {
	case audit.EventCommandOK:
		return a.led.add(LedgerEntry{Lock: a.lock, Kind: "ok", Op: e.Op.String(), CommandID: hex.EncodeToString(e.CommandID)})
	case audit.EventCommandRefused:
		if len(e.CommandID) == 0 {
			return nil
		}
		return a.led.add(LedgerEntry{Lock: a.lock, Kind: "refused", Op: e.Op.String(),
			CommandID: hex.EncodeToString(e.CommandID), Status: command.Status(e.Status).String()})
	case audit.EventBoot:
		return a.led.add(LedgerEntry{Lock: a.lock, Kind: "boot"})
	}
	return nil
}

func (ledgerAudit) Page(uint32, uint8) (cbor.RawMessage, error) { return nil, errNoAudit }

// bondsFile keeps the adapter's bonds in DIR/adapter-bonds, one address a
// line, as bluetoothd keeps them under /var/lib/bluetooth.
type bondsFile struct{ path string }

func (b bondsFile) load() ([]string, error) {
	data, err := os.ReadFile(b.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(data)), nil
}

// save writes the bonds durably: a temporary file, fsync, rename.
func (b bondsFile) save(addrs []string) error {
	tmp := b.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strings.Join(addrs, "\n") + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, b.path)
}

// keepBonds saves the emulator's bonds whenever they change, until ctx ends.
func keepBonds(ctx context.Context, emu *emulator.Emulator, b bondsFile, last []string, log *slog.Logger) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := emu.Bonds()
		if slices.Equal(now, last) {
			continue
		}
		if err := b.save(now); err != nil {
			log.Error("saving the adapter's bonds", "err", err)
			continue
		}
		last = now
	}
}

// flashPath is the flash image of the lock with ID id in dir.
func flashPath(dir string, id uint64) string {
	return filepath.Join(dir, fmt.Sprintf("lock-%016x.flash", id))
}

// serveControl answers the control socket: one command a line, one answer
// a line ("ok" or "error: ..."). Commands, addr being a lock's BLE address:
//
//	abort ADDR N      the next N Device1.Connect calls fail (le-connection-abort-by-local)
//	drop ADDR N       the connection drops after the Nth GATT write from now
//	leave ADDR        the lock goes out of radio range
//	enter ADDR        it comes back
//	clear ADDR        no injected faults
//	ping
func serveControl(ctx context.Context, ln net.Listener, emu *emulator.Emulator, log *slog.Logger) {
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() { <-ctx.Done(); _ = ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { _ = c.Close() })
			defer stop()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				err := control(emu, strings.Fields(sc.Text()))
				ans := "ok\n"
				if err != nil {
					ans = "error: " + err.Error() + "\n"
				}
				log.Info("control", "command", sc.Text(), "err", err)
				if _, err := c.Write([]byte(ans)); err != nil {
					return
				}
			}
		}()
	}
}

func control(emu *emulator.Emulator, f []string) error {
	if len(f) == 1 && f[0] == "ping" {
		return nil
	}
	if len(f) < 2 {
		return fmt.Errorf("want COMMAND ADDR [N], got %q", strings.Join(f, " "))
	}
	n := 0
	if len(f) == 3 {
		var err error
		if n, err = strconv.Atoi(f[2]); err != nil {
			return fmt.Errorf("count %q: %w", f[2], err)
		}
	}
	switch f[0] {
	case "abort":
		return emu.InjectFaults(f[1], emulator.Faults{ConnectAbort: n})
	case "drop":
		return emu.InjectFaults(f[1], emulator.Faults{DropAfterWrites: n})
	case "clear":
		return emu.InjectFaults(f[1], emulator.Faults{})
	case "leave":
		return emu.LeaveRange(f[1])
	case "enter":
		return emu.EnterRange(f[1])
	}
	return fmt.Errorf("unknown command %q", f[0])
}
