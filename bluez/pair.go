package bluez

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
)

// DefaultPairTimeout bounds Pair when ctx has no deadline.
const DefaultPairTimeout = 30 * time.Second

// cancelPairingTimeout bounds the CancelPairing call Pair makes after its
// deadline expired.
const cancelPairingTimeout = 5 * time.Second

// Pair bonds with device by LE Secure Connections passkey entry: it
// registers passkey with agent for exactly device (Agent.Expect), then
// calls Device1.Pair with ctx's deadline (DefaultPairTimeout if ctx has
// none); bluetoothd asks the agent for the passkey. The device must be
// connected. When ctx ends first, Pair calls Device1.CancelPairing with a
// short deadline of its own and returns ctx's error (a deadline is
// Retryable). BlueZ's answers are mapped with MapError: a wrong passkey is
// ErrAuthentication, an existing bond ErrAlreadyExists. The passkey is
// forgotten when Pair returns, used or not.
func Pair(ctx context.Context, conn *dbus.Conn, agent *Agent, device dbus.ObjectPath, passkey uint32) error {
	if conn == nil || agent == nil {
		return fmt.Errorf("%w: nil connection or agent", ErrInvalidArguments)
	}
	if !device.IsValid() {
		return fmt.Errorf("%w: device path %q", ErrInvalidArguments, device)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultPairTimeout)
		defer cancel()
	}
	release := agent.Expect(device, passkey)
	defer release()
	obj := conn.Object(BusName, device)
	err := obj.CallWithContext(ctx, IfaceDevice+".Pair", 0).Err
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelPairingTimeout)
		defer cancel()
		if err := MapError(obj.CallWithContext(cctx, IfaceDevice+".CancelPairing", 0).Err); err != nil && !errors.Is(err, ErrDoesNotExist) {
			agent.log.Debug("CancelPairing failed", "device", string(device), "err", err)
		}
		return fmt.Errorf("bluez: Pair %s: %w", device, cerr)
	}
	return fmt.Errorf("bluez: Pair %s: %w", device, MapError(err))
}

// RemoveBond removes device and its bond from the adapter
// (Adapter1.RemoveDevice), with ctx's deadline (5 s if ctx has none).
func RemoveBond(ctx context.Context, conn *dbus.Conn, adapter, device dbus.ObjectPath) error {
	if conn == nil {
		return fmt.Errorf("%w: nil connection", ErrInvalidArguments)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	if err := conn.Object(BusName, adapter).CallWithContext(ctx, IfaceAdapter+".RemoveDevice", 0, device).Err; err != nil {
		return fmt.Errorf("bluez: RemoveDevice %s: %w", device, MapError(err))
	}
	return nil
}

// PairedDevices lists the BLE addresses of the devices under this adapter
// that bluetoothd holds a bond with (Device1.Paired), from one
// GetManagedObjects with CallTimeout. With RemoveBond it satisfies the
// bond reconciler's interface (bonds.Paired).
func (a *Adapter) PairedDevices(ctx context.Context) ([]string, error) {
	objs, err := a.managedObjects(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range sortedPaths(objs) {
		props, ok := objs[p][IfaceDevice]
		if !ok || !a.ours(p) {
			continue
		}
		if paired, _ := props["Paired"].Value().(bool); !paired {
			continue
		}
		if addr, _ := props["Address"].Value().(string); addr != "" {
			out = append(out, addr)
		}
	}
	return out, nil
}

// RemoveBond removes the device with BLE address addr, and its bond, from
// this adapter (Adapter1.RemoveDevice), with CallTimeout. A device
// bluetoothd does not know is not an error: there is no bond to remove.
func (a *Adapter) RemoveBond(ctx context.Context, addr string) error {
	p := a.path + dbus.ObjectPath("/dev_"+strings.ReplaceAll(strings.ToUpper(addr), ":", "_"))
	ctx, cancel := context.WithTimeout(ctx, a.opts.CallTimeout)
	defer cancel()
	if err := RemoveBond(ctx, a.conn, a.path, p); err != nil && !errors.Is(err, ErrDoesNotExist) {
		return err
	}
	return nil
}
