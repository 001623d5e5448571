package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/channel/channeltest"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// gatewaydBinary builds gatewayd once for the tests that run it.
func gatewaydBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: builds the binary")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gatewayd-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "gatewayd")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		_ = os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// install is a dock's files as docs/operations.md installs them: keys and
// configuration in etc/, an empty state directory in state/.
type install struct {
	dir, config, db       string
	key, credential, root string
}

func newInstall(t *testing.T) *install {
	t.Helper()
	dir := t.TempDir()
	in := &install{dir: dir, config: filepath.Join(dir, "etc", "gatewayd.toml"), db: filepath.Join(dir, "state", "gatewayd.db"),
		key: filepath.Join(dir, "etc", "gateway.key"), credential: filepath.Join(dir, "etc", "gateway.cwt"),
		root: filepath.Join(dir, "etc", "fleet-root.pem")}
	for _, d := range []string{"etc", "state"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	fleet := channeltest.NewFleet(t, "acme")
	gw := fleet.Gateway(t, "dock-1")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(config.WritePublicKey(in.root, fleet.Root.Public().(ed25519.PublicKey)))
	must(config.WritePrivateKey(in.key, gw.Key))
	must(config.WriteFile(in.credential, gw.Cert.Raw, 0o644))
	in.write(t)
	return in
}

// write writes the configuration naming the install's files.
func (in *install) write(t *testing.T) {
	t.Helper()
	text := fmt.Sprintf(`gateway_id = "dock-1"
[keys]
credential = %q
private_key = %q
fleet_roots = [%q]
[database]
path = %q
[mqtt]
brokers = ["tcp://127.0.0.1:1"]
[metrics]
listen = "off"
[admin]
socket = %q
`, in.credential, in.key, in.root, in.db, filepath.Join(in.dir, "run", "admin.sock"))
	if err := os.WriteFile(in.config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runBinary runs `gatewayd run -config` on the install, with no system
// bus to reach (a start that got past its files fails there, exit 1),
// under a 2 GiB address-space limit so that a reader that reads without
// bound dies of it instead of taking the machine's memory. It returns the
// exit status and stderr; a minute is only a safety net.
func runBinary(t *testing.T, in *install, args ...string) (int, string) {
	t.Helper()
	bin := gatewaydBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmdline := "ulimit -v 2097152 && exec \"$0\" run -config \"$1\" " + strings.Join(args, " ")
	cmd := exec.CommandContext(ctx, "sh", "-c", cmdline, bin, in.config)
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS=unix:path="+filepath.Join(in.dir, "no-bus"), "NOTIFY_SOCKET=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("gatewayd run did not exit within a minute; stderr:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	default:
		t.Fatal(err)
		return 0, ""
	}
}

// TestAttackCorruptDatabasePageExits78: a garbled page of the journal (its
// root page's header) used to make bbolt panic inside `gatewayd run`
// (exit 2, restarted every 5 s by systemd, forever). The real binary now
// exits 78, which the unit does not restart, with a message naming
// `gatewayd db check` and restoring a backup, and no panic.
func TestAttackCorruptDatabasePageExits78(t *testing.T) {
	in := newInstall(t)
	db, err := bonds.Open(in.db, bonds.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		c := bonds.Command{ID: bonds.CommandID{0xc0, byte(i >> 8), byte(i)}, LockID: bonds.LockID{0x4c, 0x4b, 0, 0, 0, 0, 0, 1},
			Operator: "op-1", Operation: "unlock", Payload: []byte("signed-command-bytes")}
		if _, err := db.Append(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var root uint64
	b, err := bolt.Open(in.db, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = b.View(func(tx *bolt.Tx) error { root = uint64(tx.Bucket([]byte("journal")).RootPage()); return nil })
	_ = b.Close()
	if root == 0 {
		t.Fatal("the journal is inline; the test needs it on pages of its own")
	}
	f, err := os.OpenFile(in.db, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var flags [2]byte
	binary.NativeEndian.PutUint16(flags[:], 0x77) // no page type
	if _, err := f.WriteAt(flags[:], int64(root)*int64(os.Getpagesize())+8); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	code, stderr := runBinary(t, in)
	if code != 78 || !strings.Contains(stderr, "gatewayd db check -db "+in.db) || !strings.Contains(stderr, "restore") ||
		strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
		t.Errorf("gatewayd run on a database with a garbled journal page: exit %d, stderr:\n%s\nwant exit 78 naming db check, no panic", code, stderr)
	}
}

// TestAttackStartFilesNotRegular: key files that are a FIFO (nothing ever
// writes to it: the start blocked forever, with SIGTERM caught and
// ignored behind it) or /dev/zero (read until memory ran out) make the
// real binary exit 78 at once, naming the file.
func TestAttackStartFilesNotRegular(t *testing.T) {
	for _, c := range []struct{ which, path string }{
		{"private_key", "FIFO"}, {"credential", "FIFO"}, {"fleet_roots", "FIFO"},
		{"credential", "/dev/zero"}, {"fleet_roots", "/dev/zero"}, {"private_key", "/dev/zero"},
	} {
		t.Run(c.which+" "+c.path, func(t *testing.T) {
			in := newInstall(t)
			p := c.path
			if p == "FIFO" {
				p = filepath.Join(in.dir, "etc", "fifo")
				if err := syscall.Mkfifo(p, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			switch c.which {
			case "private_key":
				in.key = p
			case "credential":
				in.credential = p
			case "fleet_roots":
				in.root = p
			}
			in.write(t)
			code, stderr := runBinary(t, in)
			if code != 78 || !strings.Contains(stderr, p+" is a") || !strings.Contains(stderr, "not a regular file") {
				t.Errorf("%s = %s: exit %d, stderr:\n%s\nwant exit 78 naming the file", c.which, c.path, code, stderr)
			}
		})
	}
}

// TestAttackLostDatabaseExits78: the database is gone from a state
// directory that held one. The binary refuses to start with a new, empty
// one (exit 78, naming the restore and -init); with -init it starts
// afresh (and then fails only at the missing system bus, exit 1).
func TestAttackLostDatabaseExits78(t *testing.T) {
	in := newInstall(t)
	code, stderr := runBinary(t, in)
	if code != 1 || !strings.Contains(stderr, "system bus") {
		t.Fatalf("first start in an empty state directory: exit %d, stderr:\n%s\nwant the database created, then exit 1 at the system bus", code, stderr)
	}
	if err := os.Remove(in.db); err != nil {
		t.Fatal(err)
	}
	code, stderr = runBinary(t, in)
	if code != 78 || !strings.Contains(stderr, in.db+" is missing") || !strings.Contains(stderr, "gatewayd run -init") {
		t.Errorf("lost database: exit %d, stderr:\n%s\nwant exit 78 naming the restore and -init", code, stderr)
	}
	if _, err := os.Stat(in.db); !errors.Is(err, os.ErrNotExist) {
		t.Error("the refused start created a database")
	}
	if code, stderr = runBinary(t, in, "-init"); code != 1 || !strings.Contains(stderr, "system bus") {
		t.Errorf("-init: exit %d, stderr:\n%s", code, stderr)
	}
	if _, err := os.Stat(in.db); err != nil {
		t.Errorf("-init created no database: %v", err)
	}
}
