package realbluez

import (
	"encoding/binary"
	"strings"
	"testing"
)

type snoopBuilder struct{ b []byte }

func newSnoop() *snoopBuilder {
	b := []byte("btsnoop\x00")
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, 2001)
	return &snoopBuilder{b}
}

func (s *snoopBuilder) add(idx int, op uint16, pkt []byte) {
	s.b = binary.BigEndian.AppendUint32(s.b, uint32(len(pkt)))
	s.b = binary.BigEndian.AppendUint32(s.b, uint32(len(pkt)))
	s.b = binary.BigEndian.AppendUint32(s.b, uint32(idx)<<16|uint32(op))
	s.b = binary.BigEndian.AppendUint32(s.b, 0)
	s.b = binary.BigEndian.AppendUint64(s.b, 0)
	s.b = append(s.b, pkt...)
}

// acl is one start ACL packet carrying an L2CAP PDU of payload on cid.
func (s *snoopBuilder) acl(idx int, tx bool, cid uint16, payload []byte) {
	pkt := binary.LittleEndian.AppendUint16(nil, 0x2001) // handle 1, start
	pkt = binary.LittleEndian.AppendUint16(pkt, uint16(4+len(payload)))
	pkt = binary.LittleEndian.AppendUint16(pkt, uint16(len(payload)))
	pkt = binary.LittleEndian.AppendUint16(pkt, cid)
	op := uint16(monACLRX)
	if tx {
		op = monACLTX
	}
	s.add(idx, op, append(pkt, payload...))
}

func TestParseSnoop(t *testing.T) {
	s := newSnoop()
	s.acl(0, true, 6, []byte{1, 0x02, 0x00, 0x0d, 16, 7, 7})  // Pairing Request, KeyboardOnly, SC+MITM+bond
	s.acl(0, false, 6, []byte{2, 0x02, 0x00, 0x0d, 16, 7, 7}) // Pairing Response
	s.acl(0, true, 6, []byte{12})
	s.acl(0, false, 6, []byte{12})
	for range 20 {
		for _, tx := range []bool{true, false} {
			s.acl(0, tx, 6, []byte{3})
			s.acl(0, tx, 6, []byte{4})
		}
	}
	s.acl(0, true, 6, []byte{13})
	s.acl(0, false, 6, []byte{13})
	s.acl(0, false, 6, []byte{5, 0x04})
	s.add(0, monEvent, []byte{0x08, 4, 0, 1, 0, 1})      // Encryption Change, on
	s.add(0, monEvent, []byte{0x08, 4, 5, 1, 0, 0})      // failed: not counted
	s.add(1, monEvent, []byte{0x3e, 13, 0x05, 1, 0})     // LE LTK Request
	s.add(0, monCommand, []byte{0x19, 0x20, 28})         // LE Enable Encryption
	s.acl(0, true, 4, []byte{0x52, 0x0b, 0x00, 1, 2, 3}) // Write Command on ATT
	// EATT: an SDU of 10 bytes in two K-frames, then a notification.
	s.acl(0, false, 0x40, []byte{10, 0, 0x23, 1, 2, 3})
	s.acl(0, false, 0x40, []byte{0x1b, 5, 6, 7, 8, 9})
	s.acl(0, false, 0x40, []byte{3, 0, 0x1b, 1, 2})
	s.b = append(s.b, 0, 0, 0) // a truncated record
	c, err := ParseSnoop(s.b)
	if err != nil {
		t.Fatal(err)
	}
	k := c.Controllers[0]
	if !k.PasskeyEntry() {
		t.Errorf("passkey entry not recognised: %v %v", k.SMP, k.Pairings)
	}
	if len(k.PairingFailed) != 1 || k.PairingFailed[0] != 0x04 {
		t.Errorf("PairingFailed %x", k.PairingFailed)
	}
	if k.Encrypted != 1 || k.StartEncryption != 1 || c.Controllers[1].LTKRequests != 1 {
		t.Errorf("encryption %d, started %d, LTK requests %d", k.Encrypted, k.StartEncryption, c.Controllers[1].LTKRequests)
	}
	if k.ATT["WriteCmd"] != 1 || k.EATT["MultipleNotify"] != 1 || k.EATT["Notify"] != 1 || len(k.EATT) != 2 {
		t.Errorf("ATT %v, EATT %v", k.ATT, k.EATT)
	}
	if len(c.Lines()) != 11 {
		t.Errorf("summary: %q", c.Lines())
	}
	if _, err := ParseSnoop([]byte("nope")); err == nil {
		t.Error("garbage parsed")
	}
}

func TestKernelOops(t *testing.T) {
	console := "[   61.0] Bluetooth: hci0: ...\n[   63.27] general protection fault, probably for non-canonical address 0x6c61: 0000 [#1] PREEMPT SMP NOPTI\n[   63.30] ---[ end trace ]---\n"
	if got := KernelOops(console); !strings.HasPrefix(got, "[   63.27] general protection fault") {
		t.Fatalf("KernelOops = %q", got)
	}
	if got := KernelOops("[ 1.0] Bluetooth: Core ver 2.22\ntier-init: done rc=0\n"); got != "" {
		t.Fatalf("a clean console: %q", got)
	}
}
