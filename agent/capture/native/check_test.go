package native

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/podcap/podcap/agent/capture"
)

// The checker refuses, as a refusal of the filter, exactly what Open would refuse to run.
func TestFilterCheckerRefusesWhatTheNativeEngineCannotRunExactly(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed (make test installs it)")
	}
	f := NewFilterChecker("tcpdump")
	ctx := context.Background()
	for _, ok := range []string{"", "udp port 53", "tcp[tcpflags] & tcp-syn != 0", "ip6 and icmp6", "inbound", "host 10.0.0.1 and not port 22"} {
		if err := f.Check(ctx, ok); err != nil {
			t.Errorf("Check(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"len > 100", "greater 200", "link[12] = 1", "ether[0] = 1", "ip protochain 6"} {
		err := f.Check(ctx, bad)
		if !errors.Is(err, ErrUntranslatableFilter) || !errors.Is(err, capture.ErrInvalidFilter) {
			t.Errorf("Check(%q) = %v, want a refusal wrapping ErrUntranslatableFilter and capture.ErrInvalidFilter", bad, err)
		}
	}
	if err := f.Check(ctx, "port nonsense"); !errors.Is(err, capture.ErrInvalidFilter) || errors.Is(err, ErrUntranslatableFilter) {
		t.Errorf("Check of a filter tcpdump refuses = %v, want capture.ErrInvalidFilter only", err)
	}
	if err := f.Check(ctx, "len > 100"); err == nil || !strings.Contains(err.Error(), "packet length") {
		t.Errorf("cached verdict = %v, want the same refusal", err)
	}
	missing := NewFilterChecker("/nonexistent/tcpdump")
	if err := missing.Check(ctx, "udp"); err == nil || errors.Is(err, capture.ErrInvalidFilter) {
		t.Errorf("Check without tcpdump = %v, want a transient error", err)
	}
}
