package bluez

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/gatewayd/gatewayd/bluez/emulator"
	"github.com/gatewayd/gatewayd/bluez/internal/dbustest"
)

const testAdapter = "/org/bluez/hci0"

// pcMessage encodes a PropertiesChanged signal as godbus (and so the
// emulator) does.
func pcMessage(t testing.TB, order binary.ByteOrder, path dbus.ObjectPath, iface string, changed map[string]dbus.Variant, invalidated []string) []byte {
	t.Helper()
	m := &dbus.Message{Type: dbus.TypeSignal, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldPath:      dbus.MakeVariant(path),
		dbus.FieldInterface: dbus.MakeVariant(ifaceProperties),
		dbus.FieldMember:    dbus.MakeVariant("PropertiesChanged"),
		dbus.FieldSender:    dbus.MakeVariant(":1.7"),
	}, Body: []any{iface, changed, invalidated}}
	m.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(m.Body...))
	var buf bytes.Buffer
	if err := m.EncodeTo(&buf, order); err != nil {
		t.Fatal(err)
	}
	// A serial, as the bus's sender sets it.
	b := buf.Bytes()
	order.PutUint32(b[8:12], 42)
	return b
}

func md(entries map[uint16][]byte) dbus.Variant {
	m := map[uint16]dbus.Variant{}
	for k, v := range entries {
		m[k] = dbus.MakeVariant(v)
	}
	return dbus.MakeVariant(m)
}

// godbusAdvert is what godbus decodes from msg, as an advert.
func godbusAdvert(t testing.TB, msg []byte) (advert, bool) {
	m, err := dbus.DecodeMessage(bytes.NewReader(msg))
	if err != nil {
		return advert{}, false
	}
	var ad advert
	p, _ := m.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
	ad.path = string(p)
	changed, _ := m.Body[1].(map[string]dbus.Variant)
	if v, ok := changed["RSSI"]; ok {
		ad.rssi, ad.hasRSSI = v.Value().(int16)
	}
	if v, ok := changed["ManufacturerData"]; ok {
		ad.hasMD = true
		for k, e := range v.Value().(map[uint16]dbus.Variant) {
			ad.md = append(ad.md, mdEntry{k, e.Value().([]byte)})
		}
	}
	return ad, true
}

func sameAdvert(x, y advert) bool {
	if x.path != y.path || x.hasRSSI != y.hasRSSI || x.rssi != y.rssi || x.hasMD != y.hasMD || len(x.md) != len(y.md) {
		return false
	}
	for _, e := range x.md {
		found := false
		for _, f := range y.md {
			found = found || (e.company == f.company && bytes.Equal(e.data, f.data))
		}
		if !found {
			return false
		}
	}
	return true
}

var payload = []byte{1, 0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 7, 1, 99}

// TestDecodeAdvertMatchesGodbus: on messages godbus encodes, in both byte
// orders, the hand-written decoder reads exactly what godbus's decoder
// reads, and frameLen frames them to the byte.
func TestDecodeAdvertMatchesGodbus(t *testing.T) {
	dev := dbus.ObjectPath(testAdapter + "/dev_C0_00_00_00_00_01")
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		for name, changed := range map[string]map[string]dbus.Variant{
			"rssi":      {"RSSI": dbus.MakeVariant(int16(-61))},
			"md":        {"ManufacturerData": md(map[uint16][]byte{0xFFFF: payload})},
			"both":      {"RSSI": dbus.MakeVariant(int16(-128 + 1)), "ManufacturerData": md(map[uint16][]byte{0xFFFF: payload})},
			"companies": {"ManufacturerData": md(map[uint16][]byte{0x004C: {1, 2, 3}, 0xFFFF: payload, 0: {}})},
			"empty md":  {"ManufacturerData": md(map[uint16][]byte{})},
		} {
			msg := pcMessage(t, order, dev, IfaceDevice, changed, []string{})
			if n, ok := frameLen(msg); !ok || n != len(msg) {
				t.Fatalf("%s %v: frameLen %d, %v; want %d", name, order, n, ok, len(msg))
			}
			got, ok := decodeAdvert(msg, testAdapter)
			want, _ := godbusAdvert(t, msg)
			if !ok || !sameAdvert(got, want) {
				t.Fatalf("%s %v: decoded %+v, %v; godbus %+v", name, order, got, ok, want)
			}
		}
	}
}

// TestDecodeAdvertLeavesOthersToGodbus: whatever is not an
// advertisement-only Device1 change of a device under the adapter is
// refused, so godbus decodes it as before.
func TestDecodeAdvertLeavesOthersToGodbus(t *testing.T) {
	dev := dbus.ObjectPath(testAdapter + "/dev_C0_00_00_00_00_01")
	rssi := map[string]dbus.Variant{"RSSI": dbus.MakeVariant(int16(-61))}
	for name, msg := range map[string][]byte{
		"connected":     pcMessage(t, binary.LittleEndian, dev, IfaceDevice, map[string]dbus.Variant{"Connected": dbus.MakeVariant(true)}, []string{}),
		"rssi+uuids":    pcMessage(t, binary.LittleEndian, dev, IfaceDevice, map[string]dbus.Variant{"RSSI": dbus.MakeVariant(int16(-61)), "UUIDs": dbus.MakeVariant([]string{"x"})}, []string{}),
		"service data":  pcMessage(t, binary.LittleEndian, dev, IfaceDevice, map[string]dbus.Variant{"ServiceData": dbus.MakeVariant(map[string]dbus.Variant{"x": dbus.MakeVariant([]byte{1})})}, []string{}),
		"invalidated":   pcMessage(t, binary.LittleEndian, dev, IfaceDevice, rssi, []string{"TxPower"}),
		"no change":     pcMessage(t, binary.LittleEndian, dev, IfaceDevice, map[string]dbus.Variant{}, []string{}),
		"rssi mistyped": pcMessage(t, binary.LittleEndian, dev, IfaceDevice, map[string]dbus.Variant{"RSSI": dbus.MakeVariant(int32(-61))}, []string{}),
		"md mistyped":   pcMessage(t, binary.LittleEndian, dev, IfaceDevice, map[string]dbus.Variant{"ManufacturerData": dbus.MakeVariant(map[uint16]dbus.Variant{0xFFFF: dbus.MakeVariant("oops")})}, []string{}),
		"adapter iface": pcMessage(t, binary.LittleEndian, testAdapter, IfaceAdapter, map[string]dbus.Variant{"Powered": dbus.MakeVariant(true)}, []string{}),
		"gatt value":    pcMessage(t, binary.LittleEndian, dev+"/service000a/char000b", "org.bluez.GattCharacteristic1", map[string]dbus.Variant{"Value": dbus.MakeVariant([]byte{1})}, []string{}),
		"gatt path":     pcMessage(t, binary.LittleEndian, dev+"/service000a", IfaceDevice, rssi, []string{}),
		"other adapter": pcMessage(t, binary.LittleEndian, "/org/bluez/hci1/dev_C0_00_00_00_00_01", IfaceDevice, rssi, []string{}),
		"adapter path":  pcMessage(t, binary.LittleEndian, testAdapter, IfaceDevice, rssi, []string{}),
		"prefix only":   pcMessage(t, binary.LittleEndian, testAdapter+"0/dev_C0", IfaceDevice, rssi, []string{}),
	} {
		if ad, ok := decodeAdvert(msg, testAdapter); ok {
			t.Errorf("%s: decoded %+v, want it left to godbus", name, ad)
		}
	}
}

// TestTapStream: through the tap, the authentication lines and every
// message it does not take reach godbus byte for byte, in order, and the
// advertisements it takes reach the sink; without a sink it takes
// nothing.
func TestTapStream(t *testing.T) {
	dev := dbus.ObjectPath(testAdapter + "/dev_C0_00_00_00_00_01")
	auth := []byte("REJECTED EXTERNAL\r\nOK 0123456789abcdef\r\n")
	ad1 := pcMessage(t, binary.LittleEndian, dev, IfaceDevice, map[string]dbus.Variant{"RSSI": dbus.MakeVariant(int16(-50))}, []string{})
	other := pcMessage(t, binary.LittleEndian, dev, IfaceDevice, map[string]dbus.Variant{"Connected": dbus.MakeVariant(true)}, []string{})
	ad2 := pcMessage(t, binary.BigEndian, dev, IfaceDevice, map[string]dbus.Variant{"ManufacturerData": md(map[uint16][]byte{0xFFFF: payload})}, []string{})
	big := pcMessage(t, binary.LittleEndian, dev, IfaceDevice, map[string]dbus.Variant{"ManufacturerData": md(map[uint16][]byte{0xFFFF: make([]byte, 2*maxTapMessage)})}, []string{})
	stream := bytes.Join([][]byte{auth, ad1, other, ad2, big}, nil)

	read := func(sink *sliceSink) []byte {
		tp := &tap{br: bufio.NewReaderSize(bytes.NewReader(stream), 64<<10)}
		if sink != nil && !tp.attach(testAdapter, sink) {
			t.Fatal("attach refused")
		}
		// godbus reads through a 4 KiB bufio.Reader during
		// authentication and in small pieces afterwards: read oddly.
		var out []byte
		buf := make([]byte, 7)
		for {
			n, err := tp.Read(buf)
			out = append(out, buf[:n]...)
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := read(nil); !bytes.Equal(got, stream) {
		t.Fatalf("without a sink the stream changed (%d bytes, want %d)", len(got), len(stream))
	}
	sink := &sliceSink{}
	want := bytes.Join([][]byte{auth, other, big}, nil)
	if got := read(sink); !bytes.Equal(got, want) {
		t.Fatalf("with a sink godbus got %d bytes, want %d", len(got), len(want))
	}
	if len(sink.ads) != 2 {
		t.Fatalf("%d advertisements taken, want 2", len(sink.ads))
	}
	if a := sink.ads[0]; !a.hasRSSI || a.rssi != -50 || a.hasMD {
		t.Fatalf("first %+v", a)
	}
	if a := sink.ads[1]; a.hasRSSI || !a.hasMD || !reflect.DeepEqual(a.md, []mdEntry{{0xFFFF, payload}}) {
		t.Fatalf("second %+v", a)
	}
}

// sliceSink collects what a tap hands over.
type sliceSink struct{ ads []advert }

func (s *sliceSink) takeAdvert(a advert) { s.ads = append(s.ads, a) }

// TestTapOrder: advertisements back to back in the socket's buffer all
// reach the sink, in order.
func TestTapOrder(t *testing.T) {
	const n = 35
	parts := [][]byte{[]byte("OK 0123456789abcdef\r\n")}
	for i := range n {
		dev := dbus.ObjectPath(fmt.Sprintf("%s/dev_C0_00_00_00_00_%02X", testAdapter, i))
		parts = append(parts, pcMessage(t, binary.LittleEndian, dev, IfaceDevice, map[string]dbus.Variant{"RSSI": dbus.MakeVariant(int16(-i))}, []string{}))
	}
	tp := &tap{br: bufio.NewReaderSize(bytes.NewReader(bytes.Join(parts, nil)), 64<<10)}
	sink := &sliceSink{}
	if !tp.attach(testAdapter, sink) {
		t.Fatal("attach refused")
	}
	if out, err := io.ReadAll(tp); err != nil || string(out) != "OK 0123456789abcdef\r\n" {
		t.Fatalf("godbus got %q, %v", out, err)
	}
	got := sink.ads
	if len(got) != n || tp.taken.Load() != n {
		t.Fatalf("%d advertisements handed over (taken %d), want %d", len(got), tp.taken.Load(), n)
	}
	for i, a := range got {
		if a.rssi != int16(-i) {
			t.Fatalf("advertisement %d has RSSI %d: out of order", i, a.rssi)
		}
	}
}

// FuzzDecodeAdvert: hostile bytes never panic the decoder or the framer,
// and whatever the decoder accepts godbus decodes to the same values.
func FuzzDecodeAdvert(f *testing.F) {
	dev := dbus.ObjectPath(testAdapter + "/dev_C0_00_00_00_00_01")
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		f.Add(pcMessage(f, order, dev, IfaceDevice, map[string]dbus.Variant{"RSSI": dbus.MakeVariant(int16(-61)),
			"ManufacturerData": md(map[uint16][]byte{0xFFFF: payload, 1: {2}})}, []string{}))
		f.Add(pcMessage(f, order, dev, IfaceDevice, map[string]dbus.Variant{"Connected": dbus.MakeVariant(true)}, []string{"RSSI"}))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if n, ok := frameLen(msg); ok && n < 16 {
			t.Fatalf("frameLen %d", n)
		}
		got, ok := decodeAdvert(msg, testAdapter)
		if !ok {
			return
		}
		want, gok := godbusAdvert(t, msg)
		if !gok || !sameAdvert(got, want) {
			t.Fatalf("decoded %+v; godbus %+v, %v", got, want, gok)
		}
		if n, ok := frameLen(msg); !ok || n != len(msg) {
			t.Fatalf("accepted a message frameLen sizes %d, %v (len %d)", n, ok, len(msg))
		}
	})
}

// TestDialBusCyclesLeakNothing: opening and closing Adapters on one
// DialBus connection, then dialling and closing connections, leaves the
// goroutine count, the connection's match rules and the tap registry
// where they were; each Adapter gets the tap in turn.
func TestDialBusCyclesLeakNothing(t *testing.T) {
	bus := dbustest.Start(t)
	emu, err := emulator.Start(context.Background(), emulator.Options{Addr: bus.Addr, RadioInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	via := bus.Conn(t)
	conn, err := DialBus(bus.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tp := tapOf(conn)
	if tp == nil {
		t.Fatal("DialBus's connection has no tap")
	}
	runtime.GC()
	goroutines, rules := runtime.NumGoroutine(), matchRules(t, bus, via, conn)
	for range 20 {
		ad, err := Open(context.Background(), conn, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if ad.tap != tp {
			t.Fatal("the Adapter did not attach to the tap")
		}
		if err := ad.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := settleGoroutines(t, goroutines); n > goroutines {
		t.Fatalf("%d goroutines after 20 adapters, was %d", n, goroutines)
	}
	if n := matchRules(t, bus, via, conn); n != rules {
		t.Fatalf("%d match rules after 20 adapters, was %d", n, rules)
	}
	for range 20 {
		c, err := DialBus(bus.Addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		if tapOf(c) != nil {
			t.Fatal("a closed connection's tap is still registered")
		}
	}
	if n := settleGoroutines(t, goroutines); n > goroutines {
		t.Fatalf("%d goroutines after 20 connections, was %d", n, goroutines)
	}
}

// TestAttackMalformedAdvertisements: advertisements doctored on the bus
// (lengths running past their container or the message, padding not zero,
// strings without their NUL, a bad object path, a header that frames
// nothing) are never taken by the decoder, never panic it, and reach
// godbus unchanged, which refuses them (or, lenient about padding, a
// string's NUL and the serial, decodes them) as it always did.
func TestAttackMalformedAdvertisements(t *testing.T) {
	dev := dbus.ObjectPath(testAdapter + "/dev_C0_00_00_00_00_01")
	good := pcMessage(t, binary.LittleEndian, dev, IfaceDevice, map[string]dbus.Variant{
		"ManufacturerData": md(map[uint16][]byte{0xFFFF: payload})}, []string{})
	if _, ok := decodeAdvert(good, testAdapter); !ok {
		t.Fatal("the genuine advertisement is refused")
	}
	n, _ := frameLen(good)
	bodyStart := n - int(binary.LittleEndian.Uint32(good[4:8]))
	find := func(b []byte, s string) int {
		i := bytes.Index(b, []byte(s))
		if i < 0 {
			t.Fatalf("%q not in the message", s)
		}
		return i
	}
	mutate := map[string]func(b []byte){
		"dict length past the body": func(b []byte) {
			binary.LittleEndian.PutUint32(b[bodyStart+(4+len(IfaceDevice)+1+3)&^3:], 0xFFFFFF00)
		},
		"payload length past the body": func(b []byte) {
			binary.LittleEndian.PutUint32(b[find(b, string(payload))-4:], uint32(len(payload)+200))
		},
		"payload length huge": func(b []byte) {
			binary.LittleEndian.PutUint32(b[find(b, string(payload))-4:], 0xFFFFFFFF)
		},
		"interface string without NUL": func(b []byte) { b[bodyStart+4+len(IfaceDevice)] = 'x' },
		"key length past the body": func(b []byte) {
			binary.LittleEndian.PutUint32(b[find(b, "ManufacturerData")-4:], 0x7FFFFFFF)
		},
		"non-zero padding": func(b []byte) { b[find(b, "ManufacturerData")-5] = 1 },
		"bad object path":  func(b []byte) { b[find(b, "/dev_C0")+1] = '/' },
		"no serial":        func(b []byte) { binary.LittleEndian.PutUint32(b[8:12], 0) },
		"header fields past the message": func(b []byte) {
			binary.LittleEndian.PutUint32(b[12:16], binary.LittleEndian.Uint32(b[12:16])+8)
		},
	}
	for name, f := range mutate {
		b := bytes.Clone(good)
		f(b)
		if bytes.Equal(b, good) {
			t.Fatalf("%s: nothing changed", name)
		}
		if ad, ok := decodeAdvert(b, testAdapter); ok {
			t.Errorf("%s: taken as %+v", name, ad)
		}
		// godbus is lenient about these three; the decoder is not, and
		// leaves them to godbus, as before.
		lenient := name == "no serial" || name == "interface string without NUL" || name == "non-zero padding"
		if _, err := dbus.DecodeMessage(bytes.NewReader(b)); (err == nil) != lenient {
			t.Errorf("%s: godbus's verdict changed: %v", name, err)
		}
		// Through the tap: given to godbus byte for byte.
		tp := &tap{br: bufio.NewReader(bytes.NewReader(append([]byte("OK 1\r\n"), b...))), binary: false}
		sink := &sliceSink{}
		tp.attach(testAdapter, sink)
		out, _ := io.ReadAll(tp)
		if !bytes.Equal(out[len("OK 1\r\n"):], b) || len(sink.ads) != 0 {
			t.Errorf("%s: the tap changed the stream or took it", name)
		}
	}
	// A header that frames nothing (wrong endianness mark, a length past
	// 128 MiB): the tap stops framing and passes everything on.
	for name, f := range map[string]func(b []byte){
		"endianness": func(b []byte) { b[0] = 'x' },
		"128 MiB":    func(b []byte) { binary.LittleEndian.PutUint32(b[4:8], 1<<27) },
	} {
		b := bytes.Clone(good)
		f(b)
		stream := append(append([]byte("OK 1\r\n"), b...), good...)
		tp := &tap{br: bufio.NewReader(bytes.NewReader(stream))}
		sink := &sliceSink{}
		tp.attach(testAdapter, sink)
		out, _ := io.ReadAll(tp)
		if !bytes.Equal(out, stream) || len(sink.ads) != 0 {
			t.Errorf("%s: the tap changed the stream or took from it", name)
		}
	}
}

// TestValidObjectPath: the decoder's path check agrees with godbus's.
func TestValidObjectPath(t *testing.T) {
	for _, p := range []string{"", "/", "//", "/a", "/a/", "/a//b", "a/b", "/org/bluez/hci0/dev_C0_00_00_00_00_01",
		"/org/bluez/hci0/dev-C0", "/ä", "/a b", "/_/9/Z", "/org/bluez/hci0/dev_C0_00_00_00_00_01/"} {
		if got, want := validObjectPath(p), dbus.ObjectPath(p).IsValid(); got != want {
			t.Errorf("validObjectPath(%q) = %v, godbus says %v", p, got, want)
		}
	}
}
