package deb

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// stubs are stand-ins for the commands the maintainer scripts run on a
// machine where systemd is PID 1; each logs its arguments to $STUB_LOG.
var stubs = map[string]string{
	"systemctl": `echo "systemctl $*" >>"$STUB_LOG"
case "$1" in is-enabled) [ "$STUB_ENABLED" = yes ] ;; esac`,
	"runuser": `echo "runuser $*" >>"$STUB_LOG"
[ "$STUB_CHECK" = pass ] || { echo "gatewayd.toml:7:14: gateway_id: required"; exit 78; }`,
	"systemd-sysusers": `echo "systemd-sysusers $*" >>"$STUB_LOG"`,
	"systemd-tmpfiles": `echo "systemd-tmpfiles $*" >>"$STUB_LOG"`,
}

// runScript runs a maintainer script as on a machine that runs systemd:
// in a mount namespace whose /run is a fresh tmpfs holding
// /run/systemd/system, with the stubs first in PATH, and DPKG_ROOT unset.
// It returns the script's output and the commands it ran.
func runScript(t *testing.T, script string, enabled, check string, args ...string) (string, []string, error) {
	t.Helper()
	need(t, "unshare", "mount")
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range stubs {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(dir, "log")
	if err := os.WriteFile(log, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	unshare := []string{"--mount"}
	if os.Getuid() != 0 {
		unshare = append([]string{"--map-root-user"}, unshare...)
	}
	sh := `mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec sh "$@"`
	cmd := exec.Command("unshare", append(unshare, "sh", "-c", sh, "sh", script)...)
	cmd.Args = append(cmd.Args, args...)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "DPKG_ROOT=") && !strings.HasPrefix(e, "PATH=") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "PATH="+bin+":"+os.Getenv("PATH"), "STUB_LOG="+log, "STUB_ENABLED="+enabled, "STUB_CHECK="+check)
	out, err := cmd.CombinedOutput()
	if err != nil && strings.Contains(string(out), "unshare failed") {
		t.Fatalf("unshare: %v\n%s\nthe test needs root, or unprivileged user namespaces", err, out)
	}
	calls, rerr := os.ReadFile(log)
	if rerr != nil {
		t.Fatal(rerr)
	}
	return string(out), strings.Split(strings.TrimSpace(string(calls)), "\n"), err
}

func has(calls []string, prefix string) bool {
	for _, c := range calls {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}

// TestMaintainerScriptsUnderSystemd: on a machine running systemd, the
// postinst creates the user and directories and reloads systemd, but never
// enables gatewayd, and starts it only when the maintainer enabled it and
// its configuration passes `gatewayd config check` as the gatewayd user;
// prerm stops it before an upgrade or removal. (The install test runs the
// scripts with DPKG_ROOT, where systemd is not asked anything.)
func TestMaintainerScriptsUnderSystemd(t *testing.T) {
	check := "runuser -u gatewayd -- /usr/bin/gatewayd config check -config /etc/gatewayd/gatewayd.toml"
	for _, c := range []struct {
		name, script, enabled, check string
		args                         []string
		want, notWant                []string // call prefixes
		output                       string
	}{
		{name: "fresh install", script: "postinst", enabled: "no", check: "pass", args: []string{"configure", ""},
			want:    []string{"systemd-sysusers gatewayd.conf", "systemd-tmpfiles --create gatewayd.conf", "systemctl daemon-reload", "systemctl is-enabled"},
			notWant: []string{"systemctl enable", "systemctl start", "systemctl restart", "runuser"},
			output:  "systemctl enable --now gatewayd"},
		{name: "upgrade, enabled, configured", script: "postinst", enabled: "yes", check: "pass", args: []string{"configure", "1.0.0"},
			want:    []string{"systemctl daemon-reload", check, "systemctl restart gatewayd.service"},
			notWant: []string{"systemctl enable"}},
		{name: "upgrade, enabled, configuration refused", script: "postinst", enabled: "yes", check: "fail", args: []string{"configure", "1.0.0"},
			want:    []string{check},
			notWant: []string{"systemctl enable", "systemctl start", "systemctl restart"},
			output:  "gateway_id: required"},
		{name: "refused downgrade: the old version starts again", script: "postinst", enabled: "yes", check: "pass", args: []string{"abort-upgrade", "1.0.0"},
			want:    []string{check, "systemctl restart gatewayd.service"},
			notWant: []string{"systemd-sysusers"}},
		{name: "upgrade stops it", script: "prerm", enabled: "yes", check: "pass", args: []string{"upgrade", "1.1.0"},
			want: []string{"systemctl stop gatewayd.service"}},
		{name: "remove stops it", script: "prerm", enabled: "yes", check: "pass", args: []string{"remove"},
			want: []string{"systemctl stop gatewayd.service"}, notWant: []string{"systemctl disable"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, calls, err := runScript(t, c.script, c.enabled, c.check, c.args...)
			if err != nil {
				t.Fatalf("%s %q: %v\n%s", c.script, c.args, err, out)
			}
			for _, w := range c.want {
				if !has(calls, w) {
					t.Errorf("%s %q did not run %q; ran %q", c.script, c.args, w, calls)
				}
			}
			for _, n := range c.notWant {
				if has(calls, n) {
					t.Errorf("%s %q ran %q; ran %q", c.script, c.args, n, calls)
				}
			}
			if !strings.Contains(out, c.output) {
				t.Errorf("%s %q: output lacks %q:\n%s", c.script, c.args, c.output, out)
			}
		})
	}
}
