package capture

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestFilterChecker(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed (make test installs it)")
	}
	fc := NewFilterChecker("tcpdump")
	ctx := context.Background()
	for _, tc := range []struct {
		filter string
		ok     bool
		why    string // part of the error
	}{
		{"", true, ""},
		{"udp port 53", true, ""},
		{"tcp and (port 80 or port 443) and not host 10.0.0.1", true, ""},
		{"not-a-filter((", false, "tcpdump does not accept"},
		{"-z /tmp/x", false, "starts with '-'"},
		{"  -w /etc/passwd", false, "starts with '-'"},
		{"; rm -rf /", false, "tcpdump does not accept"},
		{"$(reboot)", false, "tcpdump does not accept"},
		{"port 53 `id`", false, "tcpdump does not accept"},
		{"udp\x00port 53", false, "control character"},
		{"udp\nport 53", false, "control character"},
		{strings.Repeat("udp or ", 800) + "udp", false, "at most 1024"},
		{"   ", false, "white space"},
		{"udp port \xff", false, "UTF-8"},
		// compiled for the link type of -i any captures, LINUX_SLL2, not Ethernet
		{"ether host 1:2:3:4:5:6", false, "ethernet addresses supported only"},
		{"vlan", false, "no VLAN support for Linux cooked v2"},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			err := fc.Check(ctx, tc.filter)
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalidFilter) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("error %q, want ErrInvalidFilter mentioning %q", err, tc.why)
			}
		})
	}
}

func TestFilterCheckerCachesVerdicts(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed (make test installs it)")
	}
	fc := NewFilterChecker("tcpdump")
	for range 3 {
		if err := fc.Check(context.Background(), "udp port 53"); err != nil {
			t.Fatal(err)
		}
		if err := fc.Check(context.Background(), "bogus(("); err == nil {
			t.Fatal("accepted bogus((")
		}
	}
	if fc.compiles != 2 {
		t.Fatalf("tcpdump ran %d times for 2 distinct filters", fc.compiles)
	}
}

func TestFilterCheckerMissingTcpdumpIsNotCached(t *testing.T) {
	fc := NewFilterChecker("/nonexistent/tcpdump")
	err := fc.Check(context.Background(), "udp")
	if err == nil || errors.Is(err, ErrInvalidFilter) {
		t.Fatalf("error %v, want a non-filter error", err)
	}
	if len(fc.verdicts) != 0 {
		t.Fatal("a failure to run tcpdump was cached as a verdict")
	}
}

// The check compiles for a link type, never for an interface: `tcpdump -d -i any` would open
// an AF_PACKET socket on the host just to compile.
func TestFilterCheckerOpensNoInterface(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "tcpdump")
	// records its arguments, one a line, and accepts every filter
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$0.args\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := NewFilterChecker(fake).Check(context.Background(), "udp port 53"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fake + ".args")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"), []string{"-d", "-y", "LINUX_SLL2", "--", "udp port 53"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("tcpdump argv %q, want %q", got, want)
	}
}
