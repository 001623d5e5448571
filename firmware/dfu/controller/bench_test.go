package controller_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/dfu/controller"
	"github.com/gatewayd/gatewayd/firmware/dfu/dfutest"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
)

// BenchmarkTransfer100KB sends a 100 KB image to the reference bootloader
// over the in-process link with dfutest's 1M PHY link model. Reported:
// ns/op, the gateway's (and the bootloader's) CPU per transfer in
// process; model-s, the modelled transfer time; x-bound, that time over
// the bound of back-to-back full Packet writes (init packet and image, no
// round trips) on the same model: the cost of the protocol's round trips
// (three per 4096-byte object, one per receipt).
func BenchmarkTransfer100KB(b *testing.B) {
	img := image(b, func(s *dfu.Spec) { s.Images[0].Firmware = firmware(100_000) })
	for _, c := range []struct{ mtu, prn int }{{23, -1}, {23, 12}, {247, -1}, {247, 12}, {247, 4}} {
		b.Run(fmt.Sprintf("mtu%d/prn%d", c.mtu, max(c.prn, 0)), func(b *testing.B) {
			ctl := controller.New(controller.Options{PRN: c.prn})
			var elapsed, bound time.Duration
			for b.Loop() {
				bl := target.New(target.Options{Key: &key(b, "fleet").PublicKey, Device: lock, Firmware: oldFirmware})
				link := dfutest.Connect(bl, c.mtu)
				link.Model = dfutest.Model1M(link.ATTMTU())
				if _, err := ctl.Send(ctx(b), link, img); err != nil {
					b.Fatal(err)
				}
				elapsed = link.Elapsed()
				bound = link.Model.Bound(len(img.Firmware)+len(img.InitPacket.Raw), link.ATTMTU())
			}
			b.ReportMetric(elapsed.Seconds(), "model-s")
			b.ReportMetric(float64(elapsed)/float64(bound), "x-bound")
		})
	}
}
