package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/fleet/operator"
	"github.com/gatewayd/gatewayd/internal/mosquittotest"
)

// runCode runs the CLI as main does and returns its exit status, stdout
// and stderr.
func runCode(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(t.Context(), args, &out, &errb)
	return exitCode(err, &errb), out.String(), errb.String()
}

// fakeGateway answers on a real mosquitto as a gateway would, by the
// command's operation: lock is refused with a notice, unlock fails,
// status succeeds with a result the lock never signed.
func fakeGateway(t *testing.T, broker, gatewayID string) {
	t.Helper()
	top, err := operator.NewTopics(operator.DefaultPrefix, gatewayID)
	if err != nil {
		t.Fatal(err)
	}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID("fake-gateway"))
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	h := func(c mqtt.Client, m mqtt.Message) {
		b, err := command.Peek(m.Payload())
		if err != nil {
			return
		}
		sum := sha256.Sum256(m.Payload())
		topic, msg := top.Result, any(nil)
		switch b.Op {
		case command.OpLock:
			topic, msg = top.Rejected, operator.Rejected{Reason: "unauthorized", PayloadSHA256: hex.EncodeToString(sum[:]),
				PayloadSize: len(m.Payload()), ReceivedAt: time.Now()}
		case command.OpUnlock:
			msg = operator.ResultMessage{CommandID: bonds.CommandID(b.CommandID), State: bonds.StateFailed, Status: "jammed", FinishedAt: time.Now()}
		default:
			msg = operator.ResultMessage{CommandID: bonds.CommandID(b.CommandID), State: bonds.StateSucceeded, Status: "ok", FinishedAt: time.Now()}
		}
		raw, _ := json.Marshal(msg)
		c.Publish(topic, 1, false, raw)
	}
	if tok := c.Subscribe(top.Cmd, 1, h); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
}

// TestExitCodes: the CLI's exit status, through run and exitCode as main
// uses them: 0 for help and a succeeded command, 1 for a failure (no
// broker), 2 for usage errors, 3 for a command the gateway refused or that
// failed, 4 for a succeeded result whose lock signature does not verify
// with -root (and for verify of such a result).
func TestExitCodes(t *testing.T) {
	d := t.TempDir()
	p := func(n string) string { return filepath.Join(d, n) }
	for _, k := range []string{"root.key", "op.key"} {
		if code, out, errs := runCode(t, "keygen", "-o", p(k)); code != 0 {
			t.Fatal(out, errs)
		}
	}
	if code, out, errs := runCode(t, "issue", "-root", p("root.key"), "-kind", "operator", "-role", "admin", "-subject", "otto",
		"-pub", p("op.key.pub"), "-o", p("op.cwt")); code != 0 {
		t.Fatal(out, errs)
	}
	b := mosquittotest.Start(t, mosquittotest.Options{})
	fakeGateway(t, b.URL(), "gw-1")
	send := func(extra ...string) []string {
		return append([]string{"send", "-key", p("op.key"), "-cred", p("op.cwt"), "-broker", b.URL(), "-gateway", "gw-1",
			"-lock", "4c4b000000000001", "-timeout", "2m"}, extra...)
	}
	for _, c := range []struct {
		name string
		args []string
		want int
	}{
		{"help", []string{"send", "-h"}, exitOK},
		{"succeeded", send("status"), exitOK},
		{"no broker", []string{"watch", "-broker", "tcp://127.0.0.1:1", "-gateway", "gw-1"}, exitFailed},
		{"missing key", []string{"sign", "-key", p("nope.key"), "-cred", p("op.cwt"), "-lock", "4c4b000000000001", "unlock"}, exitFailed},
		{"unknown flag", []string{"sign", "-frob"}, exitUsage},
		{"bad flag value", []string{"send", "-timeout", "soon"}, exitUsage},
		{"missing operation", send(), exitUsage},
		{"unknown command", []string{"frob"}, exitUsage},
		{"refused", send("lock"), exitNotOK},
		{"failed", send("unlock"), exitNotOK},
		{"unverified", send("-root", p("root.key.pub"), "status"), exitUnverified},
	} {
		code, out, errs := runCode(t, c.args...)
		if code != c.want {
			t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", c.name, code, c.want, out, errs)
		}
		if c.want == exitUnverified {
			// The same result through verify: 4 as well.
			if err := os.WriteFile(p("result.json"), []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			if code, out, errs := runCode(t, "verify", "-root", p("root.key.pub"), p("result.json")); code != exitUnverified {
				t.Errorf("verify: exit %d, want %d\nstdout: %s\nstderr: %s", code, exitUnverified, out, errs)
			}
		}
	}
}

// TestHelp: each command's -h, -help and `help COMMAND` print its own
// usage line and every one of its flags on stdout, nothing on stderr, and
// exit 0.
func TestHelp(t *testing.T) {
	for name := range synopsis {
		w := strings.Fields(name) // "dfu verify": a subcommand
		for _, args := range [][]string{slices.Concat(w, []string{"-h"}), slices.Concat(w, []string{"-help"}), slices.Concat([]string{"help"}, w)} {
			code, out, errs := runCode(t, args...)
			if code != exitOK || errs != "" || !strings.HasPrefix(out, "usage: gatewayctl "+name+" ") {
				t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errs)
			}
			if !strings.Contains(out, "Exit status:") {
				t.Errorf("%q: no exit statuses in %q", args, out)
			}
		}
	}
	_, out, _ := runCode(t, "send", "-h")
	for _, f := range []string{"-broker", "-ca", "-cert", "-tlskey", "-timeout", "-root", `(default "tcp://127.0.0.1:1883")`} {
		if !strings.Contains(out, f) {
			t.Errorf("send -h lacks %s:\n%s", f, out)
		}
	}
}

// TestHelpBinary: the built binary's `send --help` prints the flags on
// stdout and exits 0, as main maps flag.ErrHelp.
func TestHelpBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gatewayctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, "send", "--help")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("send --help: %v\nstderr: %s", err, errb.String())
	}
	if !strings.Contains(out.String(), "-broker") || errb.Len() != 0 {
		t.Errorf("stdout %q, stderr %q", out.String(), errb.String())
	}
	cmd = exec.Command(bin, "sign", "-frob")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != exitUsage {
		t.Errorf("sign -frob: %v, want exit %d", err, exitUsage)
	}
}
