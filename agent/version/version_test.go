package version

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	vcs := []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "0123abc"},
		{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
		{Key: "vcs.modified", Value: "false"},
	}
	dirty := append(vcs[:3:3], debug.BuildSetting{Key: "vcs.modified", Value: "true"})
	for _, tc := range []struct {
		name                  string
		version, commit, date string
		settings              []debug.BuildSetting
		want                  Info
	}{
		{"no ldflags, no VCS stamp", "dev", "unknown", "unknown", nil,
			Info{"dev", "unknown", "unknown", "go1.x"}},
		{"no ldflags, VCS stamp", "dev", "unknown", "unknown", vcs,
			Info{"dev", "0123abc", "2026-12-01T10:00:00Z", "go1.x"}},
		{"no ldflags, dirty tree", "dev", "unknown", "unknown", dirty,
			Info{"dev", "0123abc-dirty", "2026-12-01T10:00:00Z", "go1.x"}},
		{"ldflags win over the VCS stamp", "v1.2.3", "fedcba9", "2026-12-07T01:00:00Z", dirty,
			Info{"v1.2.3", "fedcba9", "2026-12-07T01:00:00Z", "go1.x"}},
		{"empty ldflags values", "", "", "", nil,
			Info{"dev", "unknown", "unknown", "go1.x"}},
		{"commit set, date from VCS", "v1", "fedcba9", "unknown", vcs,
			Info{"v1", "fedcba9", "2026-12-01T10:00:00Z", "go1.x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolve(tc.version, tc.commit, tc.date, "go1.x", tc.settings); got != tc.want {
				t.Fatalf("resolve = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	got := Info{"v1.2.3", "fedcba9", "2026-12-07T01:00:00Z", "go1.26.0"}.String()
	if want := "v1.2.3 (commit fedcba9, built 2026-12-07T01:00:00Z, go1.26.0)"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

func TestGet(t *testing.T) {
	i := Get()
	if i.Version != Version || i.GoVersion != runtime.Version() || i.Commit == "" || i.BuildDate == "" {
		t.Fatalf("Get = %+v; want Version %q, GoVersion %q, Commit and BuildDate set", i, Version, runtime.Version())
	}
}
