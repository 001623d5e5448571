package device_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/firmware/dfu"
	"github.com/gatewayd/gatewayd/firmware/dfu/controller"
	"github.com/gatewayd/gatewayd/firmware/dfu/dfutest"
	"github.com/gatewayd/gatewayd/firmware/dfu/target"
	"github.com/gatewayd/gatewayd/firmware/lock"
	"github.com/gatewayd/gatewayd/firmware/lock/audit"
	"github.com/gatewayd/gatewayd/firmware/lock/device"
)

// TestUpdateEndToEnd: the gateway's client sends an admin-signed
// enter-dfu over the secure channel; the lock answers ok, records it,
// ends the connection and advertises as its bootloader at address+1; the
// controller sends the package to the bootloader, which activates it;
// the lock boots the new image and status reports its version.
func TestUpdateEndToEnd(t *testing.T) {
	e := newEnv(t, nil)
	e.runs(oldImage, oldVer)
	if a := e.dev.Advertising(); a.Mode != device.ModeApplication || a.Address != lockAddr || a.Name != "" {
		t.Fatalf("advertising %+v before entry", a)
	}
	fw := newImage(20_000, 0x5a)
	img := e.pkg(newVer, fw, nil)

	s := e.connect(e.gateway)
	r := e.enterDFU(s, e.admin, img)
	wantStatus(t, r, command.StatusOK)
	if len(r.CommandID) != 16 || r.Signature == nil {
		t.Fatalf("enter-dfu result not bound to its command: id %x, signed %v", r.CommandID, r.Signature != nil)
	}
	if _, err := s.c.Status(ctx(t)); err == nil {
		t.Fatal("the application still answers after its reset")
	}
	if a := e.dev.Advertising(); a.Mode != device.ModeBootloader || a.Address != "DC:A6:32:01:02:04" || a.Name != device.BootloaderName {
		t.Fatalf("advertising %+v after entry, want the bootloader at address+1", a)
	}
	if _, err := e.dev.Lock(); !errors.Is(err, device.ErrInBootloader) {
		t.Fatalf("Lock() in DFU mode: %v", err)
	}
	h := img.InitHash()
	bl, _ := e.dev.Bootloader()
	if !bytes.Equal(bl.Authorised(), h[:]) {
		t.Fatal("the bootloader's settings do not hold the named init packet's hash")
	}
	if _, err := e.transfer(img); err != nil {
		t.Fatalf("transfer: %v", err)
	}
	e.runs(fw, newVer)
	if got := e.events(audit.EventDFUEntered); len(got) != 1 || got[0].Op != uint8(command.OpEnterDFU) ||
		!bytes.Equal(got[0].Actor, e.admin.Cert.KID) || !bytes.Equal(got[0].CommandID, r.CommandID) {
		t.Fatalf("audit dfu_entered entries: %+v", got)
	}
	if boots := e.events(audit.EventBoot); len(boots) != 2 {
		t.Fatalf("%d boot entries, want 2 (before and after the update)", len(boots))
	}
}

func TestBootloaderAddress(t *testing.T) {
	for in, want := range map[string]string{
		"DC:A6:32:01:02:03": "DC:A6:32:01:02:04",
		"DC:A6:32:01:02:FF": "DC:A6:32:01:02:00", // addr[0] += 1: no carry
		"00:00:00:00:00:0F": "00:00:00:00:00:10",
	} {
		if got := device.BootloaderAddress(in); got != want {
			t.Errorf("BootloaderAddress(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestAttackEnterDFUByNonAdmin: an operator, and an admin restricted
// below its role's cap, cannot send the lock into its bootloader.
func TestAttackEnterDFUByNonAdmin(t *testing.T) {
	e := newEnv(t, nil)
	img := e.pkg(newVer, newImage(5000, 1), nil)
	limited := e.fleet.Issue(t, cred.Claims{Subject: "admin-users-only", Kind: cred.KindOperator, Role: cred.RoleAdmin,
		Perms: cred.PermAddUser | cred.PermRemoveUser | cred.PermListUsers})
	s := e.connect(e.gateway)
	for _, p := range []channeltest.Party{e.operator, limited} {
		wantStatus(t, e.enterDFU(s, p, img), command.StatusForbidden)
	}
	e.stillApplication(0)
}

// TestAttackEnterDFUUnsignedOrForeign: enter-dfu without a signature
// (from the gateway, or from an admin's own session), or signed by
// another fleet's admin, is refused.
func TestAttackEnterDFUUnsignedOrForeign(t *testing.T) {
	e := newEnv(t, nil)
	img := e.pkg(newVer, newImage(5000, 1), nil)
	h := img.InitHash()
	for _, p := range []channeltest.Party{e.gateway, e.admin} {
		r, err := e.connect(p).c.Do(ctx(t), command.Request{Op: command.OpEnterDFU, Args: command.Args{InitHash: h[:]}})
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, r, command.StatusForbidden)
	}
	rogue := channeltest.NewFleet(t, "rogue")
	mallory := rogue.Operator(t, "mallory", cred.RoleAdmin)
	wantStatus(t, e.enterDFU(e.connect(e.gateway), mallory, img), command.StatusSignerRejected)
	e.stillApplication(0)
}

// TestAttackEnterDFUReplayed: a recorded enter-dfu sent again runs never
// twice: the same command is a duplicate, its counter under a new command
// ID a replay; the lock stays in its application.
func TestAttackEnterDFUReplayed(t *testing.T) {
	e := newEnv(t, nil)
	img := e.pkg(newVer, newImage(5000, 1), nil)
	h := img.InitHash()
	b := e.body(command.OpEnterDFU, command.Args{InitHash: h[:]})
	signed := e.sign(e.admin, b)
	s := e.connect(e.gateway)
	r, err := s.c.EnterDFU(ctx(t), signed)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, r, command.StatusOK)
	e.waitReset(s, r)
	// The lock is in its bootloader; the transfer never comes and the
	// bootloader's inactivity timeout (a reset) boots the application.
	if err := e.dev.PowerCut(); err != nil {
		t.Fatal(err)
	}
	s = e.connect(e.gateway)
	r, err = s.c.EnterDFU(ctx(t), signed)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, r, command.StatusDuplicateCommand)
	b.CommandID[0] ^= 0xff
	r, err = s.c.EnterDFU(ctx(t), e.sign(e.admin, b))
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, r, command.StatusReplay)
	e.stillApplication(1) // the first, genuine entry only
}

// TestAttackEnterDFUWhileUnlocked: a bike in use (bolt open), or one
// whose battery is below the floor, does not go into its bootloader,
// whoever signed.
func TestAttackEnterDFUWhileUnlocked(t *testing.T) {
	e := newEnv(t, nil)
	img := e.pkg(newVer, newImage(5000, 1), nil)
	s := e.connect(e.gateway)
	r, err := s.c.Signed(ctx(t), command.OpUnlock, e.sign(e.operator, e.body(command.OpUnlock, command.Args{})))
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, r, command.StatusOK)
	r = e.enterDFU(s, e.admin, img)
	wantStatus(t, r, command.StatusNotReady)
	if r.LockState != command.StateUnlocked {
		t.Fatalf("lock state %v", r.LockState)
	}
	e.stillApplication(0)

	r, err = s.c.Signed(ctx(t), command.OpLock, e.sign(e.operator, e.body(command.OpLock, command.Args{})))
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, r, command.StatusOK)
	e.setBattery(lock.DefaultDFUBatteryFloor - 1)
	wantStatus(t, e.enterDFU(s, e.admin, img), command.StatusNotReady)
	e.stillApplication(0)
	// Charged again, the same admin gets in.
	e.setBattery(lock.DefaultDFUBatteryFloor)
	wantStatus(t, e.enterDFU(s, e.admin, img), command.StatusOK)
	if e.dev.Mode() != device.ModeBootloader {
		t.Fatal("not in the bootloader after an accepted enter-dfu")
	}
}

// stillApplication checks the lock runs its application, its bootloader
// unreachable, and that its audit log holds entered dfu_entered entries.
func (e *env) stillApplication(entered int) {
	e.t.Helper()
	if m := e.dev.Mode(); m != device.ModeApplication {
		e.t.Fatalf("mode %v, want application", m)
	}
	if _, err := e.dev.Bootloader(); !errors.Is(err, device.ErrNotInBootloader) {
		e.t.Fatalf("Bootloader() = %v, want ErrNotInBootloader", err)
	}
	if got := e.events(audit.EventDFUEntered); len(got) != entered {
		e.t.Fatalf("dfu_entered recorded: %+v", got)
	}
}

// TestAttackPackageOtherThanAuthorised: enter-dfu named one package; the
// bootloader refuses another, though signed by the fleet's DFU key, at
// its init packet (operation not permitted), and the lock keeps its
// firmware. The authorised one then goes through.
func TestAttackPackageOtherThanAuthorised(t *testing.T) {
	e := newEnv(t, nil)
	named := e.pkg(newVer, newImage(9000, 1), nil)
	other := e.pkg(newVer+1, newImage(9000, 2), nil)
	wantStatus(t, e.enterDFU(e.connect(e.gateway), e.admin, named), command.StatusOK)
	_, err := e.transfer(other)
	var re *dfu.ResponseError
	if !errors.As(err, &re) || re.Result != dfu.ResNotPermitted {
		t.Fatalf("transfer of another package: %v, want operation not permitted", err)
	}
	if bl, _ := e.dev.Bootloader(); bl == nil || bl.Activations() != 0 {
		t.Fatal("the bootloader left DFU mode or activated something")
	}
	if img, v := e.dev.Firmware(); !bytes.Equal(img, oldImage) || v != oldVer {
		t.Fatal("the running image changed")
	}
	if _, err := e.transfer(named); err != nil {
		t.Fatalf("transfer of the named package: %v", err)
	}
	e.runs(named.Firmware, newVer)
}

// TestAttackBootloaderWithoutEnterDFU: without enter-dfu the bootloader
// is not there to connect to, the lock has no buttonless DFU, DFU mode
// does not outlive a reset, and the fleet's bootloader build, reached by
// any other path (an application it cannot boot), executes no init
// packet that no enter-dfu named.
func TestAttackBootloaderWithoutEnterDFU(t *testing.T) {
	e := newEnv(t, nil)
	img := e.pkg(newVer, newImage(5000, 1), nil)
	if _, err := e.transfer(img); !errors.Is(err, device.ErrNotInBootloader) {
		t.Fatalf("transfer without enter-dfu: %v", err)
	}
	if err := e.dev.Buttonless(); !errors.Is(err, device.ErrNoButtonless) {
		t.Fatalf("Buttonless: %v", err)
	}
	// Entered once, reset before any transfer: DFU mode is gone.
	wantStatus(t, e.enterDFU(e.connect(e.gateway), e.admin, img), command.StatusOK)
	if err := e.dev.PowerCut(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.transfer(img); !errors.Is(err, device.ErrNotInBootloader) {
		t.Fatalf("transfer after a reset: %v", err)
	}
	// The bootloader itself, with no authorised hash.
	bl := target.New(target.Options{Key: &e.key.PublicKey, RequireAuthorisation: true, Firmware: oldImage,
		Device: dfu.Device{HWVersion: 52, SoftDeviceFWID: 0x0101, AppVersion: oldVer, BootloaderVersion: 1}})
	_, err := controller.New(controller.Options{}).Send(ctx(t), dfutest.Connect(bl, 247), img)
	var re *dfu.ResponseError
	if !errors.As(err, &re) || re.Result != dfu.ResNotPermitted || bl.Activations() != 0 {
		t.Fatalf("unauthorised bootloader: %v after %d activations, want operation not permitted", err, bl.Activations())
	}
}

// TestPowerCutDuringActivation: the power fails at each step of
// activation; the lock boots either its old image or the new one, whole,
// never half of one, and the update completes: by itself once committed,
// or, cut before, after a new enter-dfu for the same package, which
// resumes from the bootloader's saved progress.
func TestPowerCutDuringActivation(t *testing.T) {
	for _, p := range target.CutPoints {
		t.Run(p.String(), func(t *testing.T) {
			cut := false
			e := newEnv(t, func(at target.CutPoint) bool {
				if at == p && !cut {
					cut = true
					return true
				}
				return false
			})
			fw := newImage(3*dfu.MaxDataObject+100, 0x33)
			img := e.pkg(newVer, fw, nil)
			wantStatus(t, e.enterDFU(e.connect(e.gateway), e.admin, img), command.StatusOK)
			_, err := e.transfer(img)
			if !cut {
				t.Fatalf("the power was not cut at %v", p)
			}
			t.Logf("transfer: %v", err)
			if p == target.CutBeforeCommit {
				// Not committed: the old image runs, whole.
				e.runs(oldImage, oldVer)
				wantStatus(t, e.enterDFU(e.connect(e.gateway), e.admin, img), command.StatusOK)
				link, err := e.transfer(img)
				if err != nil {
					t.Fatalf("resumed transfer: %v", err)
				}
				if link.PacketBytes > dfu.MaxDataObject {
					t.Fatalf("the resume sent %d bytes, more than the last object", link.PacketBytes)
				}
			}
			e.runs(fw, newVer)
		})
	}
}

// TestPowerCutDuringTransfer: the power fails in the middle of the
// transfer (every object boundary and inside objects); the lock boots
// its old image, and a new enter-dfu for the same package resumes where
// the bootloader's settings page stood.
func TestPowerCutDuringTransfer(t *testing.T) {
	fw := newImage(3*dfu.MaxDataObject+100, 0x44)
	for _, after := range []int{100, 1000, dfu.MaxDataObject + 400, 2*dfu.MaxDataObject + 2000, 3 * dfu.MaxDataObject} {
		e := newEnv(t, nil)
		img := e.pkg(newVer, fw, nil)
		wantStatus(t, e.enterDFU(e.connect(e.gateway), e.admin, img), command.StatusOK)
		bl, err := e.dev.Bootloader()
		if err != nil {
			t.Fatal(err)
		}
		link := dfutest.Connect(bl, 247)
		link.DropAfter = after
		if _, err := controller.New(controller.Options{}).Send(ctx(t), link, img); err == nil {
			t.Fatalf("cut after %d bytes: the transfer completed", after)
		}
		if err := e.dev.PowerCut(); err != nil {
			t.Fatal(err)
		}
		e.runs(oldImage, oldVer)
		wantStatus(t, e.enterDFU(e.connect(e.gateway), e.admin, img), command.StatusOK)
		link2, err := e.transfer(img)
		if err != nil {
			t.Fatalf("cut after %d bytes: resumed transfer: %v", after, err)
		}
		// The settings page held the objects executed before the cut
		// (DropAfter counts the init packet's bytes too): only the rest
		// is sent again.
		saved := max(after-len(img.InitPacket.Raw), 0) / dfu.MaxDataObject * dfu.MaxDataObject
		if most := len(fw) - saved + len(img.InitPacket.Raw); link2.PacketBytes > most {
			t.Fatalf("cut after %d bytes: the resume sent %d bytes, want at most %d", after, link2.PacketBytes, most)
		}
		e.runs(fw, newVer)
	}
}

// cutLink cuts the lock's power at its step-th write (Control Point
// request or Packet write, counted from 0) instead of making it.
type cutLink struct {
	*dfutest.Link
	dev   *device.Device
	step  int
	steps int
	cut   bool
}

func (c *cutLink) at() error {
	c.steps++
	if c.steps-1 != c.step {
		return nil
	}
	c.cut = true
	if err := c.dev.PowerCut(); err != nil {
		return err
	}
	return errors.New("power cut")
}

func (c *cutLink) WriteControlPoint(ctx context.Context, req []byte) error {
	if err := c.at(); err != nil {
		return err
	}
	return c.Link.WriteControlPoint(ctx, req)
}

func (c *cutLink) WritePacket(ctx context.Context, data []byte) error {
	if err := c.at(); err != nil {
		return err
	}
	return c.Link.WritePacket(ctx, data)
}

// TestPowerCutAtEveryStep: the power fails before each write of a whole
// update, one run per write; each time the lock boots its old image or
// the new one, whole, and a new enter-dfu for the same package finishes
// the update.
func TestPowerCutAtEveryStep(t *testing.T) {
	fw := newImage(2*dfu.MaxDataObject+500, 0x66)
	for step := 0; ; step++ {
		e := newEnv(t, nil)
		img := e.pkg(newVer, fw, nil)
		wantStatus(t, e.enterDFU(e.connect(e.gateway), e.admin, img), command.StatusOK)
		bl, err := e.dev.Bootloader()
		if err != nil {
			t.Fatal(err)
		}
		link := &cutLink{Link: dfutest.Connect(bl, 247), dev: e.dev, step: step}
		_, err = controller.New(controller.Options{PRN: 4}).Send(ctx(t), link, img)
		if !link.cut {
			if err != nil {
				t.Fatalf("uncut transfer: %v", err)
			}
			e.runs(fw, newVer)
			t.Logf("%d steps, each cut once", step)
			if step < 20 {
				t.Fatalf("only %d steps", step)
			}
			return
		}
		if err == nil {
			t.Fatalf("step %d: the transfer succeeded through a power cut", step)
		}
		if e.dev.Mode() != device.ModeApplication {
			t.Fatalf("step %d: mode %v after the power cut", step, e.dev.Mode())
		}
		if img, _ := e.dev.Firmware(); !bytes.Equal(img, oldImage) {
			t.Fatalf("step %d: the lock runs %d bytes, not its old image", step, len(img))
		}
		e.runs(oldImage, oldVer)
		wantStatus(t, e.enterDFU(e.connect(e.gateway), e.admin, img), command.StatusOK)
		if _, err := e.transfer(img); err != nil {
			t.Fatalf("step %d: resumed transfer: %v", step, err)
		}
		e.runs(fw, newVer)
	}
}
