package emulator

import (
	"encoding/binary"
	"net"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/godbus/dbus/v5"
)

// Signals on the wire.
//
// A connect-write-notify-disconnect cycle makes the emulator send seven
// signals (Connected, ServicesResolved and Notifying, each on and off,
// and the notification), most of them from a method call's goroutine
// before its reply, as BlueZ does. Through godbus (Conn.Emit) each costs
// two reflective encodings of the body (one only to count file
// descriptors) and, on godbus's fresh per-call goroutine, the stack growth
// their recursion forces: most of what the emulator spends on a cycle
// beyond the round trips. So the emulator encodes its signals itself, in
// one flat pass, and writes them on the connection's socket: the same
// messages (header fields, signature and body as Conn.Emit would send
// them, in the same order relative to everything else on the
// connection), only cheaper to produce. A body with a type the encoder
// does not know falls back to godbus's encoder.
//
// The socket (busSock) is the godbus connection's own (dbus.ConnectUnix)
// and the two share a serial generator, so the signals written here are
// numbered as godbus numbers the rest; every message is one Write on the
// socket, so none interleave.

// busSock is the emulator's end of the bus socket, which its godbus
// connection reads and writes too (dbus.ConnectUnix).
type busSock struct {
	c   *net.UnixConn
	seq serials // the connection's serial generator
}

// serials numbers the connection's messages (dbus.WithSerialGenerator):
// never 0, which D-Bus forbids.
type serials struct{ n atomic.Uint32 }

func (s *serials) GetSerial() uint32 {
	for {
		if n := s.n.Add(1); n != 0 {
			return n
		}
	}
}

func (s *serials) RetireSerial(uint32) {}

// write writes one whole encoded message. godbus also writes each of its
// messages in one Write on the same net.UnixConn, and a Write holds the
// socket until all of it is written: messages never interleave.
func (s *busSock) write(msg []byte) error {
	_, err := s.c.Write(msg)
	return err
}

// dialBus connects to the bus at addr. For a unix socket address (what
// dbus-daemon listens on) the emulator keeps the socket (sock), for its
// signals; for any other, sock is nil and signals go through godbus.
func dialBus(addr string) (conn *dbus.Conn, sock *busSock, err error) {
	path, ok := unixSocketPath(addr)
	if !ok {
		conn, err = dbus.Connect(addr)
		return conn, nil, err
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	sock = &busSock{c: c}
	// ConnectUnix closes c when it fails.
	if conn, err = dbus.ConnectUnix(c, dbus.WithSerialGenerator(&sock.seq)); err != nil {
		return nil, nil, err
	}
	return conn, sock, nil
}

// unixSocketPath is the socket of addr's first address when that is a
// unix path or abstract socket, as godbus would connect to it.
func unixSocketPath(addr string) (string, bool) {
	first, _, _ := strings.Cut(addr, ";")
	keys, ok := strings.CutPrefix(first, "unix:")
	if !ok {
		return "", false
	}
	var path, abstract string
	for _, kv := range strings.Split(keys, ",") {
		k, v, _ := strings.Cut(kv, "=")
		val, err := dbus.UnescapeBusAddressValue(v)
		if err != nil {
			return "", false
		}
		switch k {
		case "path":
			path = val
		case "abstract":
			abstract = val
		}
	}
	switch {
	case path != "" && abstract == "":
		return path, true
	case abstract != "" && path == "":
		return "@" + abstract, true
	}
	return "", false
}

// sigWriter encodes one message, little endian; alignment is from the
// start of the message (the body starts 8-aligned, so it is also from the
// body's start, as the specification counts it).
type sigWriter struct {
	b []byte
}

func (w *sigWriter) pad(n int) {
	for len(w.b)%n != 0 {
		w.b = append(w.b, 0)
	}
}

func (w *sigWriter) u32(x uint32) {
	w.pad(4)
	w.b = binary.LittleEndian.AppendUint32(w.b, x)
}

// str appends a string or object path; false for one godbus refuses to
// encode (not UTF-8, or holding a NUL).
func (w *sigWriter) str(s string) bool {
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return false
	}
	w.u32(uint32(len(s)))
	w.b = append(w.b, s...)
	w.b = append(w.b, 0)
	return true
}

func (w *sigWriter) signature(s string) {
	w.b = append(w.b, byte(len(s)))
	w.b = append(w.b, s...)
	w.b = append(w.b, 0)
}

// array encodes an array whose elements align to align: elems appends
// them and reports false for a type it cannot encode.
func (w *sigWriter) array(align int, elems func() bool) bool {
	w.pad(4)
	at := len(w.b)
	w.b = append(w.b, 0, 0, 0, 0)
	w.pad(align)
	start := len(w.b)
	if !elems() {
		return false
	}
	binary.LittleEndian.PutUint32(w.b[at:], uint32(len(w.b)-start))
	return true
}

// sigOf is the D-Bus signature of the values value encodes; "" for any
// other type.
func sigOf(x any) string {
	switch x.(type) {
	case bool:
		return "b"
	case byte:
		return "y"
	case int16:
		return "n"
	case uint16:
		return "q"
	case int32:
		return "i"
	case uint32:
		return "u"
	case int64:
		return "x"
	case uint64:
		return "t"
	case string:
		return "s"
	case dbus.ObjectPath:
		return "o"
	case dbus.Variant:
		return "v"
	case []byte:
		return "ay"
	case []string:
		return "as"
	case []dbus.ObjectPath:
		return "ao"
	case map[string]dbus.Variant:
		return "a{sv}"
	case map[uint16]dbus.Variant:
		return "a{qv}"
	}
	return ""
}

// value appends x, aligned; false if its type is not one sigOf knows.
func (w *sigWriter) value(x any) bool {
	switch x := x.(type) {
	case bool:
		var b uint32
		if x {
			b = 1
		}
		w.u32(b)
	case byte:
		w.b = append(w.b, x)
	case int16:
		w.pad(2)
		w.b = binary.LittleEndian.AppendUint16(w.b, uint16(x))
	case uint16:
		w.pad(2)
		w.b = binary.LittleEndian.AppendUint16(w.b, x)
	case int32:
		w.u32(uint32(x))
	case uint32:
		w.u32(x)
	case int64:
		w.pad(8)
		w.b = binary.LittleEndian.AppendUint64(w.b, uint64(x))
	case uint64:
		w.pad(8)
		w.b = binary.LittleEndian.AppendUint64(w.b, x)
	case string:
		return w.str(x)
	case dbus.ObjectPath:
		return x.IsValid() && w.str(string(x))
	case dbus.Variant:
		return w.variant(x)
	case []byte:
		w.u32(uint32(len(x)))
		w.b = append(w.b, x...)
	case []string:
		return w.array(4, func() bool {
			for _, s := range x {
				if !w.str(s) {
					return false
				}
			}
			return true
		})
	case []dbus.ObjectPath:
		return w.array(4, func() bool {
			for _, s := range x {
				if !s.IsValid() || !w.str(string(s)) {
					return false
				}
			}
			return true
		})
	case map[string]dbus.Variant:
		return w.array(8, func() bool {
			for k, v := range x {
				w.pad(8)
				if !w.str(k) || !w.variant(v) {
					return false
				}
			}
			return true
		})
	case map[uint16]dbus.Variant:
		return w.array(8, func() bool {
			for k, v := range x {
				w.pad(8)
				w.pad(2)
				w.b = binary.LittleEndian.AppendUint16(w.b, k)
				if !w.variant(v) {
					return false
				}
			}
			return true
		})
	default:
		return false
	}
	return true
}

// variant appends v: its signature, then its value. Only values whose
// type sigOf knows, with that signature, are encoded.
func (w *sigWriter) variant(v dbus.Variant) bool {
	x := v.Value()
	s := sigOf(x)
	if s == "" || s != v.Signature().String() {
		return false
	}
	w.signature(s)
	return w.value(x)
}

// Header field codes (D-Bus specification, "Message Format").
const (
	hdrPath      = 1
	hdrInterface = 2
	hdrMember    = 3
	hdrSignature = 8
)

// encodeSignal encodes into buf's space the signal conn.Emit(p, name,
// args...) would send, numbered serial. ok is false when name or p is not
// valid, or an argument has a type sigWriter does not encode: the caller
// then sends it through godbus.
func encodeSignal(buf []byte, serial uint32, p dbus.ObjectPath, name string, args []any) (_ []byte, ok bool) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 || !validInterface(name[:i]) || !validMember(name[i+1:]) || !p.IsValid() {
		return buf, false
	}
	var sig []byte
	for _, a := range args {
		s := sigOf(a)
		if s == "" {
			return buf, false
		}
		sig = append(sig, s...)
	}
	if len(sig) > 255 {
		return buf, false
	}
	w := sigWriter{b: buf[:0]}
	w.b = append(w.b, 'l', byte(dbus.TypeSignal), 0, 1)
	w.b = append(w.b, 0, 0, 0, 0) // the body's length, below
	w.b = binary.LittleEndian.AppendUint32(w.b, serial)
	field := func(code byte, sig string, val string) {
		w.pad(8)
		w.b = append(w.b, code)
		w.signature(sig)
		if sig == "g" {
			w.signature(val)
		} else {
			w.str(val) // valid: checked above
		}
	}
	w.array(8, func() bool {
		field(hdrPath, "o", string(p))
		field(hdrInterface, "s", name[:i])
		field(hdrMember, "s", name[i+1:])
		if len(args) > 0 {
			field(hdrSignature, "g", string(sig))
		}
		return true
	})
	w.pad(8)
	start := len(w.b)
	for _, a := range args {
		if !w.value(a) {
			return w.b, false
		}
	}
	binary.LittleEndian.PutUint32(w.b[4:], uint32(len(w.b)-start))
	return w.b, true
}

// validMember is the specification's rule for a member name, as godbus
// checks it: 1 to 255 of [A-Za-z0-9_], not starting with a digit.
func validMember(s string) bool {
	if len(s) == 0 || len(s) > 255 || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// validInterface is the rule for an interface name: at most 255 bytes,
// two or more elements separated by '.', each a valid member name.
func validInterface(s string) bool {
	if len(s) > 255 {
		return false
	}
	n := 0
	for elem := range strings.SplitSeq(s, ".") {
		if !validMember(elem) {
			return false
		}
		n++
	}
	return n >= 2
}
