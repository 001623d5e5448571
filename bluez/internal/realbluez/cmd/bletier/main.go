// Command bletier runs the real-BlueZ tier's scenarios inside the qemu
// guest (docs/real-bluez.md): the lock (firmware/lock) as a
// bluez/peripheral on one adapter and the gateway (package bluez and
// firmware/lockclient) on the other, both through the guest's one
// bluetoothd. Each step is one JSON line (realbluez.Result) in -results;
// logs go to stderr. It exits 1 when a step failed.
//
// It is built statically (CGO_ENABLED=0) and copied into the image by
// scripts/qemu/build-image.sh --bin. It may import the standard library,
// godbus, package bluez and its sub-packages, and firmware/.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/internal/realbluez"
	"github.com/gatewayd/gatewayd/bluez/peripheral"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, os.Args[1:], os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bletier:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) (ok bool, err error) {
	fs := flag.NewFlagSet("bletier", flag.ContinueOnError)
	fs.SetOutput(stderr)
	results := fs.String("results", "results.jsonl", "results file (JSON lines, appended)")
	mode := fs.String("mode", "bluez", "mode label in the results")
	scenarios := fs.String("scenarios", "", "comma-separated scenarios (default all)")
	gwAdapter := fs.String("gateway-adapter", "hci0", "the gateway's adapter")
	lockAdapter := fs.String("lock-adapter", "hci1", "the lock's adapter")
	restartCmd := fs.String("restart-cmd", "restart-bluetoothd", "command that restarts bluetoothd")
	timeout := fs.Duration("timeout", 5*time.Minute, "whole run")
	verbose := fs.Bool("v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		return false, err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	defer func() {
		if r := recover(); r != nil {
			e, isErr := r.(error)
			if !isErr {
				panic(r)
			}
			err = fmt.Errorf("fixture: %w", e)
		}
	}()
	out, err := os.OpenFile(*results, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	defer out.Close()
	var outMu sync.Mutex
	enc := json.NewEncoder(out)
	emit := func(r realbluez.Result) {
		outMu.Lock()
		defer outMu.Unlock()
		_ = enc.Encode(r)
		log.Info("result", "scenario", r.Scenario, "step", r.Step, "ok", r.OK, "kind", r.Kind, "err", r.Error, "facts", r.Facts)
	}

	// Two connections, as two processes would have: agent requests of a
	// pairing's initiator go to the agent of the connection that called
	// Pair, the lock's side to the default agent.
	// The gateway's as gatewayd's: advertisements decoded by its own
	// reader (bluez.DialSystemBus), everything else by godbus.
	gwConn, err := bluez.DialSystemBus()
	if err != nil {
		return false, fmt.Errorf("gateway bus: %w", err)
	}
	defer gwConn.Close()
	lockConn, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("lock bus: %w", err)
	}
	defer lockConn.Close()
	if err := waitAdapters(ctx, gwConn, *gwAdapter, *lockAdapter); err != nil {
		return false, err
	}

	fx := realbluez.NewFixture(fatal{})
	// The gateway's agent is not the default one: one bluetoothd serves
	// both roles here, and the lock's agent must be the default (the
	// gateway's own pairings reach its agent anyway). With a dispatcher
	// it registers again after the restart scenario.
	disp := bluez.NewDispatcher(gwConn, 5*time.Second)
	defer disp.Close()
	agent, err := bluez.NewAgent(ctx, gwConn, bluez.AgentOptions{Logger: log, NotDefault: true, Dispatcher: disp})
	if err != nil {
		return false, err
	}
	defer agent.Close()
	per, err := peripheral.Start(ctx, lockConn, peripheral.Options{Adapter: *lockAdapter, Lock: fx.Lock, Logger: log})
	if err != nil {
		return false, err
	}
	defer func() {
		st := per.Stats()
		log.Info("peripheral stats", "stats", fmt.Sprintf("%+v", st))
		_ = per.Close()
	}()
	env := realbluez.Env{Mode: *mode, Conn: gwConn, Adapter: *gwAdapter, Lock: fx.Lock, Bolt: fx.Bolt, Fleet: fx.Fleet,
		Out:            emit,
		LockAgentCalls: func() uint64 { return per.Stats().AgentRequests },
		Restart: func(ctx context.Context) error {
			f := strings.Fields(*restartCmd)
			c := exec.CommandContext(ctx, f[0], f[1:]...)
			c.Stdout, c.Stderr = stderr, stderr
			return c.Run()
		},
	}
	var names []string
	if *scenarios != "" {
		names = strings.Split(*scenarios, ",")
	}
	return realbluez.RunAll(ctx, env, agent, names), nil
}

// waitAdapters waits until bluetoothd lists both adapters, powered.
func waitAdapters(ctx context.Context, conn *dbus.Conn, names ...string) error {
	for {
		var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := conn.Object(bluez.BusName, "/").CallWithContext(cctx, "org.freedesktop.DBus.ObjectManager.GetManagedObjects", 0).Store(&objs)
		cancel()
		if err == nil {
			found := 0
			for _, n := range names {
				// Powered too: bluetoothd powers its adapters on at start
				// (six of them since the guest has six controllers), and
				// the peripheral's Powered set meanwhile answers Busy.
				if a, ok := objs[dbus.ObjectPath("/org/bluez/"+n)][bluez.IfaceAdapter]; ok {
					if on, _ := a["Powered"].Value().(bool); on {
						found++
					}
				}
			}
			if found == len(names) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("adapters %v not up", names), err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type fatal struct{}

func (fatal) Helper() {}
func (fatal) Fatalf(format string, a ...any) {
	panic(fmt.Errorf(format, a...))
}
