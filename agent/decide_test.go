package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/metrics"
	"github.com/podcap/podcap/policy"
)

// fakePolicy decides with a function and counts its evaluations. Like policy.Engine, it
// returns ctx's error when ctx has ended.
type fakePolicy struct {
	mu      sync.Mutex
	version string
	decide  func(policy.Input) (policy.Result, error)
	calls   int
	inputs  []policy.Input
}

var _ Policy = (*fakePolicy)(nil)

func (p *fakePolicy) Decide(ctx context.Context, in policy.Input) (policy.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	p.inputs = append(p.inputs, in)
	if err := ctx.Err(); err != nil {
		return policy.Result{ManualAllowed: true, Version: p.version}, fmt.Errorf("evaluate policy %s: %w", p.version, err)
	}
	return p.decide(in)
}

func (p *fakePolicy) Version() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.version
}

// fakeFilters refuses the filters it is told to, as capture.FilterChecker would.
type fakeFilters map[string]bool

func (f fakeFilters) Check(_ context.Context, filter string) error {
	if f[filter] {
		return fmt.Errorf("%w: tcpdump does not accept %q", capture.ErrInvalidFilter, filter)
	}
	return nil
}

func capturing(d policy.Decision) func(policy.Input) (policy.Result, error) {
	return func(policy.Input) (policy.Result, error) {
		return policy.Result{Decision: d, ManualAllowed: true, Version: "v1"}, nil
	}
}

var dnsDecision = policy.Decision{Capture: true, Reason: "dns", Files: 2, FileSizeBytes: 1_000_000, Snaplen: 256,
	Filter: "udp port 53", MaxDuration: policy.Duration(10 * time.Minute)}

func newPolicyCtrl(t *testing.T, p *fakePolicy, pods ...*corev1.Pod) *ctrlFixture {
	t.Helper()
	return newCtrl(t, Config{Policy: p, Filters: fakeFilters{"-z /tmp/x": true}}, pods...)
}

func TestPolicyDecisionStartsCapture(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
	f := newPolicyCtrl(t, p, pod("web", nil, func(p *corev1.Pod) { p.Labels = map[string]string{"team": "x"} }))
	f.sync(t, "default/web")
	s, ok := f.captures.spec("default/web")
	want := capture.Spec{Namespace: "default", Pod: "web", UID: "uid-web", Files: 2, FileSize: 1_000_000, Snaplen: 256,
		Filter: "udp port 53", Source: capture.SourcePolicy, MaxDuration: 10 * time.Minute, Reason: "dns",
		Trigger: "reason: dns", Format: capture.FormatPcap, Engine: capture.EngineTcpdump}
	if !ok || s != want {
		t.Fatalf("spec = %+v, want %+v", s, want)
	}
	in := p.inputs[0]
	if in.Node != "node-a" || in.Pod.Labels["team"] != "x" || in.Manual.Requested || len(in.Alerts) != 0 {
		t.Fatalf("input = %+v", in)
	}
}

// TestPolicyInputLimits: the input carries the node's limits (Config.Limits, the agent's
// --max-capture-duration; the default 24h when unset), so that a rule can stay within them.
func TestPolicyInputLimits(t *testing.T) {
	for _, tt := range []struct {
		limit time.Duration
		want  int64
	}{{0, 86400}, {2 * time.Hour, 7200}} {
		p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
		f := newCtrl(t, Config{Policy: p, Filters: fakeFilters{}, Limits: policy.Limits{MaxDuration: tt.limit}}, pod("web", nil))
		f.sync(t, "default/web")
		if got := p.inputs[0].Limits.MaxDurationSeconds; got != tt.want {
			t.Errorf("--max-capture-duration %v: input.limits.max_duration_seconds = %d, want %d", tt.limit, got, tt.want)
		}
	}
}

func TestManualAnnotationWinsOverPolicy(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
	f := newPolicyCtrl(t, p, pod("web", map[string]string{DefaultAnnotationKey: "4"}))
	f.sync(t, "default/web")
	if s, _ := f.captures.spec("default/web"); s.Source != capture.SourceManual || s.Files != 4 || s.Filter != "" {
		t.Fatalf("spec = %+v, want the manual ring of 4", s)
	}
	if in := p.inputs[0]; !in.Manual.Requested || in.Manual.Files != 4 {
		t.Fatalf("manual input = %+v", in.Manual)
	}
}

func TestPolicyVetoesManualRequest(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: func(policy.Input) (policy.Result, error) {
		return policy.Result{ManualAllowed: false, Version: "v1"}, nil
	}}
	f := newPolicyCtrl(t, p, pod("web", map[string]string{DefaultAnnotationKey: "4"}))
	f.sync(t, "default/web")
	f.sync(t, "default/web")
	if _, ok := f.captures.spec("default/web"); ok {
		t.Fatal("a vetoed manual request started a capture")
	}
	ev := f.events()
	if len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning ManualCaptureVetoed") {
		t.Fatalf("events = %q", ev)
	}
	if v := testutil.ToFloat64(f.metrics.PolicyErrors.WithLabelValues(metrics.PolicyErrorVeto)); v != 1 {
		t.Fatalf("veto metric = %v", v)
	}
}

func TestBrokenPolicyKeepsManualPath(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: func(policy.Input) (policy.Result, error) {
		return policy.Result{ManualAllowed: true}, errors.New(`decision: unknown field "fils"`)
	}}
	f := newPolicyCtrl(t, p, pod("manual", map[string]string{DefaultAnnotationKey: "2"}), pod("auto", nil))
	f.sync(t, "default/manual")
	f.sync(t, "default/auto")
	if s, ok := f.captures.spec("default/manual"); !ok || s.Files != 2 {
		t.Fatal("a broken policy stopped the manual path")
	}
	if _, ok := f.captures.spec("default/auto"); ok {
		t.Fatal("a broken policy started a capture")
	}
	ev := f.events()
	if len(ev) != 2 || !strings.Contains(ev[0], "PolicyError") || !strings.Contains(ev[0], `unknown field "fils"`) {
		t.Fatalf("events = %q", ev)
	}
}

func TestInvalidDecisionsAreRefused(t *testing.T) {
	for name, d := range map[string]policy.Decision{
		"hostile filter": {Capture: true, Files: 1, FileSizeBytes: 1_000_000, Filter: "-z /tmp/x"},
		"too many files": {Capture: true, Files: 1000, FileSizeBytes: 1_000_000},
		"tiny snaplen":   {Capture: true, Files: 1, FileSizeBytes: 1_000_000, Snaplen: 1},
	} {
		t.Run(name, func(t *testing.T) {
			f := newPolicyCtrl(t, &fakePolicy{version: "v1", decide: capturing(d)}, pod("web", nil))
			f.sync(t, "default/web")
			if _, ok := f.captures.spec("default/web"); ok {
				t.Fatal("an invalid decision started a capture")
			}
			if ev := f.events(); len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning InvalidPolicyDecision") {
				t.Fatalf("events = %q", ev)
			}
		})
	}
}

func TestDecisionsAreCachedUntilPodOrPolicyChanges(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
	web := pod("web", nil)
	web.ResourceVersion = "10"
	f := newPolicyCtrl(t, p, web)
	f.sync(t, "default/web")
	f.sync(t, "default/web")
	if p.calls != 1 {
		t.Fatalf("%d evaluations of an unchanged pod, want 1", p.calls)
	}
	changed := web.DeepCopy()
	changed.ResourceVersion = "11"
	if err := f.c.informer.GetIndexer().Update(changed); err != nil {
		t.Fatal(err)
	}
	f.sync(t, "default/web")
	p.mu.Lock()
	p.version = "v2"
	p.mu.Unlock()
	f.sync(t, "default/web")
	if p.calls != 3 {
		t.Fatalf("%d evaluations, want 3 (new resourceVersion, new policy version)", p.calls)
	}
	if v := testutil.ToFloat64(f.metrics.PolicyEvaluations.WithLabelValues("cached")); v != 1 {
		t.Fatalf("cached evaluations = %v, want 1", v)
	}
	// a deleted pod's decision is forgotten
	if err := f.c.informer.GetIndexer().Delete(changed); err != nil {
		t.Fatal(err)
	}
	f.sync(t, "default/web")
	if n := len(f.c.decisions.entries); n != 0 {
		t.Fatalf("%d cached decisions after the pod was deleted", n)
	}
}

func TestExplainShowsInputDecisionAndCapture(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
	f := newPolicyCtrl(t, p, pod("web", nil))
	f.sync(t, "default/web")
	e, err := f.c.Explain(context.Background(), "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if e.Input == nil || e.Input.Pod.Name != "web" || e.Decision == nil || !e.Decision.Capture || e.ManualAllowed == nil ||
		e.Capture == nil || e.Capture.Filter != "udp port 53" || e.PolicyVersion != "v1" {
		t.Fatalf("explanation = %+v", e)
	}
	if _, err := f.c.Explain(context.Background(), "default", "nope"); err == nil {
		t.Fatal("explained a pod that is not on the node")
	}
}

func TestVetoHoldsWhenDecisionIsMalformed(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: func(policy.Input) (policy.Result, error) {
		return policy.Result{ManualAllowed: false}, errors.New(`decision.files: want an integer, got string "3"`)
	}}
	f := newPolicyCtrl(t, p, pod("web", map[string]string{DefaultAnnotationKey: "2"}))
	f.sync(t, "default/web")
	if _, ok := f.captures.spec("default/web"); ok {
		t.Fatal("a malformed decision lifted the policy's veto")
	}
}

// A sync whose context ends during the evaluation (the agent stopping) is retried: the
// cancellation is neither cached nor read as the policy's answer, so the capture stays.
func TestCancelledEvaluationIsNotADecision(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
	f := newPolicyCtrl(t, p, pod("web", nil))
	f.sync(t, "default/web")
	before, _ := f.captures.spec("default/web")
	p.mu.Lock()
	p.version = "v2" // the cached decision no longer applies
	p.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.c.sync(ctx, "default/web"); !errors.Is(err, context.Canceled) {
		t.Fatalf("sync with a cancelled context: %v, want a (retried) context.Canceled", err)
	}
	if s, ok := f.captures.spec("default/web"); !ok || s != before || len(f.captures.stopped) != 0 {
		t.Fatalf("capture %+v %v (stopped %v) after a cancelled evaluation, want it unchanged", s, ok, f.captures.stopped)
	}
	if e := f.c.decisions.entries["default/web"]; e.policyVersion != "v1" || e.err != nil {
		t.Fatalf("cached %+v: the cancellation was cached", e)
	}
	if ev := f.events(); len(ev) != 0 {
		t.Fatalf("events = %q", ev)
	}
	f.sync(t, "default/web")
	if p.calls != 3 {
		t.Fatalf("%d evaluations, want 3: the next sync evaluates again", p.calls)
	}
	if s, ok := f.captures.spec("default/web"); !ok || s != before {
		t.Fatalf("capture %+v %v", s, ok)
	}
}

// A timed-out evaluation is a PolicyError that says so, and transient: the pod's running
// policy capture stays, no policy capture starts, a manual ring whose annotation is gone stops.
func TestEvalTimeoutKeepsPolicyCapture(t *testing.T) {
	timedOut := func(policy.Input) (policy.Result, error) {
		return policy.Result{ManualAllowed: true, Version: "v2"}, fmt.Errorf("evaluate policy v2: %w after 1s", policy.ErrEvalTimeout)
	}
	p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
	f := newPolicyCtrl(t, p, pod("web", nil), pod("idle", nil), pod("manual", map[string]string{DefaultAnnotationKey: "2"}))
	for _, key := range []string{"default/web", "default/manual"} {
		f.sync(t, key)
	}
	before, _ := f.captures.spec("default/web")
	p.mu.Lock()
	p.version, p.decide = "v2", timedOut
	p.mu.Unlock()
	unannotated := pod("manual", nil)
	if err := f.c.informer.GetIndexer().Update(unannotated); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, key := range []string{"default/web", "default/idle", "default/manual"} {
			f.sync(t, key)
		}
	}
	if s, ok := f.captures.spec("default/web"); !ok || s != before {
		t.Fatalf("policy capture %+v %v after a timeout, want it unchanged", s, ok)
	}
	if _, ok := f.captures.spec("default/idle"); ok {
		t.Fatal("a timed-out evaluation started a capture")
	}
	if _, ok := f.captures.spec("default/manual"); ok {
		t.Fatal("a timed-out evaluation kept a manual ring whose annotation is gone")
	}
	if got := strings.Join(f.captures.stopped, ","); got != "graceful:default/idle,graceful:default/manual,graceful:default/idle,graceful:default/manual" {
		t.Fatalf("stopped = %s", got)
	}
	ev := f.events()
	if len(ev) != 3 {
		t.Fatalf("events = %q, want one PolicyError per pod", ev)
	}
	for _, e := range ev {
		if !strings.HasPrefix(e, "Warning PolicyError") || !strings.Contains(e, "policy evaluation timed out after 1s") {
			t.Fatalf("event %q, want a PolicyError that says the evaluation timed out", e)
		}
	}
	if v := testutil.ToFloat64(f.metrics.PolicyErrors.WithLabelValues(metrics.PolicyErrorEval)); v != 3 {
		t.Fatalf("policy error metric = %v, want 3", v)
	}
}

// The filter rules have one owner, capture.FilterChecker: a policy decision's filter gets the
// same verdict, for the same reason, as the capture package gives it, and policy's own
// validation has no opinion on filters.
func TestFilterRulesHaveOneOwner(t *testing.T) {
	tcpdump := filepath.Join(t.TempDir(), "tcpdump")
	// accepts every filter: only the checker's own rules decide
	if err := os.WriteFile(tcpdump, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, filter := range []string{
		"udp port 53", `tcp[tcpflags] & (tcp-syn|tcp-ack) != 0 || ether proto \arp`, "   ",
		"-z /tmp/x", "  -w /etc/passwd", "; rm -rf /", "tcp $(reboot)", "tcp `reboot`",
		"tcp\x00-z", "tcp\nudp", "tcp\tor udp", "\x1b[2J", "tcp\x7f", "host café", "host \u202etsoh", "udp port \xff",
		strings.Repeat("udp or ", 146) + "udp", strings.Repeat("udp or ", 147) + "udp",
	} {
		t.Run(fmt.Sprintf("%.40q", filter), func(t *testing.T) {
			d := dnsDecision
			d.Filter = filter
			if err := d.Validate(policy.Limits{}); err != nil {
				t.Fatalf("policy validated the filter itself: %v", err)
			}
			verdict := capture.NewFilterChecker(tcpdump).Check(context.Background(), filter)
			f := newCtrl(t, Config{Policy: &fakePolicy{version: "v1", decide: capturing(d)}, Filters: capture.NewFilterChecker(tcpdump)}, pod("web", nil))
			f.sync(t, "default/web")
			_, started := f.captures.spec("default/web")
			ev := f.events()
			switch {
			case verdict == nil && (!started || len(ev) != 0):
				t.Fatalf("capture accepts the filter; the policy path started %v, events %q", started, ev)
			case verdict != nil && (started || len(ev) != 1 || !strings.Contains(ev[0], verdict.Error())):
				t.Fatalf("capture refuses the filter (%v); the policy path started %v, events %q", verdict, started, ev)
			}
		})
	}
}
