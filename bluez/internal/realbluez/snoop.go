package realbluez

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
)

// A btsnoop capture in btmon's monitor format (btmon -w): what the guest's
// controllers sent and received. btmon 5.66 can crash decoding these
// captures, so the tier summarises them itself: SMP, encryption, ATT and
// EATT, per controller.

// Monitor opcodes (BlueZ src/shared/btsnoop.h).
const (
	monCommand = 2
	monEvent   = 3
	monACLTX   = 4
	monACLRX   = 5
)

// SMP opcodes and names.
var smpNames = map[byte]string{1: "PairingRequest", 2: "PairingResponse", 3: "PairingConfirm", 4: "PairingRandom",
	5: "PairingFailed", 6: "EncryptionInformation", 7: "CentralIdentification", 8: "IdentityInformation",
	9: "IdentityAddressInformation", 10: "SigningInformation", 11: "SecurityRequest", 12: "PairingPublicKey",
	13: "PairingDHKeyCheck"}

// ATT opcodes and names.
var attNames = map[byte]string{0x01: "ErrorRsp", 0x02: "ExchangeMTUReq", 0x03: "ExchangeMTURsp", 0x04: "FindInfoReq",
	0x05: "FindInfoRsp", 0x08: "ReadByTypeReq", 0x09: "ReadByTypeRsp", 0x0a: "ReadReq", 0x0b: "ReadRsp",
	0x10: "ReadByGroupTypeReq", 0x11: "ReadByGroupTypeRsp", 0x12: "WriteReq", 0x13: "WriteRsp", 0x1b: "Notify",
	0x1d: "Indicate", 0x1e: "Confirm", 0x23: "MultipleNotify", 0x52: "WriteCmd"}

// Controller is what one controller's traffic showed.
type Controller struct {
	Index int
	// SMP PDUs by name, TX and RX together.
	SMP map[string]int
	// PairingRequests are the Pairing Request/Response PDUs seen: IO
	// capability and AuthReq.
	Pairings []PairingPDU
	// PairingFailed reasons (SMP error codes), in order.
	PairingFailed []byte
	// LTKRequests counts LE Long Term Key Request events (the
	// peripheral's side of starting encryption).
	LTKRequests int
	// StartEncryption counts LE Enable Encryption commands (the central's
	// side).
	StartEncryption int
	// Encrypted counts Encryption Change events with status 0 and
	// encryption on.
	Encrypted int
	// ATT PDUs by name on the fixed ATT channel (CID 4) and on EATT
	// channels (dynamic CIDs, LE credit-based).
	ATT, EATT map[string]int
	// Disconnects counts Disconnection Complete events.
	Disconnects int
}

// PairingPDU is one Pairing Request or Response.
type PairingPDU struct {
	Request bool
	TX      bool
	IOCap   byte
	AuthReq byte
}

// Bonding, MITM and Secure Connections of AuthReq.
func (p PairingPDU) Bonding() bool { return p.AuthReq&0x03 == 0x01 }
func (p PairingPDU) MITM() bool    { return p.AuthReq&0x04 != 0 }
func (p PairingPDU) SC() bool      { return p.AuthReq&0x08 != 0 }

// Capture is the summary of a capture.
type Capture struct {
	Records     int
	Controllers map[int]*Controller
	// sdu is the SDU bytes still expected on an LE credit-based channel,
	// per controller, direction and CID: a K-frame that continues an SDU
	// carries no ATT opcode.
	sdu map[[3]int]int
}

// ParseSnoopFile reads and summarises a btmon -w capture.
func ParseSnoopFile(path string) (*Capture, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseSnoop(b)
}

var errNotSnoop = errors.New("realbluez: not a btsnoop capture")

// ParseSnoop summarises a btsnoop capture in monitor format (datalink
// 2001). A truncated last record ends the parse without error (the guest
// may stop btmon mid-write).
func ParseSnoop(b []byte) (*Capture, error) {
	if len(b) < 16 || string(b[:8]) != "btsnoop\x00" {
		return nil, errNotSnoop
	}
	if dl := binary.BigEndian.Uint32(b[12:]); dl != 2001 {
		return nil, fmt.Errorf("%w: datalink %d, want 2001 (monitor)", errNotSnoop, dl)
	}
	c := &Capture{Controllers: map[int]*Controller{}, sdu: map[[3]int]int{}}
	for p := 16; p+24 <= len(b); {
		incl := int(binary.BigEndian.Uint32(b[p+4:]))
		flags := binary.BigEndian.Uint32(b[p+8:])
		if p+24+incl > len(b) {
			break
		}
		pkt := b[p+24 : p+24+incl]
		p += 24 + incl
		c.Records++
		c.record(int(flags>>16), uint16(flags), pkt)
	}
	return c, nil
}

func (c *Capture) ctrl(i int) *Controller {
	k, ok := c.Controllers[i]
	if !ok {
		k = &Controller{Index: i, SMP: map[string]int{}, ATT: map[string]int{}, EATT: map[string]int{}}
		c.Controllers[i] = k
	}
	return k
}

func (c *Capture) record(idx int, op uint16, pkt []byte) {
	switch op {
	case monCommand:
		// LE Enable Encryption: OGF 0x08, OCF 0x0019.
		if len(pkt) >= 3 && binary.LittleEndian.Uint16(pkt) == 0x2019 {
			c.ctrl(idx).StartEncryption++
		}
	case monEvent:
		if len(pkt) < 2 {
			return
		}
		k := c.ctrl(idx)
		switch pkt[0] {
		case 0x05: // Disconnection Complete
			k.Disconnects++
		case 0x08: // Encryption Change: status, handle, enabled
			if len(pkt) >= 6 && pkt[2] == 0 && pkt[5] != 0 {
				k.Encrypted++
			}
		case 0x3e: // LE Meta: subevent 5 is LE Long Term Key Request
			if len(pkt) >= 3 && pkt[2] == 0x05 {
				k.LTKRequests++
			}
		}
	case monACLTX, monACLRX:
		// ACL: handle+flags (2), length (2); L2CAP: length (2), CID (2).
		if len(pkt) < 9 {
			return
		}
		if pb := binary.LittleEndian.Uint16(pkt) >> 12 & 0x3; pb == 0x1 {
			return // a continuation fragment
		}
		l2len := int(binary.LittleEndian.Uint16(pkt[4:]))
		cid := binary.LittleEndian.Uint16(pkt[6:])
		data := pkt[8:]
		k := c.ctrl(idx)
		tx := op == monACLTX
		switch {
		case cid == 0x0006 && len(data) > 0:
			name := smpNames[data[0]]
			if name == "" {
				name = fmt.Sprintf("0x%02x", data[0])
			}
			k.SMP[name]++
			switch data[0] {
			case 1, 2:
				if len(data) >= 4 {
					k.Pairings = append(k.Pairings, PairingPDU{Request: data[0] == 1, TX: tx, IOCap: data[1], AuthReq: data[3]})
				}
			case 5:
				if len(data) >= 2 {
					k.PairingFailed = append(k.PairingFailed, data[1])
				}
			}
		case cid == 0x0004 && len(data) > 0:
			k.ATT[attName(data[0])]++
		case cid >= 0x0040:
			// The first K-frame of an SDU starts with the SDU length.
			key := [3]int{idx, int(op), int(cid)}
			if left := c.sdu[key]; left > 0 {
				c.sdu[key] = max(left-l2len, 0)
				return
			}
			if len(data) > 2 {
				k.EATT[attName(data[2])]++
				c.sdu[key] = max(int(binary.LittleEndian.Uint16(data))-(l2len-2), 0)
			}
		}
	}
}

func attName(op byte) string {
	if n, ok := attNames[op]; ok {
		return n
	}
	return fmt.Sprintf("0x%02x", op)
}

// PasskeyEntry reports whether the controller ran LE Secure Connections
// passkey entry: Pairing Request and Response with SC and MITM, public
// keys, 20 rounds of Confirm and Random each way (one per passkey bit;
// counted TX and RX together, so at least 40 each), and the DHKey check.
func (k *Controller) PasskeyEntry() bool {
	var req, rsp bool
	for _, p := range k.Pairings {
		if p.SC() && p.MITM() {
			if p.Request {
				req = true
			} else {
				rsp = true
			}
		}
	}
	return req && rsp && k.SMP["PairingPublicKey"] >= 2 && k.SMP["PairingConfirm"] >= 40 &&
		k.SMP["PairingRandom"] >= 40 && k.SMP["PairingDHKeyCheck"] >= 2
}

// Lines is a human summary, one line per controller and topic.
func (c *Capture) Lines() []string {
	var idx []int
	for i := range c.Controllers {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	out := []string{fmt.Sprintf("capture: %d records", c.Records)}
	for _, i := range idx {
		k := c.Controllers[i]
		var pairs []string
		for _, p := range k.Pairings {
			kind := "rsp"
			if p.Request {
				kind = "req"
			}
			dir := "rx"
			if p.TX {
				dir = "tx"
			}
			pairs = append(pairs, fmt.Sprintf("%s/%s io=%d authreq=0x%02x(bond=%v mitm=%v sc=%v)", kind, dir, p.IOCap, p.AuthReq, p.Bonding(), p.MITM(), p.SC()))
		}
		out = append(out,
			fmt.Sprintf("hci%d SMP %s", i, counts(k.SMP)),
			fmt.Sprintf("hci%d pairing PDUs: %s; failed reasons %x; LE SC passkey entry: %v", i, strings.Join(pairs, "; "), k.PairingFailed, k.PasskeyEntry()),
			fmt.Sprintf("hci%d encryption: %d started, %d LTK requests, %d encrypted; %d disconnects", i, k.StartEncryption, k.LTKRequests, k.Encrypted, k.Disconnects),
			fmt.Sprintf("hci%d ATT (CID 4) %s", i, counts(k.ATT)),
			fmt.Sprintf("hci%d EATT %s", i, counts(k.EATT)))
	}
	return out
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
