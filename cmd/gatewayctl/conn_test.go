package main

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/deploy/mosquitto"
	"github.com/gatewayd/gatewayd/fleet/operator"
	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// clearConnEnv empties every GATEWAYCTL_* variable and points
// XDG_CONFIG_HOME at dir, so the test sees only what it sets.
func clearConnEnv(t *testing.T, dir string) {
	t.Helper()
	for _, c := range connSettingsList {
		t.Setenv(c.env, "")
	}
	t.Setenv("XDG_CONFIG_HOME", dir)
}

// resolved parses args as watch does and resolves its connection settings.
func resolved(t *testing.T, args ...string) (connSettings, error) {
	t.Helper()
	fs := flags("watch")
	mf := addMQTTFlags(fs)
	if err := parse(fs, args, io.Discard); err != nil {
		t.Fatal(err)
	}
	err := resolveConn(fs, *mf.config, mf.conn)
	return *mf.conn, err
}

// TestConnPrecedence: each connection setting comes from its flag, else
// its GATEWAYCTL_ variable, else the default configuration file (relative
// file names there are relative to the file), else the flag's default.
func TestConnPrecedence(t *testing.T) {
	dir := t.TempDir()
	clearConnEnv(t, dir)
	file := filepath.Join(dir, "gatewayd", "gatewayctl.toml")
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(`broker = "ssl://file:8883"
ca_file = "ca.pem"
cert_file = "/etc/file.crt"
key_file = "file.key"
server_name = "file.example"
username = "file-user"
password_file = "file.pw"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	rel := func(n string) string { return filepath.Join(dir, "gatewayd", n) }

	got, err := resolved(t)
	want := connSettings{"ssl://file:8883", rel("ca.pem"), "/etc/file.crt", rel("file.key"), "file.example", "file-user", rel("file.pw")}
	if err != nil || got != want {
		t.Errorf("from the file: %+v, %v; want %+v", got, err, want)
	}

	t.Setenv("GATEWAYCTL_BROKER", "ssl://env:8883")
	t.Setenv("GATEWAYCTL_CA", "env-ca.pem")
	t.Setenv("GATEWAYCTL_USERNAME", "env-user")
	t.Setenv("GATEWAYCTL_PASSWORD_FILE", "/run/env.pw")
	got, err = resolved(t)
	want = connSettings{"ssl://env:8883", "env-ca.pem", "/etc/file.crt", rel("file.key"), "file.example", "env-user", "/run/env.pw"}
	if err != nil || got != want {
		t.Errorf("env over the file: %+v, %v; want %+v", got, err, want)
	}

	got, err = resolved(t, "-broker", "tcp://flag:1883", "-username", "flag-user", "-tlskey", "flag.key", "-servername", "flag.example")
	want = connSettings{"tcp://flag:1883", "env-ca.pem", "/etc/file.crt", "flag.key", "flag.example", "flag-user", "/run/env.pw"}
	if err != nil || got != want {
		t.Errorf("flags over env: %+v, %v; want %+v", got, err, want)
	}

	// -config replaces the default file; with neither file nor env nor
	// flag, the flag's default.
	other := filepath.Join(dir, "other.toml")
	if err := os.WriteFile(other, []byte("username = \"other\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	clearConnEnv(t, dir)
	got, err = resolved(t, "-config", other)
	want = connSettings{Broker: "tcp://127.0.0.1:1883", Username: "other"}
	if err != nil || got != want {
		t.Errorf("-config: %+v, %v; want %+v", got, err, want)
	}
	clearConnEnv(t, t.TempDir()) // no default file: not an error
	if got, err = resolved(t); err != nil || got != (connSettings{Broker: "tcp://127.0.0.1:1883"}) {
		t.Errorf("no file: %+v, %v", got, err)
	}
}

// TestConnFileStrict: the configuration file is strict TOML: a key it does
// not know, a value of the wrong type and a syntax error are usage errors
// naming the file; a -config that does not exist, or a file others may
// write (it names the CA to trust), is refused.
func TestConnFileStrict(t *testing.T) {
	dir := t.TempDir()
	clearConnEnv(t, dir)
	for _, c := range []struct{ name, toml, want string }{
		{"unknown key", "broker = \"tcp://b:1883\"\npasword_file = \"pw\"\n", "pasword_file"},
		{"section", "[mqtt]\nbroker = \"tcp://b:1883\"\n", "mqtt"},
		{"wrong type", "broker = 1883\n", "broker"},
		{"syntax", "broker = \"tcp://b:1883\n", "bad.toml"},
	} {
		p := filepath.Join(dir, "bad.toml")
		if err := os.WriteFile(p, []byte(c.toml), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := resolved(t, "-config", p); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a usage error naming %s", c.name, err, c.want)
		}
	}
	if _, err := resolved(t, "-config", filepath.Join(dir, "missing.toml")); err == nil || errors.Is(err, errUsage) {
		t.Errorf("missing -config: %v, want a failure", err)
	}
	p := filepath.Join(dir, "open.toml")
	if err := os.WriteFile(p, []byte("ca_file = \"/tmp/evil-ca.pem\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := resolved(t, "-config", p); err == nil {
		t.Error("a configuration file anyone may write was taken")
	}
}

// TestConnPassword: -username and -password-file (here from the
// configuration file) log in to a real mosquitto that refuses anonymous
// clients, for watch and revoke; without them, or with -password-file
// alone, watch fails.
func TestConnPassword(t *testing.T) {
	dir := t.TempDir()
	clearConnEnv(t, dir)
	pwdb := filepath.Join(dir, "mosquitto.passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", pwdb, "otto", "s3cret-pass").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd (apt-get install mosquitto: scripts/deps.sh): %v\n%s", err, out)
	}
	b := mosquittotest.Start(t, mosquittotest.Options{Extra: []string{"allow_anonymous false", "password_file " + pwdb}})
	pw := filepath.Join(dir, "otto.pw")
	if err := os.WriteFile(pw, []byte("s3cret-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "gatewayctl.toml")
	if err := os.WriteFile(cfg, []byte("broker = \""+b.URL()+"\"\nusername = \"otto\"\npassword_file = \"otto.pw\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The gateway's retained status, for watch -n 1 to print once it is in.
	top, _ := operator.NewTopics(operator.DefaultPrefix, "gw-1")
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("gw-1").SetUsername("otto").SetPassword("s3cret-pass"))
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	if tok := c.Publish(top.Status, 1, true, "online"); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	c.Disconnect(100)
	if code, out, errs := runCode(t, "watch", "-config", cfg, "-gateway", "gw-1", "-n", "1"); code != exitOK || !strings.Contains(out, "online") {
		t.Errorf("with the file's username and password: exit %d\n%s%s", code, out, errs)
	}
	// revoke publishes with the same login, from the file.
	if code, out, errs := runCode(t, "keygen", "-o", filepath.Join(dir, "root.key")); code != exitOK {
		t.Fatal(out, errs)
	}
	if code, out, errs := runCode(t, "revoke", "-config", cfg, "-root", filepath.Join(dir, "root.key"), "-broker", b.URL(), "operator:otto"); code != exitOK || !strings.Contains(out, "published") {
		t.Errorf("revoke with the file's username and password: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := runCode(t, "watch", "-broker", b.URL(), "-gateway", "gw-1"); code != exitFailed || !strings.Contains(errs, "connect") {
		t.Errorf("anonymous: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := runCode(t, "watch", "-broker", b.URL(), "-password-file", pw, "-gateway", "gw-1"); code != exitUsage {
		t.Errorf("-password-file without -username: exit %d\n%s%s", code, out, errs)
	}
}

// TestConnServerName: -servername is the name the broker's certificate is
// verified for: a TLS mosquitto whose certificate names 127.0.0.1 is
// refused for another name, and taken for its own (from the environment,
// with the CA from GATEWAYCTL_CA).
func TestConnServerName(t *testing.T) {
	dir := t.TempDir()
	clearConnEnv(t, dir)
	pki, err := mosquitto.NewPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Issue("broker", true); err != nil {
		t.Fatal(err)
	}
	b := mosquittotest.Start(t, mosquittotest.Options{Extra: []string{
		"cafile " + pki.CAFile(), "certfile " + pki.CertFile("broker"), "keyfile " + pki.KeyFile("broker")}})
	url := "ssl://" + b.Addr()
	t.Setenv("GATEWAYCTL_CA", pki.CAFile())
	code, out, errs := runCode(t, "watch", "-broker", url, "-servername", "broker.example", "-gateway", "gw-1", "-n", "1")
	if code != exitFailed || !strings.Contains(errs, "broker.example") {
		t.Errorf("wrong server name: exit %d\n%s%s", code, out, errs)
	}
	// The right name, from the environment: connected.
	t.Setenv("GATEWAYCTL_SERVERNAME", "127.0.0.1")
	o, err := func() (*mqtt.ClientOptions, error) {
		fs := flags("watch")
		mf := addMQTTFlags(fs)
		if err := parse(fs, []string{"-broker", url}, io.Discard); err != nil {
			return nil, err
		}
		return mf.options()
	}()
	if err != nil {
		t.Fatal(err)
	}
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("connect with server name 127.0.0.1: %v", tok.Error())
	}
	c.Disconnect(100)
}
