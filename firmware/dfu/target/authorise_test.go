package target_test

import (
	"bytes"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
)

// TestAuthoriseKeepsOnlyItsProgress: authorising the init packet a
// transfer stands on keeps its progress (the transfer resumes);
// authorising another forgets it, so a transfer begun under one
// enter-dfu cannot go on under another's.
func TestAuthoriseKeepsOnlyItsProgress(t *testing.T) {
	fw := bytes.Repeat([]byte("12345678"), 1000)
	img := pkg(t, fw)
	h := img.InitHash()
	b := target.New(target.Options{Key: &key(t).PublicKey, Device: lock, RequireAuthorisation: true, AuthorisedInitHash: h[:]})
	c := b.Connect(247)
	c.EnableNotifications()
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectCommand, uint32(len(img.InitPacket.Raw)))))
	write(t, c, img.InitPacket.Raw)
	ok(t, cp(t, c, dfu.ExecuteRequest()))
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectData, 4096)))
	write(t, c, fw[:4096])
	ok(t, cp(t, c, dfu.ExecuteRequest()))

	b.Authorise(h[:])
	if cmd, off := b.Progress(); cmd != uint32(len(img.InitPacket.Raw)) || off != 4096 {
		t.Fatalf("the same authorisation lost progress: init %d, firmware %d", cmd, off)
	}
	b.Reset()
	other := make([]byte, 32)
	other[0] = 1
	b.Authorise(other)
	if cmd, off := b.Progress(); cmd != 0 || off != 0 {
		t.Fatalf("another authorisation kept progress: init %d, firmware %d", cmd, off)
	}
	b.Reset() // the settings page forgot it too
	if cmd, off := b.Progress(); cmd != 0 || off != 0 {
		t.Fatalf("progress back after a reset: init %d, firmware %d", cmd, off)
	}
	c = b.Connect(247)
	c.EnableNotifications()
	ok(t, cp(t, c, dfu.CreateRequest(dfu.ObjectCommand, uint32(len(img.InitPacket.Raw)))))
	write(t, c, img.InitPacket.Raw)
	if r := cp(t, c, dfu.ExecuteRequest()); r.Result != dfu.ResNotPermitted {
		t.Fatalf("the init packet no longer authorised: %s, want operation not permitted", r.Result)
	}
	if !bytes.Equal(b.Authorised(), other) {
		t.Fatal("Authorised() is not the last authorisation")
	}
}
