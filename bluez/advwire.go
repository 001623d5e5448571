package bluez

import (
	"encoding/binary"
	"math"
)

// advert is one advertisement-only PropertiesChanged of a Device1, read
// from the wire by decodeAdvert without godbus.
type advert struct {
	path    string
	rssi    int16
	hasRSSI bool
	// md holds ManufacturerData's entries (company, payload) when hasMD;
	// payloads are copies.
	md    []mdEntry
	hasMD bool
}

type mdEntry struct {
	company uint16
	data    []byte
}

// maxTapMessage bounds the messages the tap inspects; bigger ones go to
// godbus untouched (an advertisement is about 200 bytes).
const maxTapMessage = 4096

// frameLen returns the total length of the D-Bus message whose first 16
// bytes are hdr (dbus specification, "Message Format"), or false when the
// header is not one (then nothing can be framed any more).
func frameLen(hdr []byte) (int, bool) {
	if len(hdr) < 16 {
		return 0, false
	}
	var order binary.ByteOrder
	switch hdr[0] {
	case 'l':
		order = binary.LittleEndian
	case 'B':
		order = binary.BigEndian
	default:
		return 0, false
	}
	body := uint64(order.Uint32(hdr[4:8]))
	fields := uint64(order.Uint32(hdr[12:16]))
	total := (16+fields+7)&^7 + body
	// The specification's maximum message size is 128 MiB.
	if total > 1<<27 {
		return 0, false
	}
	return int(total), true
}

// decodeAdvert decodes msg (one whole message, as framed by frameLen) when
// it is a signal org.freedesktop.DBus.Properties.PropertiesChanged
// ("sa{sv}as") for org.bluez.Device1 on a path directly under prefix
// (the adapter's path), changing only RSSI ("n") and ManufacturerData
// ("a{qv}" of "ay"), invalidating nothing, and carrying no file
// descriptors. Anything else, malformed or not, returns false: the caller
// then hands the message to godbus as it is. It never panics, whatever msg
// holds.
func decodeAdvert(msg []byte, prefix string) (advert, bool) {
	var ad advert
	if len(msg) < 16 || msg[1] != 4 /* signal */ || msg[3] != 1 {
		return ad, false
	}
	r := wire{b: msg}
	switch msg[0] {
	case 'l':
		r.order = binary.LittleEndian
	case 'B':
		r.order = binary.BigEndian
	default:
		return ad, false
	}
	bodyLen := int(r.order.Uint32(msg[4:8]))
	fieldsLen := int(r.order.Uint32(msg[12:16]))
	bodyStart := (16 + fieldsLen + 7) &^ 7
	if fieldsLen < 0 || bodyStart < 16 || bodyStart+bodyLen != len(msg) || bodyLen < 0 {
		return ad, false
	}
	// Header fields: a(yv).
	r.off, r.end = 16, 16+fieldsLen
	var path, iface, member, sig string
	var hasSender bool
	for r.off < r.end {
		if !r.align(8) || r.off >= r.end {
			return ad, false
		}
		code := r.b[r.off]
		r.off++
		vsig, ok := r.signature()
		if !ok {
			return ad, false
		}
		switch {
		case code == 1 && vsig == "o":
			path, ok = r.str()
		case (code == 2 || code == 3 || code == 6 || code == 7) && vsig == "s":
			var s string
			s, ok = r.str()
			switch code {
			case 2:
				iface = s
			case 3:
				member = s
			case 7:
				hasSender = true
			}
		case code == 8 && vsig == "g":
			sig, ok = r.signature()
		case code == 5 && vsig == "u":
			_, ok = r.u32()
		default:
			// UNIX_FDS, ERROR_NAME, unknown or mistyped fields: not an
			// advertisement this decoder takes.
			return ad, false
		}
		if !ok {
			return ad, false
		}
	}
	if r.off != r.end || !hasSender || iface != ifaceProperties || member != "PropertiesChanged" || sig != "sa{sv}as" {
		return ad, false
	}
	if r.order.Uint32(msg[8:12]) == 0 || !validObjectPath(path) {
		return ad, false // godbus refuses these
	}
	if len(path) <= len(prefix)+1 || path[:len(prefix)] != prefix || path[len(prefix)] != '/' {
		return ad, false
	}
	for i := len(prefix) + 1; i < len(path); i++ {
		if path[i] == '/' {
			return ad, false // a GATT object below a device
		}
	}
	ad.path = path
	// Body, aligned from its own start (which is 8-aligned).
	r = wire{b: msg[bodyStart:], order: r.order, end: bodyLen}
	if s, ok := r.str(); !ok || s != IfaceDevice {
		return ad, false
	}
	n, ok := r.u32()
	if !ok || !r.align(8) || n > uint32(r.end-r.off) {
		return ad, false
	}
	dictEnd := r.off + int(n)
	for r.off < dictEnd {
		if !r.align(8) {
			return ad, false
		}
		key, ok := r.str()
		if !ok {
			return ad, false
		}
		vsig, ok := r.signature()
		if !ok {
			return ad, false
		}
		switch {
		case key == "RSSI" && vsig == "n" && !ad.hasRSSI:
			v, ok := r.u16()
			if !ok {
				return ad, false
			}
			ad.rssi, ad.hasRSSI = int16(v), true
		case key == "ManufacturerData" && vsig == "a{qv}" && !ad.hasMD:
			if !r.manufacturerData(&ad) {
				return ad, false
			}
		default:
			return ad, false
		}
		if r.off > dictEnd {
			return ad, false
		}
	}
	if r.off != dictEnd || !(ad.hasRSSI || ad.hasMD) {
		return ad, false
	}
	// Invalidated properties: none.
	if n, ok := r.u32(); !ok || n != 0 || r.off != r.end {
		return ad, false
	}
	return ad, true
}

// manufacturerData reads an a{qv} whose values are all "ay".
func (r *wire) manufacturerData(ad *advert) bool {
	n, ok := r.u32()
	if !ok || !r.align(8) || n > uint32(r.end-r.off) {
		return false
	}
	end := r.off + int(n)
	for r.off < end {
		if !r.align(8) {
			return false
		}
		company, ok := r.u16()
		if !ok {
			return false
		}
		if vsig, ok := r.signature(); !ok || vsig != "ay" {
			return false
		}
		m, ok := r.u32()
		if !ok || m > uint32(r.end-r.off) {
			return false
		}
		data := make([]byte, m)
		copy(data, r.b[r.off:])
		r.off += int(m)
		if r.off > end {
			return false
		}
		for _, e := range ad.md {
			if e.company == company {
				return false // a duplicate key: leave it to godbus
			}
		}
		ad.md = append(ad.md, mdEntry{company, data})
	}
	ad.hasMD = true
	return r.off == end
}

// wire reads D-Bus marshalled values from b[off:end], offsets (and so
// alignment) counted from b's start. Every read checks its bounds.
type wire struct {
	b        []byte
	off, end int
	order    binary.ByteOrder
}

func (r *wire) align(n int) bool {
	p := (r.off + n - 1) &^ (n - 1)
	if p > r.end {
		return false
	}
	for ; r.off < p; r.off++ {
		if r.b[r.off] != 0 {
			return false // padding must be zero
		}
	}
	return true
}

func (r *wire) u16() (uint16, bool) {
	if !r.align(2) || r.end-r.off < 2 {
		return 0, false
	}
	v := r.order.Uint16(r.b[r.off:])
	r.off += 2
	return v, true
}

func (r *wire) u32() (uint32, bool) {
	if !r.align(4) || r.end-r.off < 4 {
		return 0, false
	}
	v := r.order.Uint32(r.b[r.off:])
	r.off += 4
	return v, true
}

// str reads a string or object path: length, bytes, NUL.
func (r *wire) str() (string, bool) {
	n, ok := r.u32()
	if !ok || n >= math.MaxInt32 || int(n) >= r.end-r.off || r.b[r.off+int(n)] != 0 {
		return "", false
	}
	s := string(r.b[r.off : r.off+int(n)])
	r.off += int(n) + 1
	return s, true
}

// signature reads a signature: one length byte, bytes, NUL.
func (r *wire) signature() (string, bool) {
	if r.off >= r.end {
		return "", false
	}
	n := int(r.b[r.off])
	r.off++
	if n >= r.end-r.off || r.b[r.off+n] != 0 {
		return "", false
	}
	s := string(r.b[r.off : r.off+n])
	r.off += n + 1
	return s, true
}

// validObjectPath is dbus.ObjectPath.IsValid without its allocations
// (strings.Split): "/", or "/"-separated non-empty elements of
// [A-Za-z0-9_], no trailing "/".
func validObjectPath(s string) bool {
	if s == "" || s[0] != '/' {
		return false
	}
	if s == "/" {
		return true
	}
	prev := byte('/')
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '/':
			if prev == '/' {
				return false
			}
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		default:
			return false
		}
		prev = c
	}
	return prev != '/'
}
