package bluez

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/godbus/dbus/v5"
)

// DialBus opens a connection to the bus at address ("unix:path=…" or
// "unix:abstract=…"), authenticated, like dbus.Connect, whose reader takes
// advertisement signals out of the stream before godbus sees them: an
// Adapter opened on it decodes those (decodeAdvert, a few hundred
// nanoseconds, no reflection) instead of godbus's reflective decoder
// plus the dispatcher; every other message reaches godbus byte for byte.
// Without an Adapter on it, nothing is taken. The connection cannot pass
// Unix file descriptors (gatewayd uses none).
func DialBus(address string) (*dbus.Conn, error) {
	nc, err := dialUnix(address)
	if err != nil {
		return nil, err
	}
	t := &tap{Conn: nc, br: bufio.NewReaderSize(nc, 64<<10)}
	conn, err := dbus.NewConn(t)
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("bluez: dbus.NewConn: %w", err)
	}
	if err := conn.Auth(nil); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("bluez: authenticating on %s: %w", address, err)
	}
	if err := conn.Hello(); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("bluez: Hello on %s: %w", address, err)
	}
	t.conn.Store(conn)
	taps.Store(conn, t)
	return conn, nil
}

// DialSystemBus is DialBus on the system bus (DBUS_SYSTEM_BUS_ADDRESS,
// or /var/run/dbus/system_bus_socket, as godbus).
func DialSystemBus() (*dbus.Conn, error) {
	addr := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")
	if addr == "" {
		addr = "unix:path=/var/run/dbus/system_bus_socket"
	}
	return DialBus(addr)
}

func dialUnix(address string) (net.Conn, error) {
	var last error = fmt.Errorf("%w: no unix address in %q", ErrInvalidArguments, address)
	for _, a := range strings.Split(address, ";") {
		kind, rest, ok := strings.Cut(a, ":")
		if !ok || kind != "unix" {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			var name string
			switch k {
			case "path":
				name = unescapeAddr(v)
			case "abstract":
				name = "@" + unescapeAddr(v)
			default:
				continue
			}
			c, err := net.Dial("unix", name)
			if err == nil {
				return c, nil
			}
			last = fmt.Errorf("bluez: dialling %s: %w", name, err)
		}
	}
	return nil, last
}

// unescapeAddr undoes a D-Bus address value's %XX escapes.
func unescapeAddr(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '%' && i+2 < len(v) {
			var x byte
			if _, err := fmt.Sscanf(v[i+1:i+3], "%02x", &x); err == nil {
				b.WriteByte(x)
				i += 2
				continue
			}
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// taps maps each connection made by DialBus to its tap.
var taps sync.Map // *dbus.Conn → *tap

func tapOf(c *dbus.Conn) *tap {
	t, _ := taps.Load(c)
	tp, _ := t.(*tap)
	return tp
}

// tap is the connection's reader. godbus's reading goroutine is the only
// caller of Read, so the framing state needs no lock; the sink is set
// and cleared by the Adapter.
type tap struct {
	net.Conn
	conn atomic.Pointer[dbus.Conn]
	br   *bufio.Reader

	binary bool   // authentication is over: messages follow
	broken bool   // a header that frames nothing: pass everything on
	pass   int    // bytes of the current message still to hand to godbus
	text   []byte // an authentication line still to hand to godbus

	// mu is held while an advertisement is handed to the sink, so that
	// detach returns only once no delivery is under way.
	mu     sync.Mutex
	sink   advertSink
	prefix string
	taken  atomic.Uint64
}

// advertSink takes the advertisements a tap decodes, in godbus's reading
// goroutine: it must not block (the Adapter takes its lock for a map
// update). Handing them over there, instead of through a channel to the
// Adapter's goroutine, saves a goroutine wake-up per advertisement: at
// 10,000 a second, the wake-ups cost more than the decoding.
type advertSink interface {
	takeAdvert(advert)
}

// attach makes the tap deliver the advertisements of devices under prefix
// (an adapter's path) to sink; false when another sink has it.
func (t *tap) attach(prefix string, sink advertSink) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sink != nil {
		return false
	}
	t.sink, t.prefix = sink, prefix
	return true
}

// detach stops the deliveries to sink; when it returns, none is under way.
func (t *tap) detach(sink advertSink) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sink == sink {
		t.sink, t.prefix = nil, ""
	}
}

// Read hands godbus the stream minus the advertisements taken.
func (t *tap) Read(p []byte) (int, error) {
	for {
		if t.pass > 0 || t.broken {
			if t.pass > 0 && len(p) > t.pass {
				p = p[:t.pass]
			}
			n, err := t.br.Read(p)
			if !t.broken {
				t.pass -= n
			}
			return n, err
		}
		if len(t.text) > 0 {
			n := copy(p, t.text)
			t.text = t.text[n:]
			return n, nil
		}
		if !t.binary {
			// Authentication: lines until the server's OK (no Unix FD
			// negotiation on this transport), then BEGIN and messages.
			line, err := t.br.ReadSlice('\n')
			if err != nil && len(line) == 0 {
				return 0, err
			}
			if bytes.HasPrefix(line, []byte("OK")) {
				t.binary = true
			}
			t.text = append(t.text[:0], line...)
			continue
		}
		hdr, err := t.br.Peek(16)
		if err != nil {
			// A short read at the end: let godbus see what there is.
			t.broken = true
			continue
		}
		total, ok := frameLen(hdr)
		if !ok {
			t.broken = true
			continue
		}
		t.pass = total
		if total > maxTapMessage || hdr[1] != 4 {
			continue
		}
		t.mu.Lock()
		prefix := t.prefix
		t.mu.Unlock()
		if prefix == "" {
			continue
		}
		msg, err := t.br.Peek(total)
		if err != nil {
			continue
		}
		ad, ok := decodeAdvert(msg, prefix)
		if !ok {
			continue
		}
		_, _ = t.br.Discard(total)
		t.pass = 0
		t.mu.Lock()
		if t.sink != nil && t.prefix == prefix {
			t.taken.Add(1)
			t.sink.takeAdvert(ad)
		}
		t.mu.Unlock()
	}
}

// Close closes the socket and forgets the tap.
func (t *tap) Close() error {
	if c := t.conn.Load(); c != nil {
		taps.Delete(c)
	}
	return t.Conn.Close()
}

var _ io.ReadWriteCloser = (*tap)(nil)
