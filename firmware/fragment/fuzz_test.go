package fragment

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
	"time"
)

// Fuzz input format (see decodeOps):
//
//	byte 0: configuration: MaxInFlight = 1+(b&3); MaxMessage = 64 if b&4,
//	        else DefaultMaxMessage.
//	then a sequence of operations, each starting with an op byte:
//	  0xff            advance the clock by Timeout/2
//	  0xe0..0xfe      a structured fragment: msg_id = op&3, then one byte
//	                  each for offset, total_len and payload length (&31),
//	                  then that many payload bytes
//	  0x00..0xdf      a raw fragment of that many bytes (fewer if the input
//	                  ends), arbitrary header included
const (
	opAdvance    = 0xff
	opStructured = 0xe0
)

// rawOps encodes fragments as raw fragment operations.
func rawOps(config byte, frags ...[]byte) []byte {
	out := []byte{config}
	for _, f := range frags {
		if len(f) >= opStructured {
			panic("fragment too long for a raw op")
		}
		out = append(out, byte(len(f)))
		out = append(out, f...)
	}
	return out
}

func FuzzReassemble(f *testing.F) {
	msg := seq(0, 40)
	fr := mustSplit(f, 7, msg, 23)
	f.Add(rawOps(0, fr[0], fr[1], fr[2]))
	f.Add(rawOps(0, fr[0], fr[1], fr[2], fr[0], fr[1], fr[2]))
	f.Add(rawOps(0, raw(1, 0, 1, 0xaa), raw(1, 0, 1, 0xaa), raw(1, 0, 2, 1, 2)))
	f.Add(rawOps(3, fr[2], fr[0], fr[2], fr[1], fr[0]))
	f.Add(append(rawOps(0, fr[0]), opAdvance, opAdvance, 20, fr[1][0], fr[1][1]))
	bad := bytes.Clone(fr[1])
	bad[10] ^= 1
	f.Add(rawOps(0, fr[1], bad, fr[0], fr[2]))
	f.Add(rawOps(0, fr[0], raw(7, 15, 41, seq(15, 15)...), fr[1]))
	f.Add(rawOps(4, raw(1, 0, 64, seq(0, 30)...), raw(1, 30, 64, seq(30, 34)...)))
	big := mustSplit(f, 200, seq(3, 600), 200)
	f.Add(rawOps(1, big...))
	f.Add(rawOps(0, raw(1, 0, 0, 1), raw(1, 0xffff, 10, 1), raw(2, 0, 0xffff, 1), nil, []byte{1, 2, 3}))
	f.Add([]byte{5, 0xe1, 0, 8, 4, 1, 2, 3, 4, 0xe1, 4, 8, 4, 5, 6, 7, 8, 0xe1, 2, 8, 2, 3, 9})
	f.Add([]byte{0, 0xe0, 0, 3, 3, 1, 2, 3, 0xe1, 0, 3, 3, 1, 2, 3, 0xe2, 0, 3, 1, 9, 0xe3, 1, 3, 1, 9, 0xe0, 0, 3, 3, 1, 2, 3})

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || len(data) > 8<<10 {
			return // longer inputs only repeat what shorter ones do, slowly
		}
		config, data := data[0], data[1:]
		maxMsg := DefaultMaxMessage
		if config&4 != 0 {
			maxMsg = 64
		}
		inFlight := 1 + int(config&3)
		r, clock := newTestReassembler(t, Options{MaxMessage: maxMsg, MaxInFlight: inFlight})

		// offered[id<<16|total_len] lists the well-formed fragments fed
		// with that msg_id and total_len: every byte of a delivered message
		// must come from one of them.
		offered := map[int][][]byte{}
		// Last delivery per msg_id: within Timeout of a delivery its msg_id
		// takes nothing new, so no message can be delivered twice.
		var last [256]*time.Time

		for len(data) > 0 {
			op := data[0]
			data = data[1:]
			var frag []byte
			switch {
			case op == opAdvance:
				clock.Advance(DefaultTimeout / 2)
				continue
			case op >= opStructured:
				var h [3]byte
				n := copy(h[:], data)
				data = data[n:]
				pl := min(int(h[2]&31), len(data))
				frag = raw(op&3, uint16(h[0]), uint16(h[1]), data[:pl]...)
				data = data[pl:]
			default:
				n := min(int(op), len(data))
				frag, data = data[:n], data[n:]
			}

			valid := len(frag) > HeaderSize
			var id uint8
			var off, total int
			var payload []byte
			if valid {
				id = frag[0]
				off = int(binary.BigEndian.Uint16(frag[1:3]))
				total = int(binary.BigEndian.Uint16(frag[3:5]))
				payload = frag[HeaderSize:]
				valid = total >= 1 && total <= maxMsg && off+len(payload) <= total
				if valid {
					k := int(id)<<16 | total
					offered[k] = append(offered[k], frag)
				}
			}

			got, err := r.Add(frag)
			if err != nil {
				if got != nil {
					t.Fatalf("Add returned a message and %v", err)
				}
				if countSentinels(err) != 1 {
					t.Fatalf("error %v wraps %d sentinels", err, countSentinels(err))
				}
			}
			if got != nil {
				if !valid {
					t.Fatalf("message returned for an invalid fragment % x", frag)
				}
				if len(got) != total || len(got) > maxMsg {
					t.Fatalf("message of %d bytes; fragment declared total_len %d (max %d)", len(got), total, maxMsg)
				}
				if !bytes.Equal(got[off:off+len(payload)], payload) {
					t.Fatal("message does not contain the fragment that completed it")
				}
				ok := make([]bool, total)
				for _, f := range offered[int(id)<<16|total] {
					o := int(binary.BigEndian.Uint16(f[1:3]))
					for i, b := range f[HeaderSize:] {
						ok[o+i] = ok[o+i] || got[o+i] == b
					}
				}
				if p := slices.Index(ok, false); p >= 0 {
					t.Fatalf("msg_id %d byte %d = %#x was never offered there", id, p, got[p])
				}
				if at := last[id]; at != nil && clock.Now().Sub(*at) < DefaultTimeout {
					t.Fatalf("msg_id %d delivered again %v after the previous delivery", id, clock.Now().Sub(*at))
				}
				now := clock.Now()
				last[id] = &now
			}

			held, used := 0, 0
			for _, m := range r.slots {
				held += len(m.buf)
				if m.used {
					used++
				}
			}
			if held > inFlight*maxMsg || used != r.inFlight || r.inFlight > inFlight {
				t.Fatalf("holding %d bytes in %d slots (count %d); bound %d in %d", held, used, r.inFlight, inFlight*maxMsg, inFlight)
			}
		}
		_ = r.Expire()
	})
}
