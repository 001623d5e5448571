package emulator

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/godbus/dbus/v5"
)

// TestEncodeSignal: the emulator's own encoding of a signal decodes to the
// message godbus would send (Conn.Emit), header fields, signature and
// body alike, and types it does not know are left to godbus.
func TestEncodeSignal(t *testing.T) {
	dev := dbus.ObjectPath("/org/bluez/hci0/dev_C0_00_00_00_00_BB")
	cases := []struct {
		path dbus.ObjectPath
		name string
		args []any
	}{
		{dev, ifaceProps + ".PropertiesChanged", []any{ifaceDevice, map[string]dbus.Variant{"Connected": v(true)}, []string{}}},
		{dev, ifaceProps + ".PropertiesChanged", []any{ifaceDevice, map[string]dbus.Variant{
			"RSSI": v(int16(-61)), "ManufacturerData": v(map[uint16]dbus.Variant{CompanyID: v([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})}),
			"TxPower": v(int16(4)), "Paired": v(false), "Alias": v("lock"), "Adapter": v(dbus.ObjectPath("/org/bluez/hci0")),
			"UUIDs": v([]string{ServiceUUID, InboxUUID}), "Class": v(uint32(7)), "Appearance": v(uint16(0x480)),
		}, []string{"RSSI", "TxPower"}}},
		{dev + "/service000a/char000d", ifaceProps + ".PropertiesChanged", []any{ifaceChar, map[string]dbus.Variant{
			"Value": v([]byte{0x01, 0x02, 0x03}), "Notifying": v(true), "MTU": v(uint16(185)),
			"Includes": v([]dbus.ObjectPath{}), "Nested": v(v(byte(7))), "Big": v(uint64(1) << 40), "Neg": v(int64(-5)), "I": v(int32(-9)),
		}, []string{}}},
		{"/", ifaceOM + ".InterfacesRemoved", []any{dev, []string{ifaceIntro, ifaceProps, ifaceDevice}}},
		{dev, "org.example.Empty.Ping", nil},
	}
	for _, c := range cases {
		b, ok := encodeSignal(nil, 42, c.path, c.name, c.args)
		if !ok {
			t.Fatalf("%s: not encoded", c.name)
		}
		got, err := dbus.DecodeMessage(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: decoding ours: %v", c.name, err)
		}
		if got.Serial() != 42 {
			t.Errorf("%s: serial %d", c.name, got.Serial())
		}
		want := godbusSignal(t, c.path, c.name, c.args)
		if got.Type != want.Type || got.Flags != want.Flags || !reflect.DeepEqual(got.Headers, want.Headers) ||
			!reflect.DeepEqual(got.Body, want.Body) {
			t.Errorf("%s:\n got %v %v\nwant %v %v", c.name, got.Headers, got.Body, want.Headers, want.Body)
		}
		if int(binary.LittleEndian.Uint32(b[4:])) != len(b)-bodyStart(b) {
			t.Errorf("%s: body length", c.name)
		}
	}
	// Left to godbus: a type the encoder does not know, a bad path.
	for _, args := range [][]any{{3.5}, {map[string]dbus.Variant{"X": v(map[string]string{"a": "b"})}}, {struct{ A int32 }{1}}} {
		if _, ok := encodeSignal(nil, 1, dev, "org.example.X.Y", args); ok {
			t.Errorf("%v encoded", args)
		}
	}
	for _, c := range []struct {
		p    dbus.ObjectPath
		name string
		args []any
	}{
		{"bad path", "org.example.X.Y", nil},
		{dev, "org.example.X.1Y", nil},
		{dev, "example.Y", nil},
		{dev, "org..example.Y", nil},
		{dev, "org.example.X.Y", []any{"nul\x00"}},
		{dev, "org.example.X.Y", []any{"\xff"}},
		{dev, "org.example.X.Y", []any{dbus.ObjectPath("/a/")}},
		{dev, "org.example.X.Y", []any{map[string]dbus.Variant{"\xff": v(true)}}},
	} {
		if _, ok := encodeSignal(nil, 1, c.p, c.name, c.args); ok {
			t.Errorf("%s %s %q encoded", c.p, c.name, c.args)
		}
	}
}

// godbusSignal is the message Conn.Emit sends, as decoded off the wire.
func godbusSignal(t *testing.T, p dbus.ObjectPath, name string, args []any) *dbus.Message {
	t.Helper()
	i := bytes.LastIndexByte([]byte(name), '.')
	m := &dbus.Message{Type: dbus.TypeSignal, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldPath: dbus.MakeVariant(p), dbus.FieldInterface: dbus.MakeVariant(name[:i]),
		dbus.FieldMember: dbus.MakeVariant(name[i+1:])}, Body: args}
	if len(args) > 0 {
		m.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(args...))
	}
	var buf bytes.Buffer
	if err := m.EncodeTo(&buf, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	binary.LittleEndian.PutUint32(b[8:], 42) // EncodeTo leaves the serial to the connection
	out, err := dbus.DecodeMessage(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// bodyStart is where a little-endian message's body starts.
func bodyStart(b []byte) int {
	n := 16 + int(binary.LittleEndian.Uint32(b[12:]))
	return (n + 7) &^ 7
}
