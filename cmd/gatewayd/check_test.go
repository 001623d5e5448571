package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
	"github.com/gatewayd/gatewayd/firmware/cred"
)

// checkDir writes a dock's key files, valid now, and returns the
// directory and a configuration using them.
func checkDir(t *testing.T) (string, string) {
	dir := t.TempDir()
	f := channeltest.NewFleet(t, "acme")
	now := time.Now()
	gw := f.Issue(t, cred.Claims{Subject: "dock-1", Kind: cred.KindGateway, Perms: cred.GatewayPerms,
		NotBefore: now.Add(-time.Hour), Expiry: now.Add(time.Hour)})
	p := func(n string) string { return filepath.Join(dir, n) }
	for _, err := range []error{
		config.WritePublicKey(p("fleet-root.pem"), f.Root.Public().(ed25519.PublicKey)),
		config.WritePrivateKey(p("gateway.key"), gw.Key),
		config.WriteFile(p("gateway.cwt"), gw.Cert.Raw, 0o644),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir, fmt.Sprintf(`gateway_id = "dock-1"
[keys]
credential = %q
private_key = %q
fleet_roots = [%q]
[database]
path = %q
[mqtt]
brokers = ["tcp://127.0.0.1:1883"]
`, p("gateway.cwt"), p("gateway.key"), p("fleet-root.pem"), p("gatewayd.db"))
}

// TestConfigCheck: a good configuration with its key files passes; a bad
// one gets every problem at once, with lines, the key meant, and the file
// checks the daemon makes at start (a key file readable by others).
func TestConfigCheck(t *testing.T) {
	dir, good := checkDir(t)
	path := filepath.Join(dir, "gatewayd.toml")
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := runT("config", "check", "-config", path)
	if err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("good configuration: %v\n%s", err, out)
	}

	bad := good + "[bluetooth]\nmax_conections = 4\naway_after = \"never\"\n"
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "gateway.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err = runT("config", "check", "-config", path)
	if !errors.Is(err, errConfig) {
		t.Errorf("bad configuration: %v", err)
	}
	for _, want := range []string{
		"line 11, column 1: bluetooth.max_conections: unknown key (did you mean bluetooth.max_connections?)",
		"line 12, column 1: bluetooth.away_after: duration \"never\"",
		"keys: ", "gateway.key", "chmod 600",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestConfigCheckExitCode: the real binary exits 78 (EX_CONFIG) for a
// refused configuration and 0 for a good one.
func TestConfigCheckExitCode(t *testing.T) {
	bin := buildGatewayd(t)
	dir, good := checkDir(t)
	path := filepath.Join(dir, "gatewayd.toml")
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "config", "check", "-config", path).CombinedOutput(); err != nil {
		t.Errorf("good configuration: %v\n%s", err, out)
	}
	if err := os.WriteFile(path, []byte(good+"typo = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "config", "check", "-config", path).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 78 || !strings.Contains(string(out), "typo: unknown key") {
		t.Errorf("bad configuration: %v\n%s", err, out)
	}
}
