package agent

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/native"
	"github.com/podcap/podcap/agent/metrics"
	"github.com/podcap/podcap/policy"
)

// Every capture names its engine: the decision's, else the agent's --engine; the manual
// annotation always runs on --engine.
func TestCapturesRunOnTheEngineDecided(t *testing.T) {
	for _, tc := range []struct {
		name, agentDefault, decided, want string
	}{
		{"defaults", "", "", capture.EngineTcpdump},
		{"--engine native", capture.EngineNative, "", capture.EngineNative},
		{"decision native", capture.EngineTcpdump, policy.EngineNative, capture.EngineNative},
		{"decision tcpdump over --engine native", capture.EngineNative, policy.EngineTcpdump, capture.EngineTcpdump},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, rec := dnsDecision, recorderDecision
			d.Engine, rec.Engine = tc.decided, tc.decided
			f := newCtrl(t, Config{Policy: &fakePolicy{version: "v1", decide: recording(d, rec)}, Filters: fakeFilters{},
				Engines: Engines{Default: tc.agentDefault, NativeFilters: fakeFilters{}}},
				pod("web", nil), pod("manual", map[string]string{DefaultAnnotationKey: "2"}))
			f.sync(t, "default/web")
			f.sync(t, "default/manual")
			if s, ok := f.captures.spec("default/web"); !ok || s.Engine != tc.want {
				t.Errorf("policy capture: engine %q (ensured %v), want %q", s.Engine, ok, tc.want)
			}
			if s, ok := f.captures.RecorderStatus("default", "web"); !ok || s.Spec.Engine != tc.want {
				t.Errorf("flight recorder: engine %q (ensured %v), want %q", s.Spec.Engine, ok, tc.want)
			}
			wantManual := capture.EngineTcpdump
			if tc.agentDefault != "" {
				wantManual = tc.agentDefault
			}
			if s, ok := f.captures.spec("default/manual"); !ok || s.Engine != wantManual {
				t.Errorf("manual capture: engine %q (ensured %v), want %q", s.Engine, ok, wantManual)
			}
			if ev := f.events(); len(ev) != 0 {
				t.Errorf("events %q", ev)
			}
		})
	}
}

// A filter the native engine cannot run exactly (len > 100: the kernel sees the length 20
// bytes shorter than tcpdump's LINUX_SLL2 packet) is refused when the capture would run on
// the native engine, with an InvalidPolicyDecision Event and the invalid_decision metric;
// never widened, never run on tcpdump instead. On tcpdump it is fine.
func TestNativeEngineRefusesAFilterItCannotRunExactly(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed (make test installs it)")
	}
	for _, tc := range []struct {
		name, agentDefault, decided string
		refused                     string // "" accepted
	}{
		{"decision native", capture.EngineTcpdump, policy.EngineNative, "by its engine field"},
		{"--engine native", capture.EngineNative, "", "by the agent's --engine"},
		{"decision tcpdump over --engine native", capture.EngineNative, policy.EngineTcpdump, ""},
		{"tcpdump", capture.EngineTcpdump, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, rec := dnsDecision, recorderDecision
			d.Engine, rec.Engine = tc.decided, tc.decided
			d.Filter, rec.Filter = "udp and len > 100", "udp and len > 100"
			f := newCtrl(t, Config{Policy: &fakePolicy{version: "v1", decide: recording(d, rec)}, Filters: capture.NewFilterChecker("tcpdump"),
				Engines: Engines{Default: tc.agentDefault, NativeFilters: native.NewFilterChecker("tcpdump")}}, pod("web", nil))
			f.sync(t, "default/web")
			_, started := f.captures.spec("default/web")
			_, recording := f.captures.RecorderStatus("default", "web")
			ev := f.events()
			invalid := testutil.ToFloat64(f.metrics.PolicyErrors.WithLabelValues(metrics.PolicyErrorInvalid))
			if tc.refused == "" {
				if !started || !recording || len(ev) != 0 {
					t.Fatalf("capture %v, recorder %v, events %q; want both running, no event", started, recording, ev)
				}
				return
			}
			if started || recording || len(ev) != 2 || invalid != 2 {
				t.Fatalf("capture %v, recorder %v, events %q, invalid_decision %v; want neither, two events", started, recording, ev, invalid)
			}
			for i, prefix := range []string{"capture decision refused", "flight recorder decision refused"} {
				for _, want := range []string{"Warning InvalidPolicyDecision " + prefix, "filter cannot be run exactly by the native engine",
					"packet length", tc.refused, `ask for engine "tcpdump"`} {
					if !strings.Contains(ev[i], want) {
						t.Errorf("event %q lacks %q", ev[i], want)
					}
				}
			}
		})
	}
}

// A capture on an engine the node cannot run (the native engine failed to build) is refused
// by the manager: an Event and podcap_invalid_capture_requests_total{reason="engine"}.
func TestUnavailableEngineIsReported(t *testing.T) {
	f := newCtrl(t, Config{Engines: Engines{Default: capture.EngineNative}}, pod("web", map[string]string{DefaultAnnotationKey: "2"}))
	f.captures.err = fmt.Errorf("%w: the native engine cannot run on this node: socket: operation not permitted", capture.ErrEngineUnavailable)
	f.sync(t, "default/web")
	ev := f.events()
	if len(ev) != 1 || !strings.Contains(ev[0], "Warning InvalidCaptureRequest") || !strings.Contains(ev[0], "the native engine cannot run on this node") {
		t.Fatalf("events %q", ev)
	}
	if v := testutil.ToFloat64(f.metrics.InvalidRequests.WithLabelValues(metrics.InvalidEngine)); v != 1 {
		t.Fatalf(`podcap_invalid_capture_requests_total{reason="engine"} = %v, want 1`, v)
	}
}

func TestCheckDecisionNeedsANativeCheckerForNativeFilters(t *testing.T) {
	d := dnsDecision
	d.Engine = policy.EngineNative
	err := CheckDecision(context.Background(), d, nil, policy.DefaultLimits(), fakeFilters{}, Engines{})
	if err == nil || strings.Contains(err.Error(), ErrInvalidDecision.Error()) {
		t.Fatalf("CheckDecision without a native checker = %v, want a transient error", err)
	}
}
