package peripheral_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez"
	"github.com/gatewayd/gatewayd/bluez/internal/dbustest"
	"github.com/gatewayd/gatewayd/bluez/peripheral"
	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/fragment"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/locktest"
	"github.com/gatewayd/gatewayd/firmware/lockclient"
)

const gwDev = dbus.ObjectPath("/org/bluez/hci1/dev_00_AA_01_00_00_00")
const gwAddr = "00:AA:01:00:00:00"

// fakeBluetoothd plays bluetoothd's side of the peripheral's calls: it
// owns org.bluez, reads the application and the advertisement back from
// their owner as bluetoothd does, and records the calls.
type fakeBluetoothd struct {
	conn *dbus.Conn
	mu   sync.Mutex
	app  map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	adv  []map[string]dbus.Variant
	regs []string // method names, in order
	ag   struct {
		owner string
		path  dbus.ObjectPath
		cap   string
		def   bool
	}
}

func (f *fakeBluetoothd) record(m string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.regs = append(f.regs, m)
}

type fakeAgentMgr struct{ f *fakeBluetoothd }

func (h fakeAgentMgr) RegisterAgent(m dbus.Message, p dbus.ObjectPath, capability string) *dbus.Error {
	h.f.record("RegisterAgent")
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	h.f.ag.owner, h.f.ag.path, h.f.ag.cap = m.Headers[dbus.FieldSender].Value().(string), p, capability
	return nil
}

func (h fakeAgentMgr) RequestDefaultAgent(p dbus.ObjectPath) *dbus.Error {
	h.f.record("RequestDefaultAgent")
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	h.f.ag.def = true
	return nil
}

func (h fakeAgentMgr) UnregisterAgent(dbus.ObjectPath) *dbus.Error {
	h.f.record("UnregisterAgent")
	return nil
}

type fakeAdapter struct{ f *fakeBluetoothd }

func (h fakeAdapter) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	return dbus.MakeVariant(true), nil
}

func (h fakeAdapter) RegisterApplication(m dbus.Message, app dbus.ObjectPath, _ map[string]dbus.Variant) *dbus.Error {
	h.f.record("RegisterApplication")
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	sender := m.Headers[dbus.FieldSender].Value().(string)
	if err := h.f.conn.Object(sender, app).Call("org.freedesktop.DBus.ObjectManager.GetManagedObjects", 0).Store(&objs); err != nil {
		return dbus.MakeFailedError(err)
	}
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	h.f.app = objs
	return nil
}

func (h fakeAdapter) UnregisterApplication(dbus.ObjectPath) *dbus.Error {
	h.f.record("UnregisterApplication")
	return nil
}

func (h fakeAdapter) RegisterAdvertisement(m dbus.Message, adv dbus.ObjectPath, _ map[string]dbus.Variant) *dbus.Error {
	var props map[string]dbus.Variant
	sender := m.Headers[dbus.FieldSender].Value().(string)
	if err := h.f.conn.Object(sender, adv).Call("org.freedesktop.DBus.Properties.GetAll", 0, "org.bluez.LEAdvertisement1").Store(&props); err != nil {
		return dbus.MakeFailedError(err)
	}
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	h.f.adv = append(h.f.adv, props)
	return nil
}

func (h fakeAdapter) UnregisterAdvertisement(dbus.ObjectPath) *dbus.Error { return nil }

func startFake(t *testing.T, bus *dbustest.Bus) *fakeBluetoothd {
	t.Helper()
	f := &fakeBluetoothd{conn: bus.Conn(t)}
	for _, e := range []struct {
		h     any
		path  dbus.ObjectPath
		iface string
	}{
		{fakeAgentMgr{f}, "/org/bluez", "org.bluez.AgentManager1"},
		{fakeAdapter{f}, "/org/bluez/hci1", "org.freedesktop.DBus.Properties"},
		{fakeAdapter{f}, "/org/bluez/hci1", "org.bluez.GattManager1"},
		{fakeAdapter{f}, "/org/bluez/hci1", "org.bluez.LEAdvertisingManager1"},
	} {
		if err := f.conn.Export(e.h, e.path, e.iface); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := f.conn.RequestName("org.bluez", dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName: %v %v", r, err)
	}
	return f
}

// gattLink is the gateway's side of the GATT connection as bluetoothd
// would carry it: WriteValue calls on Inbox, PropertiesChanged of Outbox.
type gattLink struct {
	f     *fakeBluetoothd
	owner string
	inbox dbus.ObjectPath
	notes chan []byte
	mtu   int
}

func (l *gattLink) MTU() int { return l.mtu }
func (l *gattLink) WritePacket(ctx context.Context, p []byte) error {
	return l.f.conn.Object(l.owner, l.inbox).CallWithContext(ctx, "org.bluez.GattCharacteristic1.WriteValue", 0, p,
		map[string]dbus.Variant{"device": dbus.MakeVariant(gwDev), "mtu": dbus.MakeVariant(uint16(l.mtu)),
			"type": dbus.MakeVariant("command")}).Err
}
func (l *gattLink) ReadPacket(ctx context.Context) ([]byte, error) {
	select {
	case p := <-l.notes:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func charPath(t *testing.T, f *fakeBluetoothd, uuid string) (dbus.ObjectPath, map[string]dbus.Variant) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for p, ifs := range f.app {
		if c, ok := ifs["org.bluez.GattCharacteristic1"]; ok && c["UUID"].Value() == uuid {
			return p, c
		}
	}
	t.Fatalf("no characteristic %s in %v", uuid, f.app)
	return "", nil
}

// TestPeripheral: registration (application with fixed handles, default
// agent KeyboardOnly, advertisement registered again and again), a
// handshake and commands over WriteValue and Outbox notifications, the
// agent's one-time passkey, the bond recorded when bluetoothd reports
// Paired, a pairing counted as failed when the peer asks again, and Close.
func TestPeripheral(t *testing.T) {
	bus := dbustest.Start(t)
	f := startFake(t, bus)
	fleet := channeltest.NewFleet(t, "acme")
	lp := fleet.Lock(t, 0x4c4b0000000000c1)
	lk, err := lock.New(lock.Options{Cert: lp.Cert, Key: lp.Key, Roots: fleet.Roots, Store: locktest.NewStore(),
		Actuator: &locktest.Actuator{}, RTC: func() time.Time { return fleet.Now },
		Lockout: lock.LockoutPolicy{Free: 100}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lockConn := bus.Conn(t)
	p, err := peripheral.Start(ctx, lockConn, peripheral.Options{Adapter: "hci1", Lock: lk,
		Readvertise: 10 * time.Millisecond, Advertiser: peripheral.AdvertiseDBus})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// Registration.
	f.mu.Lock()
	if f.ag.cap != "KeyboardOnly" || !f.ag.def {
		t.Errorf("agent registered with %q, default %v", f.ag.cap, f.ag.def)
	}
	f.mu.Unlock()
	inbox, ic := charPath(t, f, bluez.InboxUUID)
	_, oc := charPath(t, f, bluez.OutboxUUID)
	_, nc := charPath(t, f, peripheral.InfoUUID)
	if ic["Handle"].Value() != peripheral.ServiceHandle+2 || oc["Handle"].Value() != peripheral.ServiceHandle+4 ||
		nc["Handle"].Value() != peripheral.ServiceHandle+7 {
		t.Errorf("handles: inbox %v outbox %v info %v", ic["Handle"], oc["Handle"], nc["Handle"])
	}
	if fl, _ := oc["Flags"].Value().([]string); !slices.Equal(fl, []string{"notify"}) {
		t.Errorf("Outbox flags %v", fl)
	}
	for deadline := time.Now().Add(5 * time.Second); p.Stats().Adverts < 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("advertisement registered %d times", p.Stats().Adverts)
		}
	}
	f.mu.Lock()
	adv := f.adv[len(f.adv)-1]
	f.mu.Unlock()
	md, _ := adv["ManufacturerData"].Value().(map[uint16]dbus.Variant)
	if got, want := md[bluez.TestCompanyID].Value(), peripheral.Advertisement(lk, 100); !slices.Equal(got.([]byte), want) || len(want) != 11 {
		t.Errorf("advertised %x, want %x", got, want)
	}
	if u, _ := adv["ServiceUUIDs"].Value().([]string); !slices.Equal(u, []string{bluez.LockServiceUUID}) {
		t.Errorf("advertised UUIDs %v", u)
	}

	// A connection: writes in, notifications out.
	owner := lockConn.Names()[0]
	outbox, _ := charPath(t, f, bluez.OutboxUUID)
	if err := f.conn.AddMatchSignal(dbus.WithMatchObjectPath(outbox), dbus.WithMatchInterface("org.freedesktop.DBus.Properties")); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan *dbus.Signal, 256)
	f.conn.Signal(sigs)
	link := &gattLink{f: f, owner: owner, inbox: inbox, notes: make(chan []byte, 256), mtu: 185}
	go func() {
		for s := range sigs {
			if s.Path == outbox && len(s.Body) >= 2 {
				if v, ok := s.Body[1].(map[string]dbus.Variant)["Value"].Value().([]byte); ok {
					link.notes <- v
				}
			}
		}
	}()
	gw := fleet.Gateway(t, "gw")
	ch, err := channel.Dial(ctx, channel.NewFragmentTransport(link, fragment.Options{}), fleet.GatewayConfig(gw))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	cl := lockclient.New(ch)
	if r, err := cl.Status(ctx); err != nil || r.Status != command.StatusOK {
		t.Fatalf("status: %v %v", r, err)
	}
	if st := p.Stats(); st.Connections != 1 || st.Writes == 0 || st.Notifications == 0 {
		t.Errorf("stats %+v", st)
	}

	// Pairing: the agent gives the window's passkey once asked.
	agent := f.conn.Object(owner, f.ag.path)
	requestPasskey := func() (uint32, error) {
		var pk uint32
		err := agent.CallWithContext(ctx, "org.bluez.Agent1.RequestPasskey", 0, gwDev).Store(&pk)
		return pk, err
	}
	if _, err := requestPasskey(); err == nil {
		t.Fatal("passkey given without a bond window")
	}
	r, err := cl.AllowBond(ctx, 30*time.Second)
	if err != nil || r.Status != command.StatusOK {
		t.Fatalf("allow-bond: %v %v", r, err)
	}
	w, _ := r.BondWindow()
	pk, err := requestPasskey()
	if err != nil || pk != w.Passkey {
		t.Fatalf("RequestPasskey = %d, %v; want the window's passkey", pk, err)
	}
	// Asked again: the first attempt failed (SMP said nothing to the
	// responder) and counts against the window.
	if pk2, err := requestPasskey(); err != nil || pk2 != pk {
		t.Fatalf("second RequestPasskey = %d, %v", pk2, err)
	}
	if n := p.Stats().PairingsFailed; n != 1 {
		t.Fatalf("%d failed pairings counted, want 1", n)
	}
	// bluetoothd reports the bond: the lock records it.
	if err := f.conn.Emit(gwDev, "org.freedesktop.DBus.Properties.PropertiesChanged", bluez.IfaceDevice,
		map[string]dbus.Variant{"Paired": dbus.MakeVariant(true)}, []string{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !lk.Bonded(gwAddr); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the lock did not record the bond")
		}
	}
	// The peer disconnects: the lock's connection ends.
	if err := f.conn.Emit(gwDev, "org.freedesktop.DBus.Properties.PropertiesChanged", bluez.IfaceDevice,
		map[string]dbus.Variant{"Connected": dbus.MakeVariant(false)}, []string{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); p.Stats().Disconnections != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the connection did not end")
		}
	}
	// The next write is a new connection, where a request before a
	// handshake goes unanswered.
	cctx, ccancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer ccancel()
	if _, err := cl.Status(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("status after the disconnect: %v", err)
	}
	// Writes from a path that is no device are refused.
	err = f.conn.Object(owner, inbox).CallWithContext(ctx, "org.bluez.GattCharacteristic1.WriteValue", 0, []byte{1},
		map[string]dbus.Variant{"device": dbus.MakeVariant(dbus.ObjectPath("/org/bluez/hci0/dev_00_AA_01_00_00_00"))}).Err
	if err == nil {
		t.Fatal("write from another adapter's device accepted")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range []string{"UnregisterAgent", "UnregisterApplication"} {
		if !slices.Contains(f.regs, m) {
			t.Errorf("Close did not call %s: %v", m, f.regs)
		}
	}
}

// TestStartValidates: required options.
func TestStartValidates(t *testing.T) {
	if _, err := peripheral.Start(context.Background(), nil, peripheral.Options{}); !errors.Is(err, peripheral.ErrInvalidOptions) {
		t.Fatalf("Start without options: %v", err)
	}
}
