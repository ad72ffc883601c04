package capture

import (
	"context"
	"errors"
	"fmt"
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
		{"; rm -rf /", false, "is not part of BPF syntax"},
		{"$(reboot)", false, "is not part of BPF syntax"},
		{"port 53 `id`", false, "is not part of BPF syntax"},
		{"udp\x00port 53", false, "printable ASCII"},
		{"udp\nport 53", false, "printable ASCII"},
		{strings.Repeat("udp or ", 800) + "udp", false, "longer than the limit of 1024"},
		{"   ", false, "only blanks"},
		{"udp port \xff", false, "printable ASCII"},
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

// acceptAllTcpdump is a tcpdump that accepts every filter, so that only the checker's own
// rules decide.
func acceptAllTcpdump(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tcpdump")
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// The rules a filter meets before tcpdump sees it, the only ones of the agent (policy
// decisions are checked with the same FilterChecker): one line of printable ASCII, at most
// MaxFilterLen bytes, not only blanks, no leading '-', none of ; $ `.
func TestFilterRules(t *testing.T) {
	fc := NewFilterChecker(acceptAllTcpdump(t))
	for _, tc := range []struct {
		filter string
		why    string // part of the refusal; "" accepts
	}{
		{"", ""},
		{"tcp port 80 and (src net 10.0.0.0/8 or dst host 10.1.2.3)", ""},
		{`tcp[tcpflags] & (tcp-syn|tcp-ack) != 0 && len - 14 > 64 || ether proto \arp`, ""},
		{strings.Repeat("x", MaxFilterLen), ""},
		{strings.Repeat("x", MaxFilterLen+1), "1025 bytes, longer than the limit of 1024"},
		{"-z /tmp/x", "starts with '-'"},
		{"  -w /etc/passwd", "starts with '-'"},
		{"; rm -rf /", `';' is not part of BPF syntax`},
		{"tcp $(reboot)", `'$' is not part of BPF syntax`},
		{"tcp `reboot`", "'`' is not part of BPF syntax"},
		{"   ", "only blanks"},
		{"tcp\x00-z", `byte 3 is "\x00"`},
		{"tcp\nudp", `byte 3 is "\n"`},
		{"tcp\tor udp", `byte 3 is "\t"`},
		{"\x1b[2J", `byte 0 is "\x1b"`},
		{"tcp\x7f", `byte 3 is "\x7f"`},
		{"host café", `byte 8 is "\xc3"`},
		{"host \u202etsoh", "byte 5 is"},
		{"udp port \xff", `byte 9 is "\xff"`},
	} {
		t.Run(fmt.Sprintf("%.40q", tc.filter), func(t *testing.T) {
			err := fc.Check(context.Background(), tc.filter)
			if tc.why == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidFilter) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("error %v, want ErrInvalidFilter mentioning %q", err, tc.why)
			}
		})
	}
}
