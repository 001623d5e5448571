package dfulink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/firmware/dfu/controller"
)

// UUIDs of the Secure DFU service, as BlueZ names them on D-Bus.
const (
	ServiceUUID      = "0000fe59-0000-1000-8000-00805f9b34fb"
	ControlPointUUID = "8ec90001-f315-4f60-9fb8-838830daea50"
	PacketUUID       = "8ec90002-f315-4f60-9fb8-838830daea50"
)

// Options configure Connect.
type Options struct {
	// Path is the bootloader's device object (DevicePath).
	Path dbus.ObjectPath
	// CallTimeout bounds each D-Bus call; 0 is 5 s.
	CallTimeout time.Duration
	// Queue is the notification buffer; 0 is 64 (the controller reads
	// each response before its next request, so a few are plenty).
	Queue int
	// Logger (nil: none).
	Logger *slog.Logger
}

// Link is one connection to a bootloader: a controller.Transport.
type Link struct {
	conn   *dbus.Conn
	dev    *bluez.Device
	packet dbus.BusObject
	opts   Options
	log    *slog.Logger

	notes  chan []byte
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

var _ controller.Transport = (*Link)(nil)

// DevicePath is the object path BlueZ gives the device at addr
// ("AA:BB:CC:DD:EE:FF") under adapter.
func DevicePath(adapter dbus.ObjectPath, addr string) dbus.ObjectPath {
	return adapter + dbus.ObjectPath("/dev_"+strings.ReplaceAll(strings.ToUpper(addr), ":", "_"))
}

// Connect connects to the bootloader at opts.Path through ad, finds the
// DFU service's Control Point and Packet, enables Control Point
// notifications (the CCCD the bootloader needs before any request) and
// reads the ATT MTU. ctx bounds the connection.
func Connect(ctx context.Context, conn *dbus.Conn, ad *bluez.Adapter, opts Options) (*Link, error) {
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 5 * time.Second
	}
	if opts.Queue <= 0 {
		opts.Queue = 64
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dev, err := ad.Connect(ctx, bluez.DeviceOptions{Path: opts.Path, ServiceUUID: ServiceUUID,
		InboxUUID: ControlPointUUID, OutboxUUID: ControlPointUUID, WriteType: bluez.WriteRequest,
		CallTimeout: opts.CallTimeout, Queue: opts.Queue, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("dfulink: connecting to %s: %w", opts.Path, err)
	}
	packet, err := findPacket(ctx, conn, opts)
	if err != nil {
		_ = dev.Close()
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	l := &Link{conn: conn, dev: dev, packet: conn.Object(bluez.BusName, packet), opts: opts,
		log:   log.With("component", "dfulink", "device", string(opts.Path)),
		notes: make(chan []byte, opts.Queue), cancel: cancel}
	l.wg.Go(func() { l.read(rctx) })
	return l, nil
}

// findPacket finds the Packet characteristic of the DFU service under
// the device.
func findPacket(ctx context.Context, conn *dbus.Conn, opts Options) (dbus.ObjectPath, error) {
	cctx, cancel := context.WithTimeout(ctx, opts.CallTimeout)
	defer cancel()
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	if err := conn.Object(bluez.BusName, "/").CallWithContext(cctx,
		"org.freedesktop.DBus.ObjectManager.GetManagedObjects", 0).Store(&objs); err != nil {
		return "", fmt.Errorf("dfulink: GetManagedObjects: %w", bluez.MapError(err))
	}
	prefix := string(opts.Path) + "/"
	for p, ifs := range objs {
		c, ok := ifs[bluez.IfaceGattCharacteristic]
		if !ok || !strings.HasPrefix(string(p), prefix) {
			continue
		}
		if u, _ := c["UUID"].Value().(string); strings.EqualFold(u, PacketUUID) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: on %s", ErrNoPacket, opts.Path)
}

// read moves Control Point notifications to the channel until the link
// drops or Close; then it closes the channel.
func (l *Link) read(ctx context.Context) {
	defer close(l.notes)
	for {
		p, err := l.dev.ReadPacket(ctx)
		if err != nil {
			if ctx.Err() == nil {
				l.log.Debug("notifications ended", "err", err)
			}
			return
		}
		select {
		case l.notes <- p:
		case <-ctx.Done():
			return
		}
	}
}

// ATTMTU implements controller.Transport: the connection's ATT MTU as
// BlueZ reports it.
func (l *Link) ATTMTU() int { return l.dev.MTU() }

// Notifications implements controller.Transport.
func (l *Link) Notifications() <-chan []byte { return l.notes }

// WriteControlPoint implements controller.Transport: a write with
// response, bounded by ctx and CallTimeout.
func (l *Link) WriteControlPoint(ctx context.Context, req []byte) error {
	if err := l.dev.WritePacket(ctx, req); err != nil {
		return fmt.Errorf("dfulink: Control Point: %w", err)
	}
	return nil
}

// WritePacket implements controller.Transport: a write without response
// ("type": "command"), bounded by ctx and CallTimeout.
func (l *Link) WritePacket(ctx context.Context, data []byte) error {
	if len(data) > l.dev.MTU()-3 {
		return fmt.Errorf("%w: %d bytes, ATT MTU %d", ErrTooLong, len(data), l.dev.MTU())
	}
	cctx, cancel := context.WithTimeout(ctx, l.opts.CallTimeout)
	defer cancel()
	opts := map[string]dbus.Variant{"type": dbus.MakeVariant(bluez.WriteCommand)}
	err := l.packet.CallWithContext(cctx, bluez.IfaceGattCharacteristic+".WriteValue", 0, data, opts).Err
	if err != nil {
		return fmt.Errorf("dfulink: Packet WriteValue: %w", bluez.MapError(err))
	}
	return nil
}

// Close disconnects (bounded by CallTimeout) and waits for the reader.
// It is idempotent.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		err := l.dev.Close()
		if err != nil && !errors.Is(err, bluez.ErrNotConnected) {
			l.closeErr = err
		}
		l.cancel()
		l.wg.Wait()
	})
	return l.closeErr
}
