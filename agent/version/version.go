// Package version is the build's identity: the version, commit and build date the build set
// with -ldflags -X (the Makefile and the Dockerfile do), else what the Go tool recorded of the
// repository (vcs.revision, vcs.time), else "dev" and "unknown". The agent prints it for
// `podcap-agent version`, logs it at start and exports it as podcap_build_info; the kubectl
// plugin prints it for `kubectl podcap version`.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at build time, e.g.
//
//	go build -ldflags "-X github.com/podcap/podcap/agent/version.Version=v0.1.0 \
//	  -X github.com/podcap/podcap/agent/version.Commit=$(git rev-parse HEAD) \
//	  -X github.com/podcap/podcap/agent/version.BuildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
//
// Read them through Get, which fills in what the build left unset.
var (
	Version   = "dev"
	Commit    = "unknown"
	BuildDate = "unknown"
)

// Info is one build's identity.
type Info struct {
	Version   string // a tag (git describe), or "dev"
	Commit    string // the git commit, or "unknown"
	BuildDate string // RFC 3339 UTC, or "unknown"
	GoVersion string // the Go release that built the binary (runtime.Version)
}

// Get is this binary's Info: the -ldflags values, with Commit and BuildDate taken from the Go
// tool's VCS stamp (vcs.revision, with "-dirty" if vcs.modified; vcs.time) where the build left
// them unset.
func Get() Info {
	var settings []debug.BuildSetting
	if bi, ok := debug.ReadBuildInfo(); ok {
		settings = bi.Settings
	}
	return resolve(Version, Commit, BuildDate, runtime.Version(), settings)
}

// resolve is Get on explicit inputs.
func resolve(version, commit, date, goVersion string, settings []debug.BuildSetting) Info {
	i := Info{Version: version, Commit: commit, BuildDate: date, GoVersion: goVersion}
	vcs := map[string]string{}
	for _, s := range settings {
		vcs[s.Key] = s.Value
	}
	if i.Commit == "" || i.Commit == "unknown" {
		if rev := vcs["vcs.revision"]; rev != "" {
			i.Commit = rev
			if vcs["vcs.modified"] == "true" {
				i.Commit += "-dirty"
			}
		}
	}
	if i.BuildDate == "" || i.BuildDate == "unknown" {
		if t := vcs["vcs.time"]; t != "" {
			i.BuildDate = t // the commit's time, the closest the Go tool records
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	if i.BuildDate == "" {
		i.BuildDate = "unknown"
	}
	return i
}

// String is the one line `podcap-agent version` prints, e.g.
// "v0.1.0 (commit 8a7e941, built 2026-12-07T01:00:00Z, go1.26.0)".
func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, built %s, %s)", i.Version, i.Commit, i.BuildDate, i.GoVersion)
}
