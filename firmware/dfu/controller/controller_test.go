package controller_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/dfu/controller"
	"github.com/gatewayd/gatewayd/firmware/dfu/dfutest"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
)

func key(t testing.TB, label string) *ecdsa.PrivateKey {
	t.Helper()
	d := sha256.Sum256([]byte("dfu test key: " + label))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var lock = dfu.Device{HWVersion: 52, SoftDeviceFWID: 0x0101, AppVersion: 2, BootloaderVersion: 1}

func firmware(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + i>>9)
	}
	return b
}

var oldFirmware = []byte("the lock's firmware before the update")

// image builds, parses and (unless the test attacks the bootloader)
// verifies an application package.
func image(t testing.TB, edit func(*dfu.Spec)) *dfu.Image {
	t.Helper()
	s := dfu.Spec{
		Key: key(t, "fleet"), HWVersion: 52, SDReq: []uint32{0x0101},
		Images: []dfu.ImageSpec{{Kind: dfu.KindApplication, Name: "app", Firmware: firmware(20_000), FWVersion: 3}},
	}
	if edit != nil {
		edit(&s)
	}
	data, err := dfu.Generate(s)
	if err != nil {
		t.Fatal(err)
	}
	p, err := dfu.Parse(data, dfu.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Images[0]
}

func bootloader(t testing.TB) *target.Bootloader {
	return target.New(target.Options{Key: &key(t, "fleet").PublicKey, Device: lock, Firmware: oldFirmware})
}

func ctx(t testing.TB) context.Context {
	// A safety net only: every step is synchronous in process.
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func updated(t *testing.T, b *target.Bootloader, fw []byte, version uint32) {
	t.Helper()
	active, dev := b.Active()
	if !bytes.Equal(active, fw) || dev.AppVersion != version || b.Activations() != 1 {
		t.Fatalf("lock runs %d bytes at version %d after %d activations; want the new image at %d", len(active), dev.AppVersion, b.Activations(), version)
	}
}

func unchanged(t *testing.T, b *target.Bootloader) {
	t.Helper()
	active, dev := b.Active()
	if !bytes.Equal(active, oldFirmware) || dev.AppVersion != lock.AppVersion || b.Activations() != 0 {
		t.Fatalf("the lock's firmware changed: %d bytes at version %d", len(active), dev.AppVersion)
	}
}

// TestFullUpdate: a whole update at the smallest and largest ATT MTU, with
// and without receipt notifications (PRN -1: off, 0: the default): the lock runs the new image at the
// new version, the link ends with the bootloader's reset, and every
// Packet write is ATT_MTU-3 bytes but the last of each object.
func TestFullUpdate(t *testing.T) {
	img := image(t, nil)
	for _, c := range []struct{ mtu, prn int }{{23, -1}, {23, 0}, {247, -1}, {247, 4}, {185, 1}} {
		b := bootloader(t)
		link := dfutest.Connect(b, c.mtu)
		st, err := controller.New(controller.Options{PRN: c.prn}).Send(ctx(t), link, img)
		if err != nil {
			t.Fatalf("MTU %d PRN %d: %v", c.mtu, c.prn, err)
		}
		updated(t, b, img.Firmware, 3)
		if !link.Conn().Closed() {
			t.Error("the bootloader did not reset after activation")
		}
		payload := link.ATTMTU() - 3
		objects := (len(img.Firmware) + dfu.MaxDataObject - 1) / dfu.MaxDataObject
		initWrites := (len(img.InitPacket.Raw) + payload - 1) / payload
		want := initWrites
		for o := 0; o < objects; o++ {
			n := min(dfu.MaxDataObject, len(img.Firmware)-o*dfu.MaxDataObject)
			want += (n + payload - 1) / payload
		}
		if st.PacketWrites != want || st.PacketBytes != len(img.Firmware)+len(img.InitPacket.Raw) {
			t.Errorf("MTU %d: %d writes of %d bytes, want %d writes of %d", c.mtu, st.PacketWrites, st.PacketBytes, want, len(img.Firmware)+len(img.InitPacket.Raw))
		}
		prn := c.prn
		if prn == 0 {
			prn = 12 // the default
		}
		if prn > 0 && st.Receipts < st.PacketWrites/prn-objects-1 {
			t.Errorf("PRN %d: %d receipts for %d writes", c.prn, st.Receipts, st.PacketWrites)
		}
		if prn < 0 && st.Receipts != 0 {
			t.Errorf("PRN off: %d receipts", st.Receipts)
		}
	}
}

// TestResumeAfterDropAt30Percent: the link drops when 30% of the image has
// gone; on a new connection, with a new controller (a restarted gateway),
// the transfer continues from the bootloader's offset and CRC, re-sending
// at most the object in flight, and the init packet is not sent again.
func TestResumeAfterDropAt30Percent(t *testing.T) {
	img := image(t, nil)
	for _, mtu := range []int{23, 247} {
		b := bootloader(t)
		c := controller.New(controller.Options{})
		first := dfutest.Connect(b, mtu)
		first.DropAfter = len(img.InitPacket.Raw) + len(img.Firmware)*30/100
		_, err := c.Send(ctx(t), first, img)
		if !errors.Is(err, controller.ErrDisconnected) {
			t.Fatalf("MTU %d: first attempt: %v, want ErrDisconnected", mtu, err)
		}
		unchanged(t, b)
		_, held := b.Progress()
		// A new controller, as after a gateway restart: resuming needs
		// nothing but what the bootloader reports.
		second := dfutest.Connect(b, mtu)
		st, err := controller.New(controller.Options{}).Send(ctx(t), second, img)
		if err != nil {
			t.Fatalf("MTU %d: resume: %v", mtu, err)
		}
		updated(t, b, img.Firmware, 3)
		if !st.InitResumed || st.ResumedAt != int(held) || held == 0 {
			t.Errorf("MTU %d: resumed init %v at %d, the bootloader held %d", mtu, st.InitResumed, st.ResumedAt, held)
		}
		if resent := first.PacketBytes + second.PacketBytes - len(img.Firmware) - len(img.InitPacket.Raw); resent < 0 || resent > dfu.MaxDataObject {
			t.Errorf("MTU %d: %d bytes sent twice, at most one object (%d) may be", mtu, resent, dfu.MaxDataObject)
		}
	}
}

// TestResumeAfterBootloaderReset: the link drops at 30% and the lock
// reboots (its inactivity timeout while the gateway restarts): the
// transfer resumes at the last executed object.
func TestResumeAfterBootloaderReset(t *testing.T) {
	img := image(t, nil)
	b := bootloader(t)
	first := dfutest.Connect(b, 247)
	first.DropAfter = len(img.InitPacket.Raw) + len(img.Firmware)*30/100
	if _, err := controller.New(controller.Options{}).Send(ctx(t), first, img); !errors.Is(err, controller.ErrDisconnected) {
		t.Fatalf("first attempt: %v", err)
	}
	b.Reset()
	st, err := controller.New(controller.Options{}).Send(ctx(t), dfutest.Connect(b, 247), img)
	if err != nil {
		t.Fatal(err)
	}
	if st.ResumedAt == 0 || st.ResumedAt%dfu.MaxDataObject != 0 || !st.InitResumed {
		t.Fatalf("resumed at %d (init %v), want the last object boundary", st.ResumedAt, st.InitResumed)
	}
	updated(t, b, img.Firmware, 3)
}

// TestResumeInsideInitPacket: a drop in the middle of the init packet
// resumes it from the bootloader's offset.
func TestResumeInsideInitPacket(t *testing.T) {
	img := image(t, nil)
	b := bootloader(t)
	c := controller.New(controller.Options{})
	first := dfutest.Connect(b, 23)
	first.DropAfter = 60
	if _, err := c.Send(ctx(t), first, img); !errors.Is(err, controller.ErrDisconnected) {
		t.Fatalf("first attempt: %v", err)
	}
	if off, _ := b.Progress(); off != 60 {
		t.Fatalf("bootloader holds %d init packet bytes, want 60", off)
	}
	second := dfutest.Connect(b, 23)
	st, err := c.Send(ctx(t), second, img)
	if err != nil {
		t.Fatal(err)
	}
	if !st.InitResumed || st.PacketBytes != len(img.InitPacket.Raw)-60+len(img.Firmware) {
		t.Fatalf("resumed %v, sent %d bytes", st.InitResumed, st.PacketBytes)
	}
	updated(t, b, img.Firmware, 3)
}

// TestResumeAfterEveryDrop: whichever byte the link drops at, repeated
// attempts finish the update with the right image.
func TestResumeAfterEveryDrop(t *testing.T) {
	img := image(t, func(s *dfu.Spec) { s.Images[0].Firmware = firmware(9000) })
	total := len(img.InitPacket.Raw) + len(img.Firmware)
	for drop := 1; drop < total; drop += 997 {
		b := bootloader(t)
		c := controller.New(controller.Options{PRN: 3})
		link := dfutest.Connect(b, 23)
		link.DropAfter = drop
		_, err := c.Send(ctx(t), link, img)
		for attempts := 0; err != nil; attempts++ {
			if !errors.Is(err, controller.ErrDisconnected) || attempts > 2 {
				t.Fatalf("drop at %d: %v", drop, err)
			}
			_, err = c.Send(ctx(t), dfutest.Connect(b, 23), img)
		}
		updated(t, b, img.Firmware, 3)
	}
}

// TestCorruptingLink: a write corrupted in transit is caught by the CRC and
// its object re-sent; a link that corrupts every time fails with ErrCRC
// and the lock keeps its firmware.
func TestCorruptingLink(t *testing.T) {
	img := image(t, nil)
	b := bootloader(t)
	link := dfutest.Connect(b, 247)
	link.Corrupt = func(n int, d []byte) []byte {
		if n == 40 {
			d[0] ^= 0x80
		}
		return d
	}
	if _, err := controller.New(controller.Options{}).Send(ctx(t), link, img); err != nil {
		t.Fatal(err)
	}
	updated(t, b, img.Firmware, 3)

	b = bootloader(t)
	link = dfutest.Connect(b, 247)
	link.Corrupt = func(n int, d []byte) []byte {
		if n > 5 {
			d[len(d)-1] ^= 1
		}
		return d
	}
	if _, err := controller.New(controller.Options{}).Send(ctx(t), link, img); !errors.Is(err, controller.ErrCRC) {
		t.Fatalf("always corrupting link: %v, want ErrCRC", err)
	}
	unchanged(t, b)
}

// refused runs a transfer of img that the bootloader must refuse with
// want, and checks the lock keeps its firmware.
func refused(t *testing.T, b *target.Bootloader, img *dfu.Image, want error) *dfu.ResponseError {
	t.Helper()
	link := dfutest.Connect(b, 247)
	_, err := controller.New(controller.Options{}).Send(ctx(t), link, img)
	if !errors.Is(err, dfu.ErrRefused) || !errors.Is(err, want) {
		t.Fatalf("got %v, want a refusal matching %v", err, want)
	}
	unchanged(t, b)
	var re *dfu.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("%v is not a *dfu.ResponseError", err)
	}
	return re
}

// TestAttackBootloaderRefusesCorruptedImage: an image changed after
// signing reaches the bootloader (a gateway that skipped Verify); the
// bootloader transfers it, then refuses it at the last Execute with hash
// mismatch, and keeps the old firmware.
func TestAttackBootloaderRefusesCorruptedImage(t *testing.T) {
	img := image(t, nil)
	img.Firmware = bytes.Clone(img.Firmware)
	img.Firmware[12345] ^= 0x01
	re := refused(t, bootloader(t), img, dfu.ErrHash)
	if re.Op != dfu.OpExecute || re.Result != dfu.ResExtError || re.Ext != dfu.ExtVerificationFailed {
		t.Fatalf("refusal %v", re)
	}
}

// TestAttackBootloaderRefusesWrongSignature: an init packet with a broken
// signature is refused at its Execute with invalid object; no firmware is
// accepted after it.
func TestAttackBootloaderRefusesWrongSignature(t *testing.T) {
	img := image(t, nil)
	ip := *img.InitPacket
	ip.Raw = bytes.Clone(ip.Raw)
	ip.Raw[len(ip.Raw)-5] ^= 0x10 // inside the signature, the packet's last field
	img.InitPacket = &ip
	re := refused(t, bootloader(t), img, dfu.ErrRefused)
	if re.Op != dfu.OpExecute || re.Result != dfu.ResInvalidObject {
		t.Fatalf("refusal %v, want invalid object at execute", re)
	}
}

// TestAttackBootloaderRefusesAnotherFleet: a package signed by another
// fleet's key is refused like a wrong signature.
func TestAttackBootloaderRefusesAnotherFleet(t *testing.T) {
	img := image(t, func(s *dfu.Spec) { s.Key = key(t, "another fleet") })
	if re := refused(t, bootloader(t), img, dfu.ErrRefused); re.Result != dfu.ResInvalidObject {
		t.Fatalf("refusal %v", re)
	}
}

// TestAttackBootloaderRefusesUnsigned: an unsigned init packet: signature
// missing.
func TestAttackBootloaderRefusesUnsigned(t *testing.T) {
	img := image(t, func(s *dfu.Spec) { s.Key = nil })
	refused(t, bootloader(t), img, dfu.ErrUnsigned)
}

// TestAttackBootloaderRefusesWrongHWVersion: a package for other hardware:
// extended error hardware version.
func TestAttackBootloaderRefusesWrongHWVersion(t *testing.T) {
	img := image(t, func(s *dfu.Spec) { s.HWVersion = 51 })
	if re := refused(t, bootloader(t), img, dfu.ErrHWVersion); re.Ext != dfu.ExtHWVersionFailure {
		t.Fatalf("refusal %v", re)
	}
}

// TestAttackBootloaderRefusesDowngrade: an older version, validly signed:
// extended error firmware version too low.
func TestAttackBootloaderRefusesDowngrade(t *testing.T) {
	img := image(t, func(s *dfu.Spec) { s.Images[0].FWVersion = 1 })
	if re := refused(t, bootloader(t), img, dfu.ErrDowngrade); re.Ext != dfu.ExtFWVersionFailure {
		t.Fatalf("refusal %v", re)
	}
}

// TestAttackBootloaderRefusesUnauthorisedPackage: a validly signed package
// that is not the one the enter-dfu command authorised is refused.
func TestAttackBootloaderRefusesUnauthorisedPackage(t *testing.T) {
	authorised := image(t, nil)
	other := image(t, func(s *dfu.Spec) { s.Images[0].FWVersion = 4 })
	sum := sha256.Sum256(authorised.InitPacket.Raw)
	b := target.New(target.Options{Key: &key(t, "fleet").PublicKey, Device: lock, Firmware: oldFirmware, AuthorisedInitHash: sum[:]})
	if re := refused(t, b, other, dfu.ErrRefused); re.Result != dfu.ResNotPermitted {
		t.Fatalf("refusal %v", re)
	}
	if _, err := controller.New(controller.Options{}).Send(ctx(t), dfutest.Connect(b, 247), authorised); err != nil {
		t.Fatalf("the authorised package: %v", err)
	}
	updated(t, b, authorised.Firmware, 3)
}

// TestSilentTarget: a target that never answers fails with ErrTimeout.
func TestSilentTarget(t *testing.T) {
	c := controller.New(controller.Options{ResponseTimeout: 10 * time.Millisecond})
	_, err := c.Send(ctx(t), silent{}, image(t, nil))
	if !errors.Is(err, controller.ErrTimeout) {
		t.Fatalf("%v, want ErrTimeout", err)
	}
}

type silent struct{}

func (silent) WriteControlPoint(context.Context, []byte) error { return nil }
func (silent) WritePacket(context.Context, []byte) error       { return nil }
func (silent) Notifications() <-chan []byte                    { return nil }
func (silent) ATTMTU() int                                     { return 23 }

// TestModelNeverBeatsBound: on dfutest's link model a transfer never takes
// less than the bound the benchmark divides by, and round trips (PRN 1:
// one per write) make it take longer.
func TestModelNeverBeatsBound(t *testing.T) {
	img := image(t, nil)
	var last time.Duration
	for _, prn := range []int{-1, 1} {
		b := bootloader(t)
		link := dfutest.Connect(b, 247)
		link.Model = dfutest.Model1M(link.ATTMTU())
		if _, err := controller.New(controller.Options{PRN: prn}).Send(ctx(t), link, img); err != nil {
			t.Fatal(err)
		}
		bound := link.Model.Bound(len(img.Firmware)+len(img.InitPacket.Raw), link.ATTMTU())
		if link.Elapsed() < bound || bound <= 0 {
			t.Fatalf("PRN %d: modelled %v, bound %v", prn, link.Elapsed(), bound)
		}
		if prn == 1 && link.Elapsed() <= last {
			t.Fatalf("a receipt per write costs nothing: %v vs %v", link.Elapsed(), last)
		}
		last = link.Elapsed()
	}
}
