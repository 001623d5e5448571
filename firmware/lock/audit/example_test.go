package audit

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/lock/flash"
)

// The worked example of docs/protocol.md §14.6: lock a1b2c3d4e5f60718
// boots, op-alice's session opens, op-alice unlocks. This test keeps the
// document's hex true.
var workedExample = struct {
	genesis  string
	entries  [3]string
	hashes   [3]string
	page     string
	header   string // page 0's header
	metaRec  string // the meta record, first record of page 0
	entryRec string // the flash record of entry 0, right after it
}{
	genesis: "fa6f47854fe6edfa5ba64f4ff548ff6f76c5730f836282fe3b7ecef9b8969064",
	entries: [3]string{
		"a80100021a6955b90003010440050006400700085820fa6f47854fe6edfa5ba64f4ff548ff6f76c5730f836282fe3b7ecef9b8969064",
		"a80101021a6955b905030304482d7db64b533b7af1050006400700085820cde2b597041b5f8f8c4aa79ebb30f0da64f5e2a9f12f423fc9bf68c467642fad",
		"a80102021a6955b906030504482d7db64b533b7af105020650000102030405060708090a0b0c0d0e0f070008582017419e12c87abe5738b0f654b1da7b8b09318548502fd7774159fe9e81cd307a",
	},
	hashes: [3]string{
		"cde2b597041b5f8f8c4aa79ebb30f0da64f5e2a9f12f423fc9bf68c467642fad",
		"17419e12c87abe5738b0f654b1da7b8b09318548502fd7774159fe9e81cd307a",
		"4d10df13e8fb45f22bb93aa248f5818d871af3af991818e65eb63509e57d17a4",
	},
	page: "a4010002030383" +
		"a80100021a6955b90003010440050006400700085820fa6f47854fe6edfa5ba64f4ff548ff6f76c5730f836282fe3b7ecef9b8969064" +
		"a80101021a6955b905030304482d7db64b533b7af1050006400700085820cde2b597041b5f8f8c4aa79ebb30f0da64f5e2a9f12f423fc9bf68c467642fad" +
		"a80102021a6955b906030504482d7db64b533b7af105020650000102030405060708090a0b0c0d0e0f070008582017419e12c87abe5738b0f654b1da7b8b09318548502fd7774159fe9e81cd307a" +
		"0458204d10df13e8fb45f22bb93aa248f5818d871af3af991818e65eb63509e57d17a4",
	header:  "4c434b4601000000ffffffffffff0c08000000006ed2e06300000000ffffffff",
	metaRec: "ff1f090000000000655cb7cba30101021901000300ffffff",
	entryRec: "0010360001000000aa480b08" +
		"a80100021a6955b90003010440050006400700085820fa6f47854fe6edfa5ba64f4ff548ff6f76c5730f836282fe3b7ecef9b8969064ffff",
}

func TestWorkedExample(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flash.img")
	st, err := flash.Open(path, flash.Options{})
	must(t, err)
	l, err := Open(st, Options{LockID: lockA, Now: func() time.Time { return t0 }})
	must(t, err)
	cid := make([]byte, 16)
	for i := range cid {
		cid[i] = byte(i)
	}
	alice := kid("op-alice")
	for _, e := range []Entry{
		{Event: EventBoot},
		{Time: uint64(t0.Unix()) + 5, Event: EventHandshakeOK, Actor: alice},
		{Time: uint64(t0.Unix()) + 6, Event: EventCommandOK, Actor: alice, Op: 2, CommandID: cid},
	} {
		if _, err := l.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s =\n%s\nwant\n%s", what, got, want)
		}
	}
	check("genesis", hex.EncodeToString(Genesis(lockA)), workedExample.genesis)
	p, err := l.Page(0, 16)
	must(t, err)
	for i, e := range p.Entries {
		b, err := e.Encode()
		must(t, err)
		check("entry", hex.EncodeToString(b), workedExample.entries[i])
		check("hash", hex.EncodeToString(e.Hash()), workedExample.hashes[i])
	}
	b, err := EncodePage(p)
	must(t, err)
	check("page", hex.EncodeToString(b), workedExample.page)
	if _, err := Verify(Genesis(lockA), p); err != nil {
		t.Fatal(err)
	}

	must(t, st.Close())
	// The flash: page 0's header, then the meta record, then entry 0.
	img, err := os.ReadFile(path)
	must(t, err)
	const metaLen = 12 + 12 // header + 9 bytes of CBOR padded to 12
	check("meta record", hex.EncodeToString(img[32:32+metaLen]), workedExample.metaRec)
	entryLen := 12 + (len(workedExample.entries[0])/2+3)/4*4
	check("entry 0 record", hex.EncodeToString(img[32+metaLen:32+metaLen+entryLen]), workedExample.entryRec)
	check("page header", hex.EncodeToString(img[:32]), workedExample.header)
}
