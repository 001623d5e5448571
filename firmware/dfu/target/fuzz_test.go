package target_test

import (
	"bytes"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
)

// FuzzBootloader: any sequence of Control Point and Packet writes and
// reboots (each prefixed by a byte: 0xFF a reboot, else even for the
// Control Point, odd for the Packet, then a length byte) never panics, every Control Point write gets one
// well-formed response to its opcode, and nothing but the fleet's signed
// image is ever activated.
func FuzzBootloader(f *testing.F) {
	img := pkg(f, []byte("fuzzed firmware image"))
	var seed []byte
	add := func(packet bool, b []byte) {
		k := byte(0)
		if packet {
			k = 1
		}
		seed = append(seed, k, byte(len(b)))
		seed = append(seed, b...)
	}
	add(false, dfu.SetPRNRequest(1))
	add(false, dfu.CreateRequest(dfu.ObjectCommand, uint32(len(img.InitPacket.Raw))))
	for i := 0; i < len(img.InitPacket.Raw); i += 20 {
		add(true, img.InitPacket.Raw[i:min(i+20, len(img.InitPacket.Raw))])
	}
	add(false, dfu.ExecuteRequest())
	add(false, dfu.CreateRequest(dfu.ObjectData, uint32(len(img.Firmware))))
	for i := 0; i < len(img.Firmware); i += 20 {
		add(true, img.Firmware[i:min(i+20, len(img.Firmware))])
	}
	add(false, dfu.CRCRequest())
	add(false, dfu.ExecuteRequest())
	f.Add(seed)
	f.Add([]byte{0, 1, 0x06, 0, 2, 0x06, 0x02, 1, 3, 1, 2, 3})
	half := len(seed) / 2
	f.Add(append(append(bytes.Clone(seed[:half:half]), 0xFF, 0), seed...))
	f.Fuzz(func(t *testing.T, ops []byte) {
		b := target.New(target.Options{Key: &key(t).PublicKey, Device: lock, Firmware: []byte("old"), BankSize: 64 << 10})
		c := b.Connect(23)
		c.EnableNotifications()
		for len(ops) >= 2 {
			kind, n := ops[0], int(ops[1])
			ops = ops[2:]
			data := ops[:min(n, len(ops))]
			ops = ops[len(data):]
			if kind == 0xFF { // a reboot, then a new connection
				b.Reset()
				c = b.Connect(23)
				c.EnableNotifications()
				continue
			}
			if kind%2 == 1 {
				note, err := c.WritePacket(data)
				if err == nil && note != nil {
					if r, perr := dfu.ParseResponse(note); perr != nil || r.Op != dfu.OpCRC {
						t.Fatalf("packet write answered % x", note)
					}
				}
				continue
			}
			note, err := c.WriteControlPoint(data)
			if err != nil {
				return // the connection ended (activation)
			}
			r, perr := dfu.ParseResponse(note)
			if perr != nil || (len(data) > 0 && r.Op != dfu.Op(data[0])) {
				t.Fatalf("request % x answered % x (%v)", data, note, perr)
			}
		}
		if active, _ := b.Active(); string(active) != "old" && string(active) != string(img.Firmware) {
			t.Fatalf("activated an image nobody signed: % x", active)
		}
	})
}
