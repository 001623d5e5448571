package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

// TestLinkerValuesWin: values set with -ldflags -X are reported as given,
// whatever the VCS information says.
func TestLinkerValuesWin(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "aaaa"}, {Key: "vcs.time", Value: "2020-01-01T00:00:00Z"}}}
	in := from(bi, "v1.2.0", "bbbb", "2026-12-01T10:00:00Z")
	if in != (Info{Version: "v1.2.0", Commit: "bbbb", Date: "2026-12-01T10:00:00Z", GoVersion: "go1.26.0"}) {
		t.Errorf("%+v", in)
	}
}

// TestVCSInfo: without -X, the commit, its time and a dirty tree come from
// the VCS settings, and the version names the commit instead of "(devel)".
func TestVCSInfo(t *testing.T) {
	rev := "0123456789abcdef0123456789abcdef01234567"
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"}}}
	in := from(bi, "", "", "")
	want := Info{Version: "devel+0123456789ab-dirty", Commit: rev + "-dirty", Date: "2026-12-01T10:00:00Z", GoVersion: "go1.26.0"}
	if in != want {
		t.Errorf("got %+v, want %+v", in, want)
	}
}

// TestNoVCSInfo: a build without VCS information says so, never "(devel)"
// and never an empty field.
func TestNoVCSInfo(t *testing.T) {
	for _, bi := range []*debug.BuildInfo{nil, {Main: debug.Module{Version: "(devel)"}}} {
		in := from(bi, "", "", "")
		if in.Version != Unknown || in.Commit != Unknown || in.Date != Unknown || in.GoVersion == "" {
			t.Errorf("%+v", in)
		}
		if strings.Contains(in.String(), "(devel)") {
			t.Errorf("%q", in.String())
		}
	}
}
