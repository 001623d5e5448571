package dfuvectors

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/gatewayd/gatewayd/firmware/dfu"
)

const testdata = "../../testdata/dfu"

// TestCommittedVectors fails when firmware/testdata/dfu drifts from what
// the code produces. After a deliberate change: go run ./firmware/cmd/gendfu
func TestCommittedVectors(t *testing.T) {
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(testdata, name))
		if err != nil {
			t.Fatalf("%s: %v (run: go run ./firmware/cmd/gendfu)", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("firmware/testdata/dfu/%s drifted from the code; if the change is deliberate, run: go run ./firmware/cmd/gendfu", name)
		}
	}
}

// TestVectorsStandAlone checks the committed files with nothing but what
// they publish: the package verifies under the published nRF-encoded key
// for the published lock, its images are the ones listed, and the valid
// init packet case is the package's own.
func TestVectorsStandAlone(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testdata, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v Vectors
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	zipBytes, err := os.ReadFile(filepath.Join(testdata, v.Package))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := dfu.ParseNRFPublicKey(v.Key.PublicNRF)
	if err != nil {
		t.Fatal(err)
	}
	p, err := dfu.Parse(zipBytes, dfu.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(dfu.Policy{Key: pub, Device: v.Lock}); err != nil {
		t.Fatal(err)
	}
	if len(p.Images) != len(v.Images) || !bytes.Equal(p.Images[0].InitPacket.Raw, v.Images[0].InitPacket) ||
		!bytes.Equal(v.InitPackets[0].InitPacket, v.Images[0].InitPacket) {
		t.Fatal("images differ from the listing")
	}
	// Every refusal is a refusal, the valid case succeeds.
	for i, c := range v.InitPackets {
		r, err := dfu.ParseResponse(c.Execute)
		if err != nil || r.Op != dfu.OpExecute || (i == 0) != (r.Result == dfu.ResSuccess) {
			t.Errorf("%s: % x", c.Name, c.Execute)
		}
	}
	if r, err := dfu.ParseResponse(v.Corrupted.Execute); err != nil || r.Ext != dfu.ExtVerificationFailed {
		t.Errorf("corrupted image: % x", v.Corrupted.Execute)
	}
}
