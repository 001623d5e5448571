package bluez

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
)

// GATT UUIDs of the lock service (docs/protocol.md §1).
const (
	InboxUUID  = "97510002-ce6d-40c7-b7c2-022a651afaf6"
	OutboxUUID = "97510003-ce6d-40c7-b7c2-022a651afaf6"
)

// D-Bus interfaces of the GATT client.
const (
	IfaceGattService        = "org.bluez.GattService1"
	IfaceGattCharacteristic = "org.bluez.GattCharacteristic1"
)

// Write types for WriteValue.
const (
	WriteCommand = "command" // Write Without Response
	WriteRequest = "request" // Write (with response)
)

// DeviceOptions configures Connect.
type DeviceOptions struct {
	Path        dbus.ObjectPath // the device, e.g. LockInfo.Path
	ServiceUUID string          // "" is LockServiceUUID
	InboxUUID   string          // "" is InboxUUID
	OutboxUUID  string          // "" is OutboxUUID
	WriteType   string          // WriteCommand (default) or WriteRequest
	CallTimeout time.Duration   // deadline of each D-Bus call; 0 is 5 s
	Queue       int             // notification buffer; 0 is DefaultQueue
	Logger      *slog.Logger    // nil discards
	// Dispatcher of the connection (Adapter.Dispatcher); required.
	Dispatcher *Dispatcher

	// Set by Adapter.Connect: subscribe under the adapter's rule, and
	// the characteristics found on an earlier connection.
	under *Subscription
	cache *charPaths
}

// charPaths are a device's lock characteristics. BlueZ 5.66 keeps a
// device's GATT objects across connections (Cache=always), so the Adapter
// remembers them until the device or any object below it is removed.
type charPaths struct {
	inbox, outbox dbus.ObjectPath
}

// Device is one connected lock: a firmware/channel.Link over the lock
// service's Inbox (WriteValue) and Outbox (notifications). It starts no
// goroutine: ReadPacket reads its subscription's queue in the caller's
// goroutine. A notification dropped because the queue was full is lost
// (counted by Dropped); the fragment layer above detects the gap.
type Device struct {
	conn       *dbus.Conn
	opts       DeviceOptions
	log        *slog.Logger
	sub        *Subscription
	dev        dbus.BusObject
	inbox      dbus.BusObject
	outbox     dbus.BusObject
	inboxPath  dbus.ObjectPath
	outboxPath dbus.ObjectPath
	mtu        int
	gone       <-chan struct{} // closed when this bluetoothd leaves the bus
	// since is the receive sequence of Connect's reply: signals received
	// before it were emitted before this connection existed (a previous
	// connection's late Connected=false or notification) and are ignored.
	since dbus.Sequence

	readMu sync.Mutex
	lost   error // set once the link is lost

	closeOnce sync.Once
	closeErr  error
}

// Connect connects to the device (Device1.Connect), waits until its
// services are resolved, finds the lock service's characteristics once,
// reads the ATT MTU and enables notifications on Outbox. ctx bounds the
// whole connection; each call also has CallTimeout.
func Connect(ctx context.Context, conn *dbus.Conn, opts DeviceOptions) (_ *Device, err error) {
	if opts.Dispatcher == nil {
		return nil, fmt.Errorf("%w: DeviceOptions.Dispatcher is nil", ErrInvalidArguments)
	}
	if opts.ServiceUUID == "" {
		opts.ServiceUUID = LockServiceUUID
	}
	if opts.InboxUUID == "" {
		opts.InboxUUID = InboxUUID
	}
	if opts.OutboxUUID == "" {
		opts.OutboxUUID = OutboxUUID
	}
	if opts.WriteType == "" {
		opts.WriteType = WriteCommand
	}
	if opts.WriteType != WriteCommand && opts.WriteType != WriteRequest {
		return nil, fmt.Errorf("%w: write type %q", ErrInvalidArguments, opts.WriteType)
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 5 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Device{
		conn: conn,
		opts: opts,
		log:  log.With("component", "bluez.device", "device", string(opts.Path)),
		dev:  conn.Object(BusName, opts.Path),
	}
	// A bluetoothd that leaves the bus takes this connection with it;
	// nothing else would tell a reader waiting for a notification.
	if d.gone, err = opts.Dispatcher.BluetoothdGone(ctx); err != nil {
		return nil, err
	}
	// One subscription for the device and everything below it: its own
	// Connected/ServicesResolved and the characteristics' Value. Through
	// an Adapter it needs no rule of its own (no bus round trip): the
	// adapter's PropertiesChanged rule covers /org/bluez.
	m := Match{Sender: BusName, PathNamespace: opts.Path, Interface: ifaceProperties, Member: "PropertiesChanged"}
	if opts.under != nil {
		d.sub, err = opts.Dispatcher.SubscribeUnder(opts.under, m, opts.Queue)
	} else {
		d.sub, err = opts.Dispatcher.Subscribe(ctx, m, opts.Queue)
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = d.sub.Close()
		}
	}()
	cctx, cancel := context.WithTimeout(ctx, opts.CallTimeout)
	call := d.dev.CallWithContext(cctx, IfaceDevice+".Connect", 0)
	cancel()
	if err := MapError(call.Err); err != nil && !errors.Is(err, ErrAlreadyConnected) {
		return nil, fmt.Errorf("bluez: Connect %s: %w", opts.Path, err)
	}
	d.since = call.ResponseSequence
	if err := d.waitResolved(ctx); err != nil {
		d.disconnect()
		return nil, err
	}
	if err := d.useCached(ctx); err != nil {
		if err := d.findCharacteristics(ctx); err != nil {
			d.disconnect()
			return nil, err
		}
	}
	if err := d.call(ctx, d.outbox, IfaceGattCharacteristic+".StartNotify"); err != nil {
		d.disconnect()
		return nil, fmt.Errorf("bluez: StartNotify: %w", err)
	}
	d.log.Debug("connected", "mtu", d.mtu)
	return d, nil
}

func (d *Device) call(ctx context.Context, obj dbus.BusObject, method string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, d.opts.CallTimeout)
	defer cancel()
	return MapError(obj.CallWithContext(ctx, method, 0, args...).Err)
}

func (d *Device) getBool(ctx context.Context, name string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.CallTimeout)
	defer cancel()
	var v dbus.Variant
	if err := d.dev.CallWithContext(ctx, ifaceProperties+".Get", 0, IfaceDevice, name).Store(&v); err != nil {
		return false, MapError(err)
	}
	b, _ := v.Value().(bool)
	return b, nil
}

// waitResolved returns once ServicesResolved is true. Signals that arrive
// meanwhile are consumed; none can be notifications yet (StartNotify has
// not been called).
func (d *Device) waitResolved(ctx context.Context) error {
	ok, err := d.getBool(ctx, "ServicesResolved")
	if err != nil {
		return fmt.Errorf("bluez: reading ServicesResolved: %w", err)
	}
	for !ok {
		select {
		case <-ctx.Done():
			return fmt.Errorf("bluez: waiting for ServicesResolved: %w", ctx.Err())
		case <-d.gone:
			return fmt.Errorf("bluez: waiting for ServicesResolved: %w", errBluetoothdGone)
		case s, open := <-d.sub.C():
			if !open {
				return ErrClosed
			}
			changed, down, isDev := d.deviceChange(s)
			if !isDev {
				continue
			}
			if down {
				return fmt.Errorf("bluez: resolving services of %s: %w", d.opts.Path, errDisconnected)
			}
			ok, _ = changed["ServicesResolved"].Value().(bool)
		}
	}
	return nil
}

// deviceChange reads a signal of the subscription as a change of this
// device's Device1 properties (isDev), and whether it says the link went
// down (Connected false). A signal received before this connection's
// Connect reply is none: a previous connection's late news.
func (d *Device) deviceChange(s *dbus.Signal) (changed map[string]dbus.Variant, down, isDev bool) {
	if s.Sequence < d.since {
		return nil, false, false
	}
	changed, isDev = devicePropsChanged(s, d.opts.Path)
	if c, has := changed["Connected"].Value().(bool); isDev && has && !c {
		down = true
	}
	return changed, down, isDev
}

func devicePropsChanged(s *dbus.Signal, path dbus.ObjectPath) (map[string]dbus.Variant, bool) {
	if s.Path != path || len(s.Body) < 2 {
		return nil, false
	}
	if iface, _ := s.Body[0].(string); iface != IfaceDevice {
		return nil, false
	}
	changed, ok := s.Body[1].(map[string]dbus.Variant)
	return changed, ok
}

// useCached takes the characteristics found on an earlier connection and
// reads the MTU of this one (one small Get instead of the whole tree).
// Any error sends the caller back to findCharacteristics.
func (d *Device) useCached(ctx context.Context) error {
	c := d.opts.cache
	if c == nil || c.inbox == "" {
		return ErrDoesNotExist
	}
	ctx, cancel := context.WithTimeout(ctx, d.opts.CallTimeout)
	defer cancel()
	var v dbus.Variant
	if err := d.conn.Object(BusName, c.inbox).CallWithContext(ctx, ifaceProperties+".Get", 0, IfaceGattCharacteristic, "MTU").Store(&v); err != nil {
		return MapError(err)
	}
	m, ok := v.Value().(uint16)
	if !ok {
		return ErrDoesNotExist
	}
	d.mtu = max(int(m), 23)
	d.inboxPath, d.outboxPath = c.inbox, c.outbox
	d.inbox = d.conn.Object(BusName, c.inbox)
	d.outbox = d.conn.Object(BusName, c.outbox)
	return nil
}

// findCharacteristics reads the tree once and caches the service's
// characteristics and the MTU.
func (d *Device) findCharacteristics(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, d.opts.CallTimeout)
	defer cancel()
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	if err := d.conn.Object(BusName, "/").CallWithContext(cctx, ifaceObjectManage+".GetManagedObjects", 0).Store(&objs); err != nil {
		return fmt.Errorf("bluez: GetManagedObjects: %w", MapError(err))
	}
	prefix := string(d.opts.Path) + "/"
	var service dbus.ObjectPath
	for p, ifs := range objs {
		s, ok := ifs[IfaceGattService]
		if !ok || !strings.HasPrefix(string(p), prefix) {
			continue
		}
		if u, _ := s["UUID"].Value().(string); strings.EqualFold(u, d.opts.ServiceUUID) {
			service = p
			break
		}
	}
	if service == "" {
		return fmt.Errorf("%w: service %s not on %s", ErrDoesNotExist, d.opts.ServiceUUID, d.opts.Path)
	}
	var inbox dbus.ObjectPath
	for p, ifs := range objs {
		c, ok := ifs[IfaceGattCharacteristic]
		if !ok {
			continue
		}
		if sp, _ := c["Service"].Value().(dbus.ObjectPath); sp != service {
			continue
		}
		u, _ := c["UUID"].Value().(string)
		// Not a switch: Inbox and Outbox may be one characteristic (a
		// DFU Control Point: write, and notify).
		if strings.EqualFold(u, d.opts.InboxUUID) {
			inbox = p
			if m, ok := c["MTU"].Value().(uint16); ok {
				d.mtu = int(m)
			}
		}
		if strings.EqualFold(u, d.opts.OutboxUUID) {
			d.outboxPath = p
		}
	}
	if inbox == "" || d.outboxPath == "" {
		return fmt.Errorf("%w: Inbox or Outbox characteristic missing on %s", ErrDoesNotExist, service)
	}
	if d.mtu < 23 {
		d.mtu = 23 // the ATT minimum when BlueZ does not report one
	}
	d.inboxPath = inbox
	d.inbox = d.conn.Object(BusName, inbox)
	d.outbox = d.conn.Object(BusName, d.outboxPath)
	return nil
}

// MTU is the ATT MTU read at connection; packets carry at most MTU-3
// bytes.
func (d *Device) MTU() int { return d.mtu }

// WritePacket writes p to Inbox with the configured write type and ctx's
// deadline (bounded by CallTimeout).
func (d *Device) WritePacket(ctx context.Context, p []byte) error {
	if len(p) > d.mtu-3 {
		return fmt.Errorf("%w: packet of %d bytes exceeds MTU-3 (%d)", ErrInvalidArguments, len(p), d.mtu-3)
	}
	opts := map[string]dbus.Variant{"type": dbus.MakeVariant(d.opts.WriteType)}
	if err := d.call(ctx, d.inbox, IfaceGattCharacteristic+".WriteValue", p, opts); err != nil {
		if errors.Is(err, ErrDoesNotExist) {
			// Inbox vanished: the device was removed (BlueZ 5.66 keeps
			// the GATT objects of a device across connections and
			// answers Failed "Not connected", already ErrNotConnected,
			// on a dropped link). A new connection may work.
			err = errDisconnected
		}
		return fmt.Errorf("bluez: WriteValue: %w", err)
	}
	return nil
}

// ReadPacket returns the next notification from Outbox. It returns an
// error wrapping ErrNotConnected once the device disconnects, ErrBusGone
// (retryable) once bluetoothd left the bus, and ErrClosed after Close.
func (d *Device) ReadPacket(ctx context.Context) ([]byte, error) {
	d.readMu.Lock()
	defer d.readMu.Unlock()
	if d.lost != nil {
		return nil, d.lost
	}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-d.gone:
			d.lost = fmt.Errorf("bluez: reading a notification of %s: %w", d.opts.Path, errBluetoothdGone)
			return nil, d.lost
		case s, open := <-d.sub.C():
			if !open {
				d.lost = ErrClosed
				return nil, d.lost
			}
			if s.Sequence < d.since {
				continue // from before this connection
			}
			if _, down, isDev := d.deviceChange(s); isDev {
				if down {
					d.lost = fmt.Errorf("bluez: reading a notification of %s: %w", d.opts.Path, errDisconnected)
					return nil, d.lost
				}
				continue
			}
			if s.Path != d.outboxPath || len(s.Body) < 2 {
				continue
			}
			if iface, _ := s.Body[0].(string); iface != IfaceGattCharacteristic {
				continue
			}
			changed, _ := s.Body[1].(map[string]dbus.Variant)
			if v, ok := changed["Value"].Value().([]byte); ok {
				return v, nil
			}
		}
	}
}

// Dropped counts notifications (and other signals) lost because the
// queue was full.
func (d *Device) Dropped() uint64 { return d.sub.Dropped() }

func (d *Device) disconnect() error {
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.CallTimeout)
	defer cancel()
	return d.call(ctx, d.dev, IfaceDevice+".Disconnect")
}

// waitDisconnected waits (bounded by ctx) for Connected to turn false:
// bluetoothd answers Disconnect before the link is torn down, and a new
// connection to the same device in between has crashed Debian's 6.1
// kernel (hci_chan_del) in the real-BlueZ tier.
func (d *Device) waitDisconnected(ctx context.Context) {
	if !d.readMu.TryLock() {
		return // a reader is in ReadPacket: it consumes the signals
	}
	defer d.readMu.Unlock()
	if d.lost != nil && errors.Is(d.lost, ErrNotConnected) {
		return // ReadPacket saw it
	}
	for {
		select {
		case <-ctx.Done():
			d.log.Debug("Connected stayed true after Disconnect", "err", ctx.Err())
			return
		case <-d.gone:
			return
		case s, open := <-d.sub.C():
			if !open {
				return
			}
			if _, down, _ := d.deviceChange(s); down {
				return
			}
		}
	}
}

// Close stops notifications, disconnects and waits for Connected to turn
// false (all bounded by CallTimeout), and removes the subscription. It is idempotent; ReadPacket then returns
// ErrClosed.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), d.opts.CallTimeout)
		defer cancel()
		if err := d.call(ctx, d.outbox, IfaceGattCharacteristic+".StopNotify"); err != nil {
			d.log.Debug("StopNotify", "err", err)
		}
		// A device already disconnected, or gone with a bluetoothd that
		// left the bus, is closed already.
		err := d.disconnect()
		if err != nil && !errors.Is(err, ErrNotConnected) &&
			!errors.Is(err, ErrDoesNotExist) && !errors.Is(err, ErrBusGone) {
			d.closeErr = fmt.Errorf("bluez: Disconnect: %w", err)
		}
		if err == nil {
			d.waitDisconnected(ctx)
		}
		if err := d.sub.Close(); err != nil && d.closeErr == nil {
			d.closeErr = err
		}
	})
	return d.closeErr
}
