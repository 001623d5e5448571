package realbluez_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bluez/internal/dbustest"
	"github.com/gatewayd/gatewayd/bluez/internal/realbluez"
)

// runEmulator runs every scenario against the BlueZ emulator on a
// private bus, with the addresses btvirt gives the guest's controllers.
func runEmulator(t *testing.T) []realbluez.Result {
	t.Helper()
	bus := dbustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts := emulator.Options{Addr: bus.Addr, Adapter: "hci0", AdapterAddress: realbluez.GatewayAddress,
		Seed: 1, RadioInterval: 50 * time.Millisecond}
	emu, err := emulator.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		_ = emu.Close()
	}()
	fx := realbluez.NewFixture(t)
	if err := emu.AddLock(fx.Lock, realbluez.LockAddress, emulator.LockOptions{PublicAddress: true,
		// The tier's lock is a BlueZ peripheral: its bluetoothd offers
		// BlueZ's default ExchangeMTU, as the gateway's does.
		MTU: 517}); err != nil {
		t.Fatal(err)
	}
	conn := bus.Conn(t)
	// As in the guest (cmd/bletier): not the default agent, and with a
	// dispatcher so that it registers again after the restart scenario.
	disp := bluez.NewDispatcher(conn, 5*time.Second)
	defer disp.Close()
	agent, err := bluez.NewAgent(ctx, conn, bluez.AgentOptions{NotDefault: true, Dispatcher: disp})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	var results []realbluez.Result
	env := realbluez.Env{Mode: "emulator", Conn: conn, Adapter: "hci0", Lock: fx.Lock, Bolt: fx.Bolt, Fleet: fx.Fleet,
		Out: func(r realbluez.Result) {
			mu.Lock()
			defer mu.Unlock()
			results = append(results, r)
		},
		Restart: func(ctx context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			e2, err := emu.Restart(ctx)
			if err != nil {
				return err
			}
			emu = e2
			return nil
		},
	}
	realbluez.RunAll(ctx, env, agent, nil)
	mu.Lock()
	defer mu.Unlock()
	return append([]realbluez.Result(nil), results...)
}
