// Package version says which build of gatewayd and gatewayctl runs: the
// version, the commit, the build date and the Go version. A release build
// sets them with the linker:
//
//	go build -ldflags "-X github.com/gatewayd/gatewayd/internal/version.Version=v1.2.0 \
//	    -X github.com/gatewayd/gatewayd/internal/version.Commit=$(git rev-parse HEAD) \
//	    -X github.com/gatewayd/gatewayd/internal/version.Date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
//
// Otherwise they come from the VCS information the go command stamps into
// a binary built inside a git checkout (vcs.revision, vcs.time,
// vcs.modified). A build with neither says so ("unknown (built without VCS
// info)") rather than a silent "(devel)".
//
// It is a leaf: standard library only.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags "-X <this package>.Version=..." (and Commit, Date).
var (
	Version string
	Commit  string
	Date    string
)

// Unknown stands for a value the build did not record.
const Unknown = "unknown (built without VCS info)"

// Info is what a build knows about itself.
type Info struct {
	// Version is the release (-X Version), else the module version when it
	// is a real one, else "devel+<commit>" when the commit is known, else
	// Unknown.
	Version string
	// Commit is the VCS revision, with "-dirty" when the tree had
	// uncommitted changes; Unknown when not recorded.
	Commit string
	// Date is the build date (-X Date), else the commit's time; Unknown
	// when not recorded.
	Date string
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// Get returns the running binary's Info.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return from(bi, Version, Commit, Date)
}

// from is Get with its inputs, for tests.
func from(bi *debug.BuildInfo, version, commit, date string) Info {
	in := Info{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version()}
	var modVersion, rev, vcsTime string
	var modified bool
	if bi != nil {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		modVersion = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if in.Commit == "" && rev != "" {
		in.Commit = rev
		if modified {
			in.Commit += "-dirty"
		}
	}
	if in.Date == "" {
		in.Date = vcsTime
	}
	if in.Version == "" {
		switch {
		case modVersion != "" && modVersion != "(devel)":
			in.Version = modVersion
		case in.Commit != "":
			c := in.Commit
			if len(rev) > 12 && c == rev || len(rev) > 12 && c == rev+"-dirty" {
				c = rev[:12] + c[len(rev):]
			}
			in.Version = "devel+" + c
		}
	}
	for _, p := range []*string{&in.Version, &in.Commit, &in.Date} {
		if *p == "" {
			*p = Unknown
		}
	}
	return in
}

// String is what the version commands print: one "name value" line each
// for version, commit, built and go.
func (in Info) String() string {
	return fmt.Sprintf("version %s\ncommit %s\nbuilt %s\ngo %s", in.Version, in.Commit, in.Date, in.GoVersion)
}
