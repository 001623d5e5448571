package lock

import (
	"testing"

	"github.com/gatewayd/gatewayd/firmware/command"
)

// fakeBootloader records what the lock asks of its bootloader.
type fakeBootloader struct {
	hashes [][32]byte
	resets int
}

func (f *fakeBootloader) AuthoriseDFU(h [32]byte) error { f.hashes = append(f.hashes, h); return nil }
func (f *fakeBootloader) ResetIntoBootloader()          { f.resets++ }

// TestEnterDFUHandle: an accepted enter-dfu hands the named hash to the
// bootloader and makes the lock answer nothing more but internal until it
// resets; a lock without a bootloader refuses it with internal, its
// counter spent.
func TestEnterDFUHandle(t *testing.T) {
	bl := &fakeBootloader{}
	e := newEnv(t, func(o *Options) { o.Bootloader = bl })
	hash := make([]byte, 32)
	hash[0], hash[31] = 0xaa, 0x55
	req := command.Request{Op: command.OpEnterDFU, RequestID: 1,
		Signed: e.sign(e.admin, e.body(command.OpEnterDFU, command.Args{InitHash: hash}))}
	b, err := command.MarshalRequest(&req)
	if err != nil {
		t.Fatal(err)
	}
	res, err := command.ParseResult(command.OpEnterDFU, e.lock.Handle(e.gateway.Cert, Peer{Address: gwAddr}, b))
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, res, command.StatusOK)
	if len(bl.hashes) != 1 || bl.hashes[0][0] != 0xaa || bl.hashes[0][31] != 0x55 || !e.lock.Resetting() {
		t.Fatalf("bootloader got %x, resetting %v", bl.hashes, e.lock.Resetting())
	}
	if bl.resets != 0 {
		t.Fatal("Handle reset the lock before its result was sent")
	}
	st, _ := command.MarshalRequest(&command.Request{Op: command.OpStatus, RequestID: 2})
	res, err = command.ParseResult(command.OpStatus, e.lock.Handle(e.gateway.Cert, Peer{Address: gwAddr}, st))
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, res, command.StatusInternal)

	none := e.fresh(t)
	none.opts.Bootloader = nil
	none.boot()
	c := none.mustConnect(none.gateway, gwAddr)
	r := do(t, c, command.Request{Op: command.OpEnterDFU, Signed: none.sign(none.admin, none.body(command.OpEnterDFU, command.Args{InitHash: hash}))})
	wantStatus(t, r, command.StatusInternal)
	if none.lock.Resetting() {
		t.Fatal("a lock without a bootloader is resetting")
	}
}
