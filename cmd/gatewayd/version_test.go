package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildGatewayd builds this command into a temporary directory with the
// given extra go build flags and returns the binary's path.
func buildGatewayd(t *testing.T, flags ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gatewayd")
	args := append(append([]string{"build", "-o", bin}, flags...), ".")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", flags, err, out)
	}
	return bin
}

// TestVersionFromLdflags: a release build's -ldflags -X values are what
// `gatewayd version` and `gatewayd --version` print, with the Go version.
func TestVersionFromLdflags(t *testing.T) {
	pkg := "github.com/gatewayd/gatewayd/internal/version"
	bin := buildGatewayd(t, "-ldflags", "-X "+pkg+".Version=v9.9.9 -X "+pkg+".Commit=cafe01 -X "+pkg+".Date=2026-12-07T00:00:00Z")
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).Output()
		if err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		want := "gatewayd version v9.9.9\ncommit cafe01\nbuilt 2026-12-07T00:00:00Z\ngo go1."
		if !strings.HasPrefix(string(out), want) {
			t.Errorf("%s: %q, want prefix %q", arg, out, want)
		}
	}
}

// TestVersionWithoutVCS: a build without VCS information and without
// -ldflags says so instead of a silent "(devel)".
func TestVersionWithoutVCS(t *testing.T) {
	bin := buildGatewayd(t, "-buildvcs=false")
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "gatewayd version unknown (built without VCS info)") ||
		!strings.Contains(string(out), "commit unknown (built without VCS info)") || strings.Contains(string(out), "(devel)") {
		t.Errorf("%q", out)
	}
}
