package deb

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gatewayd/gatewayd/bonds"
	bolt "go.etcd.io/bbolt"
)

// The versions of the two packages the tests build from this tree: the
// same code, so "old" differs from "new" only in its version.
const (
	oldVersion = "1.0.0"
	newVersion = "1.1.0"
)

var repo = func() string {
	p, err := filepath.Abs("../..")
	if err != nil {
		panic(err)
	}
	return p
}()

// need fails the test when a tool is missing, naming scripts/deps.sh.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run scripts/deps.sh (as root) to install what the package tests need", tool)
		}
	}
}

var (
	buildOnce sync.Once
	buildDir  string
	builtDebs map[string]string
	buildErr  error
)

// packages builds the amd64 package at oldVersion and newVersion with
// scripts/package.sh, once for all tests.
func packages(t *testing.T) (old, new string) {
	t.Helper()
	need(t, "git", "gzip", "dpkg-deb")
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "gatewayd-deb-")
		if buildErr != nil {
			return
		}
		builtDebs = map[string]string{}
		for _, v := range []string{oldVersion, newVersion} {
			cmd := exec.Command(filepath.Join(repo, "scripts/package.sh"), "-arch", "amd64", "-version", v, "-out", buildDir)
			cmd.Dir = repo
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				buildErr = fmt.Errorf("scripts/package.sh -version %s: %v\n%s", v, err, stderr.String())
				return
			}
			builtDebs[v] = strings.TrimSpace(string(out))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtDebs[oldVersion], builtDebs[newVersion]
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// root is a fresh root to install into: an empty dpkg database, the
// merged-/usr links, and what a unit resolves against there from the
// packages the gatewayd package depends on (systemd's units, procps's
// /bin/kill), copied from this machine's. As root, dpkg runs directly;
// otherwise under fakeroot, whose state file keeps the owners it faked.
type root struct {
	t     *testing.T
	dir   string
	state string // fakeroot's; "" when running as root
}

func newRoot(t *testing.T) *root {
	t.Helper()
	need(t, "dpkg", "dpkg-query", "systemd-sysusers", "systemd-tmpfiles", "systemd-analyze")
	r := &root{t: t, dir: t.TempDir()}
	if os.Getuid() != 0 {
		need(t, "fakeroot")
		r.state = filepath.Join(t.TempDir(), "fakeroot.state")
		if err := os.WriteFile(r.state, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "usr/bin", "usr/sbin", "usr/lib/systemd/system", "etc", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(r.dir, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"bin", "sbin", "lib"} {
		if err := os.Symlink("usr/"+l, filepath.Join(r.dir, l)); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("dpkg-query", "-L", "systemd").Output()
	if err != nil {
		t.Fatalf("dpkg-query -L systemd: %v: run scripts/deps.sh (apt-get install systemd)", err)
	}
	units := 0
	for _, f := range strings.Fields(string(out)) {
		if dir, name := filepath.Split(f); (dir == "/lib/systemd/system/" || dir == "/usr/lib/systemd/system/") && name != "" {
			if err := exec.Command("cp", "-a", f, filepath.Join(r.dir, "usr/lib/systemd/system", name)).Run(); err != nil {
				t.Fatalf("copying %s: %v", f, err)
			}
			units++
		}
	}
	if units < 50 {
		t.Fatalf("the systemd package lists %d units; is systemd installed as a Debian package?", units)
	}
	kill, err := exec.LookPath("kill")
	if err != nil {
		t.Fatal("kill not found: apt-get install procps")
	}
	if err := exec.Command("cp", kill, filepath.Join(r.dir, "usr/bin/kill")).Run(); err != nil {
		t.Fatal(err)
	}
	return r
}

// cmd runs name with args, under fakeroot when not root, and returns its
// combined output.
func (r *root) cmd(name string, args ...string) (string, error) {
	if r.state != "" {
		args = append([]string{"-i", r.state, "-s", r.state, "--", name}, args...)
		name = "fakeroot"
	}
	c := exec.Command(name, args...)
	c.Env = append(os.Environ(), "LC_ALL=C")
	out, err := c.CombinedOutput()
	return string(out), err
}

// dpkg runs dpkg on this root; maintainer scripts run chrootless, with
// DPKG_ROOT set to the root (the scripts honour it). Dependencies are
// not installed in the root (bluez, systemd), hence --force-depends.
func (r *root) dpkg(args ...string) (string, error) {
	return r.cmd("dpkg", append([]string{"--root=" + r.dir, "--force-script-chrootless", "--force-depends"}, args...)...)
}

func (r *root) path(p string) string { return filepath.Join(r.dir, p) }

// status is dpkg's status of gatewayd in the root and its version.
func (r *root) status() (string, string) {
	out, _ := exec.Command("dpkg-query", "--admindir="+r.path("var/lib/dpkg"), "-W", "-f=${db:Status-Status} ${Version}", "gatewayd").Output()
	s, v, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	return s, v
}

type entry struct {
	uid, gid int
	mode     os.FileMode // permission bits
	typ      string      // find's %y: f, d, l
}

// tree lists every path in the root (relative, with a leading /) with its
// owner and mode, as dpkg (or fakeroot) left them.
func (r *root) tree() map[string]entry {
	r.t.Helper()
	out, err := r.cmd("find", r.dir, "-mindepth", "1", "-printf", `%U %G %m %y /%P\n`)
	if err != nil {
		r.t.Fatalf("find: %v\n%s", err, out)
	}
	m := map[string]entry{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 5)
		if len(f) != 5 {
			continue
		}
		uid, _ := strconv.Atoi(f[0])
		gid, _ := strconv.Atoi(f[1])
		mode, _ := strconv.ParseUint(f[2], 8, 32)
		m[f[4]] = entry{uid: uid, gid: gid, mode: os.FileMode(mode), typ: f[3]}
	}
	return m
}

// id looks name up in the root's passwd or group file.
func (r *root) id(file, name string) (int, bool) {
	b, err := os.ReadFile(r.path("etc/" + file))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 3 && f[0] == name {
			n, err := strconv.Atoi(f[2])
			return n, err == nil
		}
	}
	return 0, false
}

func (r *root) install(deb string) string {
	r.t.Helper()
	out, err := r.dpkg("-i", deb)
	if err != nil {
		r.t.Fatalf("dpkg -i %s: %v\n%s", filepath.Base(deb), err, out)
	}
	return out
}

// TestPackageInstallAndPurge installs the amd64 package into a fresh root
// and checks what it installed (owners, modes, static binaries that say
// their version, the conffile, the user), that systemd-analyze verify and
// security accept the unit as installed, and that a purge leaves nothing
// but the state directory and the user that owns it.
func TestPackageInstallAndPurge(t *testing.T) {
	_, deb := packages(t)
	r := newRoot(t)
	before := r.tree()

	out := r.install(deb)
	if s, v := r.status(); s != "installed" || v != newVersion {
		t.Fatalf("after dpkg -i: status %q version %q, want installed %s\n%s", s, v, newVersion, out)
	}
	// A fresh install is left stopped, and says what to do; with no
	// systemd running here (DPKG_ROOT) it says nothing about starting.
	if strings.Contains(out, "systemctl start") || strings.Contains(out, "Created symlink") {
		t.Errorf("postinst started or enabled gatewayd:\n%s", out)
	}

	uid, ok := r.id("passwd", "gatewayd")
	if !ok || uid == 0 {
		t.Fatalf("no gatewayd user in the root's /etc/passwd (uid %d)", uid)
	}
	gid, ok := r.id("group", "gatewayd")
	if !ok {
		t.Fatal("no gatewayd group in the root's /etc/group")
	}
	if g, err := os.ReadFile(r.path("etc/group")); err != nil || !regexp.MustCompile(`(?m)^bluetooth:x:\d+:(.*,)?gatewayd(,|$)`).Match(g) {
		t.Errorf("gatewayd is not in group bluetooth (Debian's bluez D-Bus policy):\n%s", g)
	}

	files := r.tree()
	want := map[string]entry{
		"/usr/bin/gatewayd":                                               {0, 0, 0o755, "f"},
		"/usr/bin/gatewayctl":                                             {0, 0, 0o755, "f"},
		"/usr/lib/systemd/system/gatewayd.service":                        {0, 0, 0o644, "f"},
		"/usr/lib/sysusers.d/gatewayd.conf":                               {0, 0, 0o644, "f"},
		"/usr/lib/tmpfiles.d/gatewayd.conf":                               {0, 0, 0o644, "f"},
		"/etc/gatewayd":                                                   {0, gid, 0o750, "d"},
		"/etc/gatewayd/gatewayd.toml":                                     {0, gid, 0o640, "f"},
		"/var/lib/gatewayd":                                               {uid, gid, 0o700, "d"},
		"/usr/share/man/man8/gatewayd.8.gz":                               {0, 0, 0o644, "f"},
		"/usr/share/man/man1/gatewayctl.1.gz":                             {0, 0, 0o644, "f"},
		"/usr/share/doc/gatewayd/examples/mosquitto/mosquitto.conf":       {0, 0, 0o644, "f"},
		"/usr/share/doc/gatewayd/examples/mosquitto/gatewayd.acl":         {0, 0, 0o644, "f"},
		"/usr/share/doc/gatewayd/examples/prometheus/gatewayd-alerts.yml": {0, 0, 0o644, "f"},
		"/usr/share/doc/gatewayd/examples/grafana/gatewayd-fleet.json":    {0, 0, 0o644, "f"},
		"/usr/share/doc/gatewayd/operations.md":                           {0, 0, 0o644, "f"},
	}
	for p, w := range want {
		got, ok := files[p]
		if !ok {
			t.Errorf("%s: not installed", p)
		} else if got != w {
			t.Errorf("%s: %s uid %d gid %d mode %#o; want %s uid %d gid %d mode %#o", p, got.typ, got.uid, got.gid, got.mode, w.typ, w.uid, w.gid, w.mode)
		}
	}
	// Nothing the package installed is writable by anyone but root.
	for p, e := range files {
		if _, old := before[p]; old || strings.HasPrefix(p, "/var/lib/dpkg/") || e.typ == "l" {
			continue
		}
		if e.mode&0o022 != 0 || (e.uid != 0 && p != "/var/lib/gatewayd") {
			t.Errorf("%s: uid %d mode %#o: writable by others than root", p, e.uid, e.mode)
		}
	}

	conffiles, _ := exec.Command("dpkg-query", "--admindir="+r.path("var/lib/dpkg"), "-W", "-f=${Conffiles}", "gatewayd").Output()
	if !strings.Contains(string(conffiles), "/etc/gatewayd/gatewayd.toml") {
		t.Errorf("gatewayd.toml is not a conffile: %q", conffiles)
	}

	for _, bin := range []string{"gatewayd", "gatewayctl"} {
		p := r.path("usr/bin/" + bin)
		if f, err := elf.Open(p); err != nil {
			t.Errorf("%s: %v", bin, err)
		} else {
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP {
					t.Errorf("%s is dynamically linked (PT_INTERP): want CGO_ENABLED=0", bin)
				}
			}
			f.Close()
		}
		out, err := exec.Command(p, "version").CombinedOutput()
		if err != nil || !regexp.MustCompile(`^`+bin+` version `+regexp.QuoteMeta(newVersion)+`\ncommit [0-9a-f]{40}(-dirty)?\nbuilt \d{4}-\d\d-\d\dT`).Match(out) ||
			strings.Contains(string(out), "devel") || strings.Contains(string(out), "unknown") {
			t.Errorf("%s version = %q, %v; want %s, a commit and a date, never (devel) or unknown", bin, out, err, newVersion)
		}
	}

	verifyUnit(t, r)

	// Purge, with a database in the state directory, keys beside the
	// configuration and the unit enabled: only the state directory (and
	// the user owning it) may remain.
	db := r.path("var/lib/gatewayd/gatewayd.db")
	writeDB(t, db)
	dbBytes, _ := os.ReadFile(db)
	if err := os.WriteFile(r.path("etc/gatewayd/gateway.key"), []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	wants := r.path("etc/systemd/system/multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/lib/systemd/system/gatewayd.service", filepath.Join(wants, "gatewayd.service")); err != nil {
		t.Fatal(err)
	}
	if out, err := r.dpkg("--purge", "gatewayd"); err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out)
	}
	if s, _ := r.status(); s != "not-installed" && s != "" {
		t.Errorf("after purge: status %q", s)
	}
	// What sysusers changed: the user stays with the state directory it
	// owns (Debian does not remove system users).
	userDB := map[string]bool{"/etc/passwd": true, "/etc/group": true, "/etc/shadow": true, "/etc/gshadow": true, "/etc/.pwd.lock": true,
		"/etc/passwd-": true, "/etc/group-": true, "/etc/shadow-": true, "/etc/gshadow-": true}
	after := r.tree()
	for p := range after {
		if _, ok := before[p]; ok || strings.HasPrefix(p, "/var/lib/dpkg/") || userDB[p] ||
			p == "/var/lib/gatewayd" || strings.HasPrefix(p, "/var/lib/gatewayd/") ||
			p == "/etc/systemd" || p == "/etc/systemd/system" || p == "/etc/systemd/system/multi-user.target.wants" {
			continue
		}
		t.Errorf("left after purge: %s", p)
	}
	for _, gone := range []string{"/etc/gatewayd", "/etc/systemd/system/multi-user.target.wants/gatewayd.service", "/usr/bin/gatewayd"} {
		if _, ok := after[gone]; ok {
			t.Errorf("left after purge: %s", gone)
		}
	}
	if got, err := os.ReadFile(db); err != nil || !bytes.Equal(got, dbBytes) {
		t.Errorf("purge changed or removed the database: %v", err)
	}
}

// verifyUnit runs systemd-analyze on the unit as installed in r: verify
// with no complaint (and a complaint once the binary is not executable,
// so that verify is known to look at the installed files), and security
// --offline with an exposure of at most 2.0.
func verifyUnit(t *testing.T, r *root) {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "verify", "--root="+r.dir, "gatewayd.service").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify --root of the installed unit: %v\n%s", err, out)
	}
	bin := r.path("usr/bin/gatewayd")
	if err := os.Chmod(bin, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command("systemd-analyze", "verify", "--root="+r.dir, "gatewayd.service").CombinedOutput()
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "not executable") {
		t.Errorf("systemd-analyze verify said nothing of a non-executable /usr/bin/gatewayd in the root: %q", out)
	}

	out, err = exec.Command("systemd-analyze", "security", "--offline=yes", "--root="+r.dir, "gatewayd.service").CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for gatewayd.service: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil || strings.Contains(string(out), "not executable") {
		t.Fatalf("systemd-analyze security --offline=yes --root: %v\n%s", err, out)
	}
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level > 2.0 {
		t.Errorf("exposure level %s, want at most 2.0 (it was 1.5):\n%s", m[1], out)
	}
	t.Logf("installed unit: systemd-analyze verify: no complaint; %s", m[0])
}

// writeDB writes a database with a lock and a finished command at path
// (mode 0600).
func writeDB(t *testing.T, path string) {
	t.Helper()
	db, err := bonds.Open(path, bonds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	lock := bonds.LockID{0x4c, 0x4b, 0, 0, 0, 0, 0, 1}
	if err := db.PutLock(ctx, bonds.Lock{ID: lock, Address: "C0:00:00:00:00:01", Bond: bonds.BondBonded}); err != nil {
		t.Fatal(err)
	}
	c := bonds.Command{ID: bonds.CommandID{0xc0, 1}, LockID: lock, Operator: "op-1", Operation: "unlock", Payload: []byte("payload")}
	if _, err := db.Append(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Transition(ctx, c.ID, bonds.StateRejected, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// setSchema writes version into the database's meta.schema_version, as a
// newer gatewayd's migration would have.
func setSchema(t *testing.T, path string, version uint64) {
	t.Helper()
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, version)
		return tx.Bucket([]byte("meta")).Put([]byte("schema_version"), v)
	})
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestPackageUpgradeAndDowngrade: a newer package installed over an older
// one keeps a populated database, which the new gatewayd reads and checks;
// a package whose gatewayd knows an older schema than the database's is
// refused by its preinst with a message saying what to do, the installed
// version stays, and the database is untouched. (Both packages are built
// from this tree, so the newer schema is simulated by writing a higher
// schema version into the database.)
func TestPackageUpgradeAndDowngrade(t *testing.T) {
	oldDeb, newDeb := packages(t)
	r := newRoot(t)
	r.install(oldDeb)
	if s, v := r.status(); s != "installed" || v != oldVersion {
		t.Fatalf("old package: status %q version %q", s, v)
	}
	db := r.path("var/lib/gatewayd/gatewayd.db")
	writeDB(t, db)
	before, _ := os.ReadFile(db)
	// The maintainer's edit of the configuration, which the upgrade keeps.
	conf := r.path("etc/gatewayd/gatewayd.toml")
	edited, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	edited = append(edited, "\n# edited at the dock\n"...)
	if err := os.WriteFile(conf, edited, 0o640); err != nil {
		t.Fatal(err)
	}

	out := r.install(newDeb)
	if s, v := r.status(); s != "installed" || v != newVersion {
		t.Fatalf("upgrade: status %q version %q\n%s", s, v, out)
	}
	gw := r.path("usr/bin/gatewayd")
	if got, err := os.ReadFile(conf); err != nil || !bytes.Equal(got, edited) {
		t.Errorf("the upgrade did not keep the edited gatewayd.toml (%v)", err)
	}
	gid, _ := r.id("group", "gatewayd")
	if e := r.tree()["/etc/gatewayd/gatewayd.toml"]; e.uid != 0 || e.gid != gid || e.mode != 0o640 {
		t.Errorf("after the upgrade gatewayd.toml is uid %d gid %d mode %#o, want root:gatewayd 0640", e.uid, e.gid, e.mode)
	}
	if got, err := os.ReadFile(db); err != nil || !bytes.Equal(got, before) {
		t.Errorf("the upgrade changed or removed the database (%v)", err)
	}
	if out, err := exec.Command(gw, "db", "check", "-db", db).CombinedOutput(); err != nil {
		t.Errorf("the new gatewayd's db check of the kept database: %v\n%s", err, out)
	}
	if out, err := exec.Command(gw, "db", "export", "-db", db).CombinedOutput(); err != nil || !strings.Contains(string(out), "4c4b000000000001") {
		t.Errorf("the new gatewayd's db export lacks the lock: %v\n%s", err, out)
	}
	if out, err := exec.Command(gw, "db", "schema", "-db", db).Output(); err != nil || strings.TrimSpace(string(out)) != strconv.Itoa(bonds.SchemaVersion) {
		t.Errorf("db schema after the upgrade = %q, %v; want %d", out, err, bonds.SchemaVersion)
	}

	// The newer gatewayd migrated the database to a schema the old one
	// does not know.
	newer := uint64(bonds.SchemaVersion + 1)
	setSchema(t, db, newer)
	before, _ = os.ReadFile(db)
	out, err = r.dpkg("-i", oldDeb)
	if err == nil {
		t.Fatalf("downgrade to %s over a schema-%d database was accepted:\n%s", oldVersion, newer, out)
	}
	wantMsg := fmt.Sprintf("refusing to install gatewayd %s: the database\n%s has schema version %d", oldVersion, db, newer)
	if !strings.Contains(out, wantMsg) || !strings.Contains(out, "restore a backup") {
		t.Errorf("downgrade refused without the reason and the way out; want %q in:\n%s", wantMsg, out)
	}
	if s, v := r.status(); s != "installed" || v != newVersion {
		t.Errorf("after the refused downgrade: status %q version %q, want installed %s", s, v, newVersion)
	}
	if got, err := os.ReadFile(db); err != nil || !bytes.Equal(got, before) {
		t.Errorf("the refused downgrade changed the database (%v)", err)
	}
	// What the old gatewayd would say of it, had it been installed anyway:
	// compact opens the file as the daemon does at start (bonds.Open's
	// schema check) and refuses it the same way, exit 78 aside.
	out2, err := exec.Command(gw, "db", "compact", "-db", db, "-o", filepath.Join(t.TempDir(), "copy.db")).CombinedOutput()
	wantOpen := fmt.Sprintf("schema version %d, this build knows up to %d; run the newer gatewayd, or restore a backup", newer, bonds.SchemaVersion)
	if err == nil || !strings.Contains(string(out2), wantOpen) {
		t.Errorf("opening a schema-%d database: %v\n%s\nwant %q", newer, err, out2, wantOpen)
	}
	t.Logf("downgrade refused:\n%s", out)
}

// TestManPagesNameEveryCommand: every command `gatewayd help`, `gatewayd
// db help` and `gatewayctl help` list has its own entry (a .TP heading)
// in the man page, and groff renders both pages without a warning.
func TestManPagesNameEveryCommand(t *testing.T) {
	need(t, "groff")
	dir := t.TempDir()
	for _, cmd := range []string{"gatewayd", "gatewayctl"} {
		c := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "./cmd/"+cmd)
		c.Dir = repo
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", cmd, err, out)
		}
	}
	help := func(cmd string, args ...string) string {
		out, err := exec.Command(filepath.Join(dir, cmd), args...).Output()
		if err != nil {
			t.Fatalf("%s %q: %v", cmd, args, err)
		}
		return string(out)
	}
	line := regexp.MustCompile(`(?m)^  ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?`)
	commands := func(usage, prefix string, twoWords map[string]bool) []string {
		var cs []string
		for _, m := range line.FindAllStringSubmatch(usage, -1) {
			c := m[1]
			if twoWords[c] && m[2] != "" {
				c += " " + m[2]
			}
			cs = append(cs, prefix+c)
		}
		return cs
	}
	gw := commands(help("gatewayd", "help"), "", map[string]bool{"db": true, "config": true})
	gw = append(gw, commands(help("gatewayd", "db", "help"), "db ", nil)...)
	ctl := commands(help("gatewayctl", "help"), "", nil)
	ctl = append(ctl, "version")
	for _, c := range []struct {
		page     string
		commands []string
	}{{"gatewayd.8", gw}, {"gatewayctl.1", ctl}} {
		src, err := os.ReadFile(c.page)
		if err != nil {
			t.Fatal(err)
		}
		headings := manHeadings(string(src))
		if len(c.commands) < 5 {
			t.Fatalf("found only %q in the help of %s", c.commands, c.page)
		}
		for _, cmd := range c.commands {
			found := false
			for _, h := range headings {
				found = found || h == cmd || strings.HasPrefix(h, cmd+" ") || strings.HasPrefix(h, cmd+",")
			}
			if !found {
				t.Errorf("%s has no entry for %q (headings: %q)", c.page, cmd, headings)
			}
		}
		out, err := exec.Command("groff", "-man", "-ww", "-z", c.page).CombinedOutput()
		if err != nil || len(out) != 0 {
			t.Errorf("groff -man -ww %s: %v\n%s", c.page, err, out)
		}
	}
}

// manHeadings returns the text of each .TP entry's tag line, without font
// escapes and with roff's \- as -.
func manHeadings(src string) []string {
	font := regexp.MustCompile(`\\f[BIRP]`)
	lines := strings.Split(src, "\n")
	var hs []string
	for i, l := range lines {
		if l != ".TP" || i+1 >= len(lines) {
			continue
		}
		h := lines[i+1]
		if strings.HasPrefix(h, ".") {
			_, h, _ = strings.Cut(h, " ")
		}
		h = strings.ReplaceAll(font.ReplaceAllString(h, ""), `\-`, "-")
		h = strings.ReplaceAll(h, `"`, "")
		hs = append(hs, strings.Join(strings.Fields(h), " "))
	}
	return hs
}
