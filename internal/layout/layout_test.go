package layout

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

type pkg struct {
	ImportPath string
	Doc        string
	Name       string
	Imports    []string
	Dir        string
}

func list(t *testing.T, patterns ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, patterns...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

const module = "github.com/gatewayd/gatewayd/"

// TestFirmwareImportsNoGatewayCode: firmware/ is the lock's side, which the
// C firmware mirrors; it must not depend on gateway packages.
func TestFirmwareImportsNoGatewayCode(t *testing.T) {
	allowedExternal := []string{
		"golang.org/x/crypto", "github.com/fxamacker/cbor/v2", "github.com/veraison/go-cose",
		"github.com/pion/dtls/v3/pkg/crypto/ccm",
	}
	for _, p := range list(t, "./firmware/...") {
		for _, imp := range p.Imports {
			switch {
			case strings.HasPrefix(imp, module+"firmware/"):
			case strings.HasPrefix(imp, module):
				t.Errorf("%s imports %s: firmware may import only firmware packages", p.ImportPath, imp)
			case !strings.Contains(strings.SplitN(imp, "/", 2)[0], "."):
				// standard library
			default:
				ok := false
				for _, a := range allowedExternal {
					ok = ok || imp == a || strings.HasPrefix(imp, a+"/")
				}
				if !ok {
					t.Errorf("%s imports %s, which DEVELOPERS.md does not allow in firmware/", p.ImportPath, imp)
				}
			}
		}
	}
}

// TestEveryPackageHasADocComment: each package says what it owns.
func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range list(t, "./...") {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment", p.ImportPath)
		}
	}
}
