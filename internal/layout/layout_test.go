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
		"google.golang.org/protobuf", // firmware/dfu/dfupb: the generated code of the DFU init packet
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

// TestGatewayLayering: the gateway's packages keep to the imports their
// package docs allow, so each can be tested alone and the daemon is the
// one place where they meet (internal/daemon, internal/bluelink).
func TestGatewayLayering(t *testing.T) {
	const paho = "github.com/eclipse/paho.mqtt.golang"
	rules := []struct {
		pkg     string
		subtree bool // the rule covers the packages below pkg too
		bad     []string
	}{
		// The scheduler knows neither the radio nor MQTT.
		{module + "fleet", false, []string{module + "bluez", paho, module + "fleet/broker", module + "fleet/operator", module + "internal/daemon", module + "internal/bluelink", module + "internal/admin"}},
		// What operators see knows neither paho nor the radio.
		{module + "fleet/operator", false, []string{module + "bluez", paho, module + "fleet/broker", module + "internal/daemon", module + "internal/bluelink", module + "internal/admin"}},
		// The MQTT session knows nothing of commands or locks.
		{module + "fleet/broker", false, []string{module + "bluez", module + "bonds", module + "firmware", module + "fleet/operator"}},
		// The backend's routing table carries no MQTT client and knows
		// nothing of the radio, the scheduler or the session.
		{module + "fleet/route", false, []string{module + "bluez", paho, module + "fleet/broker", module + "internal/daemon", module + "internal/bluelink", module + "internal/admin", module + "firmware"}},
		// The BlueZ client knows nothing of fleets, MQTT or the database.
		{module + "bluez", true, []string{module + "fleet", paho, module + "bonds", module + "internal/daemon"}},
		// The database knows nothing of the radio or MQTT.
		{module + "bonds", true, []string{module + "bluez", module + "fleet", paho}},
		// Configuration is leaf code.
		{module + "config", true, []string{module + "bluez", module + "fleet", module + "bonds", paho}},
	}
	checked := 0
	for _, p := range list(t, "./...") {
		for _, r := range rules {
			if p.ImportPath != r.pkg && !(r.subtree && strings.HasPrefix(p.ImportPath, r.pkg+"/")) {
				continue
			}
			checked++
			for _, imp := range p.Imports {
				for _, b := range r.bad {
					if imp == b || strings.HasPrefix(imp, strings.TrimSuffix(b, "/")+"/") {
						t.Errorf("%s imports %s: its layer may not", p.ImportPath, imp)
					}
				}
			}
		}
	}
	if checked < len(rules) {
		t.Errorf("only %d packages checked for %d rules: a rule names a package that moved", checked, len(rules))
	}
}
