package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/cred"
)

// TestExampleParses keeps the shipped example valid.
func TestExampleParses(t *testing.T) {
	c, err := Load("gatewayd.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.GatewayID != "dock-0042" || c.Database.EvictAfter.D() != 30*24*time.Hour || c.MQTT.KeepAlive.D() != 30*time.Second {
		t.Errorf("example parsed to %+v", c)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte("gateway_id = \"g1\"\n[mqtt]\nbrokers = [\"tcp://b:1883\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Database.Path != "/var/lib/gatewayd/gatewayd.db" || c.Database.ReplayWindow.D() != 24*time.Hour ||
		c.Bluetooth.MaxConnections != 4 || c.MQTT.TopicPrefix != "gatewayd/v1" || c.Metrics.Listen != "127.0.0.1:9470" ||
		c.Admin.Socket != "/run/gatewayd/admin.sock" || c.Log.Level != "info" || *c.Database.EvictAfter != Duration(720*time.Hour) ||
		c.Audit.Interval.D() != 15*time.Minute || c.Audit.PagesPerSession != 4 || !*c.Bluetooth.DefaultAgent {
		t.Errorf("defaults: %+v", c)
	}
	c, err = Parse([]byte("gateway_id = \"g1\"\n[mqtt]\nbrokers = [\"tcp://b:1883\"]\n[metrics]\nlisten=\"off\"\n[database]\nevict_after=\"0\"\n[bluetooth]\ndefault_agent=false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.Listen != "" || *c.Database.EvictAfter != 0 || *c.Bluetooth.DefaultAgent {
		t.Errorf("off/0/false not kept: %q %v %v", c.Metrics.Listen, *c.Database.EvictAfter, *c.Bluetooth.DefaultAgent)
	}
}

// TestInvalid: each mistake is refused with the key it concerns.
func TestInvalid(t *testing.T) {
	base := "gateway_id = \"g1\"\n[mqtt]\nbrokers = [\"tcp://b:1883\"]\n"
	for _, tc := range []struct{ name, toml, want string }{
		{"not toml", "gateway_id = ", "invalid configuration"},
		{"unknown key", base + "[bluetooth]\nadapterr = \"hci0\"\n", "bluetooth.adapterr"},
		{"unknown table", base + "[mqqt]\nx=1\n", "mqqt"},
		{"no gateway id", "[mqtt]\nbrokers=[\"tcp://b:1\"]\n", "gateway_id"},
		{"bad gateway id", "gateway_id=\"a/b\"\n[mqtt]\nbrokers=[\"tcp://b:1\"]\n", "gateway_id"},
		{"no broker", "gateway_id=\"g\"\n", "mqtt.brokers"},
		{"bad scheme", "gateway_id=\"g\"\n[mqtt]\nbrokers=[\"http://b\"]\n", "mqtt.brokers"},
		{"wildcard prefix", base + "topic_prefix=\"a/#\"\n", "mqtt.topic_prefix"},
		{"bad duration", base + "[database]\nreplay_window=\"1 day\"\n", "replay_window"},
		{"short window", base + "[database]\nreplay_window=\"5m\"\n", "database.replay_window"},
		{"connections", base + "[bluetooth]\nmax_connections=100\n", "bluetooth.max_connections"},
		{"audit interval", base + "[audit]\ninterval=\"1s\"\n", "audit.interval"},
		{"audit pages", base + "[audit]\npages_per_session=17\n", "audit.pages_per_session"},
		{"level", base + "[log]\nlevel=\"loud\"\n", "log.level"},
		{"relative path", base + "[database]\npath=\"db\"\n", "database.path"},
		{"password without user", base + "password_file=\"/p\"\n", "mqtt.password_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.toml))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrInvalid naming %q", err, tc.want)
			}
		})
	}
}

// keyFiles writes a fleet root, a gateway key and credential.
type keyFiles struct {
	dir   string
	keys  Keys
	root  ed25519.PrivateKey
	gwKey ed25519.PrivateKey
}

func newKeyFiles(t *testing.T, sub string, kind cred.Kind, validFor time.Duration) *keyFiles {
	t.Helper()
	dir := t.TempDir()
	rootPub, root, _ := ed25519.GenerateKey(rand.Reader)
	gwPub, gw, _ := ed25519.GenerateKey(rand.Reader)
	k := &keyFiles{dir: dir, root: root, gwKey: gw, keys: Keys{
		Credential: filepath.Join(dir, "gw.cwt"), PrivateKey: filepath.Join(dir, "gw.key"),
		FleetRoots: []string{filepath.Join(dir, "root.pem")},
	}}
	if err := WritePublicKey(k.keys.FleetRoots[0], rootPub); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivateKey(k.keys.PrivateKey, gw); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	role := cred.RoleNone
	if kind == cred.KindOperator {
		role = cred.RoleOperator
	}
	raw, err := cred.Issue(root, cred.RootKID(rootPub), cred.Claims{Subject: sub, Kind: kind, Role: role,
		Perms: cred.Cap(kind, role), NotBefore: now.Add(-time.Hour), Expiry: now.Add(validFor), PublicKey: gwPub})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(k.keys.Credential, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestLoadKeys(t *testing.T) {
	k := newKeyFiles(t, "dock-1", cred.KindGateway, 24*time.Hour)
	gk, err := LoadKeys(k.keys, "dock-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !gk.Key.Equal(k.gwKey) || gk.Cert.Subject != "dock-1" || len(gk.Roots) != 1 {
		t.Errorf("loaded %+v", gk.Cert.Claims)
	}
	if st, _ := os.Stat(k.keys.PrivateKey); st.Mode().Perm() != 0o600 {
		t.Errorf("WritePrivateKey mode %v", st.Mode())
	}
}

// TestLoadKeysRefuses: each mismatch is refused, naming the file and the
// fix, and no error text carries key material.
func TestLoadKeysRefuses(t *testing.T) {
	t.Run("world-readable key", func(t *testing.T) {
		k := newKeyFiles(t, "dock-1", cred.KindGateway, time.Hour)
		if err := os.Chmod(k.keys.PrivateKey, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeys(k.keys, "dock-1", time.Now())
		if !errors.Is(err, ErrPermissions) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("other gateway", func(t *testing.T) {
		k := newKeyFiles(t, "dock-2", cred.KindGateway, time.Hour)
		_, err := LoadKeys(k.keys, "dock-1", time.Now())
		if !errors.Is(err, ErrKeys) || !strings.Contains(err.Error(), `"dock-2"`) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("operator credential", func(t *testing.T) {
		k := newKeyFiles(t, "dock-1", cred.KindOperator, time.Hour)
		_, err := LoadKeys(k.keys, "dock-1", time.Now())
		if !errors.Is(err, ErrKeys) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		k := newKeyFiles(t, "dock-1", cred.KindGateway, time.Hour)
		_, err := LoadKeys(k.keys, "dock-1", time.Now().Add(2*time.Hour))
		if !errors.Is(err, ErrKeys) || !strings.Contains(err.Error(), "renew") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("key does not match", func(t *testing.T) {
		k := newKeyFiles(t, "dock-1", cred.KindGateway, time.Hour)
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		if err := WritePrivateKey(k.keys.PrivateKey, other); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeys(k.keys, "dock-1", time.Now())
		if !errors.Is(err, ErrKeys) || !strings.Contains(err.Error(), "different key") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("untrusted root", func(t *testing.T) {
		k := newKeyFiles(t, "dock-1", cred.KindGateway, time.Hour)
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		if err := WritePublicKey(k.keys.FleetRoots[0], pub); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeys(k.keys, "dock-1", time.Now())
		if !errors.Is(err, ErrKeys) || !strings.Contains(err.Error(), "does not verify") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("not PEM", func(t *testing.T) {
		k := newKeyFiles(t, "dock-1", cred.KindGateway, time.Hour)
		if err := WriteFile(k.keys.PrivateKey, []byte("hunter2\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeys(k.keys, "dock-1", time.Now())
		if !errors.Is(err, ErrKeys) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("got %v (must not echo the file)", err)
		}
	})
}

func TestReadSecret(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pw")
	if err := WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := ReadSecret(p)
	if err != nil || string(b) != "s3cret" {
		t.Errorf("got %q %v", b, err)
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSecret(p); !errors.Is(err, ErrPermissions) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("group-readable secret: %v", err)
	}
}
