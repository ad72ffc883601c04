package main

import (
	"bytes"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestVersionBinary builds the real agent with the Makefile's -ldflags and runs
// `podcap-agent --version`, `-version` and `podcap-agent version`: each prints the one line
// with the values the build set, and exits 0; `version` with an argument exits 2.
func TestVersionBinary(t *testing.T) {
	const pkg = "github.com/podcap/podcap/agent/version."
	bin := buildAgent(t, "-X "+pkg+"Version=v9.8.7-test -X "+pkg+"Commit=0123456789abcdef -X "+pkg+"BuildDate=2026-12-07T01:02:03Z")
	want := "podcap-agent v9.8.7-test (commit 0123456789abcdef, built 2026-12-07T01:02:03Z, " + runtime.Version() + ")\n"
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string // a part of it
	}{
		{[]string{"--version"}, 0, want, ""},
		{[]string{"-version"}, 0, want, ""},
		{[]string{"version"}, 0, want, ""},
		{[]string{"version", "extra"}, 2, "", "takes no arguments"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(t.Context(), bin, tc.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.Env = []string{} // no NODE_NAME: --version must not need the agent's flags
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || stdout.String() != tc.stdout || !strings.Contains(stderr.String(), tc.stderr) ||
				(tc.stderr == "" && stderr.Len() > 0) {
				t.Fatalf("podcap-agent %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q",
					tc.args, code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}
