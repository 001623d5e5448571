package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/internal/filetrust"
)

// The key files of newKeyFiles, by what the configuration calls them.
func keyPaths(k *keyFiles) map[string]*string {
	return map[string]*string{
		"private_key": &k.keys.PrivateKey, "credential": &k.keys.Credential, "fleet_roots": &k.keys.FleetRoots[0],
	}
}

// loadWithin runs LoadKeys, and fails the test if it has not returned
// after 20 s (a safety net only: the fixed code returns at once). A
// reader blocked opening fifo is then released by opening its other end.
func loadWithin(t *testing.T, k Keys, fifo string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := LoadKeys(k, "dock-1", time.Now())
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			_ = f.Close()
		}
		<-done
		t.Fatalf("LoadKeys blocked on the FIFO %s for 20 s", fifo)
		return nil
	}
}

// TestAttackKeyFileFIFO: a key, credential or fleet root path that names
// a FIFO is refused at once, naming the file; opening it would block the
// start forever (nothing writes to it), with SIGTERM caught and waiting
// behind it.
func TestAttackKeyFileFIFO(t *testing.T) {
	for _, which := range []string{"private_key", "credential", "fleet_roots"} {
		t.Run(which, func(t *testing.T) {
			k := newKeyFiles(t, "dock-1", cred.KindGateway, time.Hour)
			p := keyPaths(k)[which]
			*p = filepath.Join(k.dir, "fifo")
			if err := syscall.Mkfifo(*p, 0o600); err != nil {
				t.Fatal(err)
			}
			err := loadWithin(t, k.keys, *p)
			if !errors.Is(err, ErrPermissions) || !strings.Contains(err.Error(), *p) || !strings.Contains(err.Error(), "FIFO") {
				t.Errorf("FIFO as %s: %v", which, err)
			}
		})
	}
}

// TestAttackKeyFileDevice: a character device is refused before it is
// opened, never read: /dev/zero never ends (the old reader read it until
// memory ran out; cmd/gatewayd's TestAttackStartFilesNotRegular runs that
// against the binary under a memory limit); /dev/null stands for it here,
// so that a reader that does read devices fails this test rather than the
// machine.
func TestAttackKeyFileDevice(t *testing.T) {
	const dev = "/dev/null"
	for _, which := range []string{"private_key", "credential", "fleet_roots"} {
		k := newKeyFiles(t, "dock-1", cred.KindGateway, time.Hour)
		*keyPaths(k)[which] = dev
		_, err := LoadKeys(k.keys, "dock-1", time.Now())
		if !errors.Is(err, ErrPermissions) || !strings.Contains(err.Error(), dev+" is a character device") {
			t.Errorf("%s as %s: %v", dev, which, err)
		}
	}
	if _, err := ReadSecret(dev); !errors.Is(err, ErrPermissions) {
		t.Errorf("ReadSecret(%s) = %v", dev, err)
	}
	if _, err := ReadPublic(dev, MaxKeyFile); !errors.Is(err, ErrPermissions) {
		t.Errorf("ReadPublic(%s) = %v", dev, err)
	}
}

// TestAttackKeyFileTooLarge: a regular file far larger than a key can be
// (here 256 MiB, sparse) is refused by its size, not read into memory.
func TestAttackKeyFileTooLarge(t *testing.T) {
	for _, which := range []string{"private_key", "credential", "fleet_roots"} {
		k := newKeyFiles(t, "dock-1", cred.KindGateway, time.Hour)
		p := *keyPaths(k)[which]
		if err := os.Truncate(p, 256<<20); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeys(k.keys, "dock-1", time.Now())
		if !errors.Is(err, ErrKeys) || !errors.Is(err, filetrust.ErrTooLarge) || !strings.Contains(err.Error(), p) {
			t.Errorf("256 MiB %s: %v", which, err)
		}
	}
	big := filepath.Join(t.TempDir(), "gatewayd.toml")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 256<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); !errors.Is(err, filetrust.ErrTooLarge) {
		t.Errorf("256 MiB configuration: %v", err)
	}
}

// TestAttackFileTrust: files and directories another user could change
// are refused, naming the file and the command that fixes it: a fleet
// root anyone may write (which would let them make their own operators),
// a key directory anyone may write (which would let them swap the files),
// key files owned by another user, a symlinked directory that leads to
// one anyone may write, and a configuration anyone may write.
func TestAttackFileTrust(t *testing.T) {
	const nobody = 65534
	cases := []struct {
		name string
		do   func(t *testing.T, k *keyFiles)
		want string
	}{
		{"fleet root 0666", func(t *testing.T, k *keyFiles) { chmod(t, k.keys.FleetRoots[0], 0o666) }, "chmod go-w " + "ROOT"},
		{"credential 0666", func(t *testing.T, k *keyFiles) { chmod(t, k.keys.Credential, 0o666) }, "chmod go-w " + "CWT"},
		{"key directory 0777", func(t *testing.T, k *keyFiles) { chmod(t, k.dir, 0o777) }, "chmod go-w " + "DIR"},
		{"private key owned by another user", func(t *testing.T, k *keyFiles) { chown(t, k.keys.PrivateKey, nobody) }, "chown"},
		{"fleet root owned by another user", func(t *testing.T, k *keyFiles) { chown(t, k.keys.FleetRoots[0], nobody) }, "chown root " + "ROOT"},
		{"key directory owned by another user", func(t *testing.T, k *keyFiles) { chown(t, k.dir, nobody) }, "chown root " + "DIR"},
		{"symlinked key directory, 0777", func(t *testing.T, k *keyFiles) {
			open := filepath.Join(t.TempDir(), "open")
			if err := os.Rename(k.dir, open); err != nil {
				t.Fatal(err)
			}
			chmod(t, open, 0o777)
			if err := os.Symlink(open, k.dir); err != nil {
				t.Fatal(err)
			}
		}, "chmod go-w"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			parent := t.TempDir()
			k := newKeyFiles(t, "dock-1", cred.KindGateway, time.Hour)
			// The key files in a directory of their own, as in /etc/gatewayd.
			dir := filepath.Join(parent, "gatewayd")
			if err := os.Rename(k.dir, dir); err != nil {
				t.Fatal(err)
			}
			k.dir = dir
			k.keys = Keys{Credential: filepath.Join(dir, "gw.cwt"), PrivateKey: filepath.Join(dir, "gw.key"),
				FleetRoots: []string{filepath.Join(dir, "root.pem")}}
			if _, err := LoadKeys(k.keys, "dock-1", time.Now()); err != nil {
				t.Fatalf("before: %v", err)
			}
			c.do(t, k)
			_, err := LoadKeys(k.keys, "dock-1", time.Now())
			want := strings.NewReplacer("ROOT", k.keys.FleetRoots[0], "CWT", k.keys.Credential, "DIR", dir).Replace(c.want)
			if !errors.Is(err, ErrPermissions) || !errors.Is(err, filetrust.ErrUntrusted) || !strings.Contains(err.Error(), want) {
				t.Errorf("got %v, want ErrPermissions saying %q", err, want)
			}
		})
	}
	t.Run("configuration 0666", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "gatewayd.toml")
		if err := os.WriteFile(p, []byte("gateway_id = \"dock-1\"\n[mqtt]\nbrokers = [\"tcp://b:1883\"]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err != nil {
			t.Fatal(err)
		}
		chmod(t, p, 0o666)
		if _, err := Load(p); !errors.Is(err, filetrust.ErrUntrusted) || !strings.Contains(err.Error(), "chmod go-w "+p) {
			t.Errorf("0666 configuration: %v", err)
		}
	})
}

func chmod(t *testing.T, p string, m os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, m); err != nil {
		t.Fatal(err)
	}
}

// chown gives p to uid; tests run as root here, and as another user
// cannot give files away, so they say so instead of passing silently.
func chown(t *testing.T, p string, uid int) {
	t.Helper()
	if err := os.Chown(p, uid, -1); err != nil {
		t.Fatalf("chown %d %s: %v (the owner checks need the tests to run as root)", uid, p, err)
	}
}
