package target_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
)

func key(t testing.TB) *ecdsa.PrivateKey {
	d := sha256.Sum256([]byte("dfu test key: fleet"))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var lock = dfu.Device{HWVersion: 52, SoftDeviceFWID: 0x0101, AppVersion: 2, BootloaderVersion: 1}

func pkg(t testing.TB, fw []byte) *dfu.Image {
	data, err := dfu.Generate(dfu.Spec{Key: key(t), HWVersion: 52, SDReq: []uint32{0x101},
		Images: []dfu.ImageSpec{{Kind: dfu.KindApplication, Name: "app", Firmware: fw, FWVersion: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := dfu.Parse(data, dfu.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Images[0]
}

// cp writes a request and decodes its notification.
func cp(t *testing.T, c *target.Conn, req []byte) dfu.Response {
	t.Helper()
	n, err := c.WriteControlPoint(req)
	if err != nil {
		t.Fatal(err)
	}
	r, err := dfu.ParseResponse(n)
	if err != nil {
		t.Fatal(err)
	}
	if r.Op != dfu.Op(req[0]) {
		t.Fatalf("response to %s for request %s", r.Op, dfu.Op(req[0]))
	}
	return r
}

func ok(t *testing.T, r dfu.Response) dfu.Response {
	t.Helper()
	if r.Result != dfu.ResSuccess {
		t.Fatalf("%s: %s %s", r.Op, r.Result, r.Ext)
	}
	return r
}

func write(t *testing.T, c *target.Conn, data []byte) (notes [][]byte) {
	t.Helper()
	for i := 0; i < len(data); i += c.MaxPacket() {
		n, err := c.WritePacket(data[i:min(i+c.MaxPacket(), len(data))])
		if err != nil {
			t.Fatal(err)
		}
		if n != nil {
			notes = append(notes, n)
		}
	}
	return notes
}

// TestATTRules: the Control Point needs notifications enabled; Packet
// writes are at most ATT_MTU-3; the MTU exchange rounds the payload to a
// multiple of 4; MTU get reports it.
func TestATTRules(t *testing.T) {
	b := target.New(target.Options{Key: &key(t).PublicKey, Device: lock})
	c := b.Connect(100)
	if c.ATTMTU() != 99 || c.MaxPacket() != 96 {
		t.Fatalf("MTU 100 gives %d (%d per write), want 99 (96)", c.ATTMTU(), c.MaxPacket())
	}
	if _, err := c.WriteControlPoint(dfu.SelectRequest(dfu.ObjectCommand)); !errors.Is(err, target.ErrNotificationsDisabled) {
		t.Fatalf("write before CCCD: %v", err)
	}
	c.EnableNotifications()
	if r := ok(t, cp(t, c, dfu.MTURequest())); r.MTU != 96 {
		t.Fatalf("MTU get: %d", r.MTU)
	}
	if _, err := c.WritePacket(make([]byte, 97)); !errors.Is(err, target.ErrTooLong) {
		t.Fatalf("97-byte write: %v", err)
	}
	b.Connect(23)
	if _, err := c.WriteControlPoint(dfu.CRCRequest()); !errors.Is(err, target.ErrDisconnected) {
		t.Fatalf("old connection after a new one: %v", err)
	}
}

// TestRequestRefusals: the SDK's answers to malformed or out-of-order
// requests.
func TestRequestRefusals(t *testing.T) {
	b := target.New(target.Options{Key: &key(t).PublicKey, Device: lock})
	c := b.Connect(247)
	c.EnableNotifications()
	for _, tc := range []struct {
		name string
		req  []byte
		want dfu.Result
	}{
		{"unknown opcode", []byte{0x09}, dfu.ResNotSupported},
		{"short create", []byte{0x01, 0x01, 0x00}, dfu.ResInvalidParameter},
		{"command object of 0", dfu.CreateRequest(dfu.ObjectCommand, 0), dfu.ResInvalidParameter},
		{"command object over 512", dfu.CreateRequest(dfu.ObjectCommand, 513), dfu.ResInsufficientResources},
		{"data before init packet", dfu.CreateRequest(dfu.ObjectData, 4096), dfu.ResNotPermitted},
		{"select type 3", dfu.SelectRequest(3), dfu.ResInvalidObject},
	} {
		if r := cp(t, c, tc.req); r.Result != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, r.Result, tc.want)
		}
	}
	// Execute of an incomplete init packet.
	img := pkg(t, bytes.Repeat([]byte{1}, 10_000))
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectCommand, uint32(len(img.InitPacket.Raw)))))
	write(t, c, img.InitPacket.Raw[:10])
	if r := cp(t, c, dfu.ExecuteRequest()); r.Result != dfu.ResNotPermitted {
		t.Fatalf("execute of 10 of %d bytes: %s", len(img.InitPacket.Raw), r.Result)
	}
	write(t, c, img.InitPacket.Raw[10:])
	ok(t, cp(t, c, dfu.ExecuteRequest()))
	for _, tc := range []struct {
		name string
		size uint32
		want dfu.Result
	}{
		{"data object not a page, not the last", 1000, dfu.ResInvalidParameter},
		{"data object over 4096", 8192, dfu.ResInsufficientResources},
	} {
		if r := cp(t, c, dfu.CreateRequest(dfu.ObjectData, tc.size)); r.Result != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, r.Result, tc.want)
		}
	}
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectData, 4096)))
	write(t, c, img.Firmware[:4000])
	if r := cp(t, c, dfu.ExecuteRequest()); r.Result != dfu.ResNotPermitted {
		t.Fatalf("execute of a short data object: %s", r.Result)
	}
}

// TestObjectsAndCRC: select reports 4096-byte data objects, and the
// offset and CRC-32 run over the whole image across objects; a new Create
// of the object in flight rolls back to the last executed object.
func TestObjectsAndCRC(t *testing.T) {
	fw := bytes.Repeat([]byte("0123456789"), 1000) // 10,000 bytes: 4096, 4096, 1808
	img := pkg(t, fw)
	b := target.New(target.Options{Key: &key(t).PublicKey, Device: lock})
	c := b.Connect(247)
	c.EnableNotifications()
	r := ok(t, cp(t, c, dfu.SelectRequest(dfu.ObjectCommand)))
	if r.MaxSize != dfu.MaxInitPacket || r.Offset != 0 {
		t.Fatalf("select command: %+v", r)
	}
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectCommand, uint32(len(img.InitPacket.Raw)))))
	write(t, c, img.InitPacket.Raw)
	if r := ok(t, cp(t, c, dfu.CRCRequest())); r.Offset != uint32(len(img.InitPacket.Raw)) || r.CRC != crc32.ChecksumIEEE(img.InitPacket.Raw) {
		t.Fatalf("init packet CRC: %+v", r)
	}
	ok(t, cp(t, c, dfu.ExecuteRequest()))
	if r := ok(t, cp(t, c, dfu.SelectRequest(dfu.ObjectData))); r.MaxSize != 4096 || r.Offset != 0 || r.CRC != 0 {
		t.Fatalf("select data: %+v", r)
	}
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectData, 4096)))
	write(t, c, fw[:4096])
	ok(t, cp(t, c, dfu.ExecuteRequest()))
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectData, 4096)))
	write(t, c, fw[4096:6000])
	if r := ok(t, cp(t, c, dfu.CRCRequest())); r.Offset != 6000 || r.CRC != crc32.ChecksumIEEE(fw[:6000]) {
		t.Fatalf("CRC across objects: offset %d", r.Offset)
	}
	// Create the object again: back to 4096 and its CRC.
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectData, 4096)))
	if r := ok(t, cp(t, c, dfu.CRCRequest())); r.Offset != 4096 || r.CRC != crc32.ChecksumIEEE(fw[:4096]) {
		t.Fatalf("after re-create: offset %d", r.Offset)
	}
	write(t, c, fw[4096:8192])
	ok(t, cp(t, c, dfu.ExecuteRequest()))
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectData, 1808)))
	write(t, c, fw[8192:])
	ok(t, cp(t, c, dfu.ExecuteRequest()))
	if active, dev := b.Active(); !bytes.Equal(active, fw) || dev.AppVersion != 3 || !c.Closed() {
		t.Fatal("not activated")
	}
}

// TestPRN: with PRN n, every n-th Packet write is answered with a CRC
// notification of the offset and CRC so far; the count restarts at each
// Create; PRN 0 sends none.
func TestPRN(t *testing.T) {
	fw := bytes.Repeat([]byte{7}, 5000)
	img := pkg(t, fw)
	b := target.New(target.Options{Key: &key(t).PublicKey, Device: lock})
	c := b.Connect(23) // 20 bytes per write
	c.EnableNotifications()
	ok(t, cp(t, c, dfu.SetPRNRequest(3)))
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectCommand, uint32(len(img.InitPacket.Raw)))))
	write(t, c, img.InitPacket.Raw)
	ok(t, cp(t, c, dfu.ExecuteRequest()))
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectData, 4096)))
	notes := write(t, c, fw[:200]) // 10 writes: receipts after 3, 6, 9
	if len(notes) != 3 {
		t.Fatalf("%d receipts for 10 writes at PRN 3", len(notes))
	}
	r, err := dfu.ParseResponse(notes[2])
	if err != nil || r.Op != dfu.OpCRC || r.Offset != 180 || r.CRC != crc32.ChecksumIEEE(fw[:180]) {
		t.Fatalf("third receipt: %+v, %v", r, err)
	}
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectData, 4096)))
	if notes := write(t, c, fw[:40]); len(notes) != 0 {
		t.Fatal("the count did not restart at Create")
	}
	ok(t, cp(t, c, dfu.SetPRNRequest(0)))
	if notes := write(t, c, fw[40:400]); len(notes) != 0 {
		t.Fatal("receipts with PRN 0")
	}
}

// TestHashFailureResets: an image whose hash does not match is refused at
// the last Execute and the transfer starts over.
func TestHashFailureResets(t *testing.T) {
	fw := bytes.Repeat([]byte{9}, 3000)
	img := pkg(t, fw)
	b := target.New(target.Options{Key: &key(t).PublicKey, Device: lock, Firmware: []byte("old")})
	c := b.Connect(247)
	c.EnableNotifications()
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectCommand, uint32(len(img.InitPacket.Raw)))))
	write(t, c, img.InitPacket.Raw)
	ok(t, cp(t, c, dfu.ExecuteRequest()))
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectData, 3000)))
	bad := bytes.Clone(fw)
	bad[0] = 8
	write(t, c, bad)
	r := cp(t, c, dfu.ExecuteRequest())
	if r.Result != dfu.ResExtError || r.Ext != dfu.ExtVerificationFailed {
		t.Fatalf("bad image: %s %s", r.Result, r.Ext)
	}
	if active, _ := b.Active(); string(active) != "old" {
		t.Fatal("the bad image was activated")
	}
	if cmd, off := b.Progress(); cmd != 0 || off != 0 {
		t.Fatalf("progress kept after the failure: %d, %d", cmd, off)
	}
}

// TestResetReturnsToLastExecute: a reboot in the middle of an object
// returns the offset and CRC to the last executed object (the settings
// page), keeps the executed init packet, and ends the connection; a reboot
// before the init packet's Execute forgets it.
func TestResetReturnsToLastExecute(t *testing.T) {
	fw := bytes.Repeat([]byte("abcdefgh"), 1000)
	img := pkg(t, fw)
	b := target.New(target.Options{Key: &key(t).PublicKey, Device: lock})
	c := b.Connect(247)
	c.EnableNotifications()
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectCommand, uint32(len(img.InitPacket.Raw)))))
	write(t, c, img.InitPacket.Raw[:50])
	b.Reset()
	if cmd, _ := b.Progress(); cmd != 0 || !c.Closed() {
		t.Fatalf("reset before Execute kept %d init packet bytes (closed %v)", cmd, c.Closed())
	}
	c = b.Connect(247)
	c.EnableNotifications()
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectCommand, uint32(len(img.InitPacket.Raw)))))
	write(t, c, img.InitPacket.Raw)
	ok(t, cp(t, c, dfu.ExecuteRequest()))
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectData, 4096)))
	write(t, c, fw[:4096])
	ok(t, cp(t, c, dfu.ExecuteRequest()))
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectData, 3904)))
	write(t, c, fw[4096:6000])
	b.Reset()
	c = b.Connect(247)
	c.EnableNotifications()
	r := ok(t, cp(t, c, dfu.SelectRequest(dfu.ObjectData)))
	if r.Offset != 4096 || r.CRC != crc32.ChecksumIEEE(fw[:4096]) {
		t.Fatalf("after reset: offset %d", r.Offset)
	}
	if r := ok(t, cp(t, c, dfu.SelectRequest(dfu.ObjectCommand))); r.Offset != uint32(len(img.InitPacket.Raw)) {
		t.Fatalf("init packet after reset: %d bytes", r.Offset)
	}
	ok(t, cp(t, c, dfu.ExecuteRequest())) // the executed init packet stays valid
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectData, 3904)))
	write(t, c, fw[4096:])
	ok(t, cp(t, c, dfu.ExecuteRequest()))
	if active, _ := b.Active(); !bytes.Equal(active, fw) {
		t.Fatal("not activated after the reset")
	}
}
