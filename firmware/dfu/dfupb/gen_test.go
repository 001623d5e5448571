package dfupb

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

var update = flag.Bool("update", false, "rewrite dfu-cc.pb.go from dfu-cc.proto")

const goPackage = "github.com/gatewayd/gatewayd/firmware/dfu/dfupb"

// protocVersion matches the generated file's line naming protoc's version,
// the one line that differs between machines with different Debian
// releases; protoc-gen-go's version is pinned in go.mod's tool block.
var protocVersion = regexp.MustCompile(`(?m)^// \tprotoc +v.*$`)

// TestGeneratedCodeCurrent regenerates dfu-cc.pb.go with protoc and the
// protoc-gen-go pinned in go.mod, and fails when the committed file
// differs. After a deliberate change of dfu-cc.proto or of the pinned
// protoc-gen-go: go test ./firmware/dfu/dfupb -run TestGeneratedCodeCurrent -update
func TestGeneratedCodeCurrent(t *testing.T) {
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		t.Fatal("protoc not found: install it with scripts/deps.sh (Debian package protobuf-compiler)")
	}
	tmp := t.TempDir()
	plugin := filepath.Join(tmp, "protoc-gen-go")
	build := exec.Command("go", "build", "-o", plugin, "google.golang.org/protobuf/cmd/protoc-gen-go")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build protoc-gen-go: %v\n%s", err, out)
	}
	gen := exec.Command(protoc, "--plugin=protoc-gen-go="+plugin, "--go_out="+tmp,
		"--go_opt=paths=source_relative", "--go_opt=Mdfu-cc.proto="+goPackage+";dfupb", "dfu-cc.proto")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(tmp, "dfu-cc.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("dfu-cc.pb.go", got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	committed, err := os.ReadFile("dfu-cc.pb.go")
	if err != nil {
		t.Fatal(err)
	}
	strip := func(b []byte) []byte { return protocVersion.ReplaceAll(b, nil) }
	if !bytes.Equal(strip(got), strip(committed)) {
		t.Fatal("dfu-cc.pb.go drifted from dfu-cc.proto; if the change is deliberate, run: go test ./firmware/dfu/dfupb -run TestGeneratedCodeCurrent -update")
	}
	if !protocVersion.Match(committed) {
		t.Fatal("dfu-cc.pb.go has no protoc version line: the drift check's pattern is stale")
	}
}

// TestOptionsMatchLimits: dfu-cc.options (the bootloader's nanopb limits)
// is the file firmware/dfu's limits were taken from; a change of it must
// be looked at there too.
func TestOptionsMatchLimits(t *testing.T) {
	b, err := os.ReadFile("dfu-cc.options")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`dfu.Hash.hash\s+max_size:32`,
		`dfu.SignedCommand.signature\s+max_size:64`,
		`dfu.InitCommand.sd_req\s+max_count:4`,
		`dfu.InitCommand.boot_validation\s+max_count:3`,
		`dfu.BootValidation.bytes\s+max_size:64`,
	} {
		if !regexp.MustCompile(want).Match(b) {
			t.Errorf("dfu-cc.options no longer says %s: update firmware/dfu's limits", want)
		}
	}
}
