package agent

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/metrics"
	"github.com/podcap/podcap/policy"
)

var recorderDecision = policy.Decision{Capture: true, Reason: "label podcap.io/recorder=true", Files: 2, FileSizeBytes: 1_000_000,
	Format: policy.FormatPcap}

// recording decides rec as the pod's recorder beside d.
func recording(d, rec policy.Decision) func(policy.Input) (policy.Result, error) {
	return func(policy.Input) (policy.Result, error) {
		return policy.Result{Decision: d, Recorder: rec, ManualAllowed: true, Version: "v1"}, nil
	}
}

func TestRecorderDecisionStartsRecorderBesideCapture(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: recording(dnsDecision, recorderDecision)}
	f := newPolicyCtrl(t, p, pod("web", nil))
	f.sync(t, "default/web")
	want := capture.Spec{Namespace: "default", Pod: "web", UID: "uid-web", Files: 2, FileSize: 1_000_000,
		Source: capture.SourceRecorder, Reason: "label podcap.io/recorder=true", Trigger: "reason: label podcap.io/recorder=true",
		Format: capture.FormatPcap, Engine: capture.EngineTcpdump}
	if s, ok := f.captures.RecorderStatus("default", "web"); !ok || s.Spec != want {
		t.Fatalf("recorder = %+v, want %+v", s.Spec, want)
	}
	if s, ok := f.captures.spec("default/web"); !ok || s.Source != capture.SourcePolicy {
		t.Fatalf("capture = %+v, %v: want the policy capture beside the recorder", s, ok)
	}
	if p.calls != 1 {
		t.Fatalf("%d evaluations, want one for both decisions", p.calls)
	}

	// the decision turns false: the recorder stops (its files deleted by the manager)
	p.mu.Lock()
	p.decide, p.version = recording(dnsDecision, policy.Decision{}), "v2"
	p.mu.Unlock()
	f.sync(t, "default/web")
	if _, ok := f.captures.RecorderStatus("default", "web"); ok || !slices.Contains(f.captures.recStopped, "default/web") {
		t.Fatalf("recorder not stopped (StopRecorder calls %v)", f.captures.recStopped)
	}
	if _, ok := f.captures.spec("default/web"); !ok {
		t.Fatal("stopping the recorder stopped the capture")
	}
}

func TestRecorderWithManualCaptureAndPodEnding(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: recording(policy.Decision{}, recorderDecision)}
	f := newPolicyCtrl(t, p, pod("web", map[string]string{DefaultAnnotationKey: "3"}))
	f.sync(t, "default/web")
	if _, ok := f.captures.RecorderStatus("default", "web"); !ok {
		t.Fatal("no recorder beside a manual capture")
	}
	if s, _ := f.captures.spec("default/web"); s.Source != capture.SourceManual {
		t.Fatalf("capture %+v, want the manual one", s)
	}
	if err := f.c.informer.GetIndexer().Update(pod("web", nil, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })); err != nil {
		t.Fatal(err)
	}
	f.sync(t, "default/web")
	if _, ok := f.captures.RecorderStatus("default", "web"); ok {
		t.Fatal("the recorder of a pod that stopped running still runs")
	}
}

func TestRecorderProblems(t *testing.T) {
	bad := recorderDecision
	bad.Files = 1000
	tests := []struct {
		name        string
		result      policy.Result
		hostNetwork bool
		wantEvent   string
		wantMetric  func(*metrics.Metrics) float64
	}{
		{"malformed", policy.Result{ManualAllowed: true, Version: "v1", RecorderErr: errors.New("policy v1: recorder.files: want an integer")},
			false, "Warning PolicyError flight recorder: policy v1: recorder.files",
			func(m *metrics.Metrics) float64 {
				return testutil.ToFloat64(m.PolicyErrors.WithLabelValues(metrics.PolicyErrorEval))
			}},
		{"over the limits", policy.Result{ManualAllowed: true, Version: "v1", Recorder: bad},
			false, "Warning InvalidPolicyDecision flight recorder decision refused: invalid decision: files: must be from 1 to 64",
			func(m *metrics.Metrics) float64 {
				return testutil.ToFloat64(m.PolicyErrors.WithLabelValues(metrics.PolicyErrorInvalid))
			}},
		{"host network", policy.Result{ManualAllowed: true, Version: "v1", Recorder: recorderDecision},
			true, "Warning InvalidCaptureRequest flight recorder: the pod uses the host's network namespace",
			func(m *metrics.Metrics) float64 {
				return testutil.ToFloat64(m.InvalidRequests.WithLabelValues(metrics.InvalidHostNetwork))
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakePolicy{version: "v1", decide: func(policy.Input) (policy.Result, error) { return tt.result, nil }}
			f := newPolicyCtrl(t, p, pod("web", nil, func(p *corev1.Pod) { p.Spec.HostNetwork = tt.hostNetwork }))
			f.sync(t, "default/web")
			f.sync(t, "default/web")
			if _, ok := f.captures.RecorderStatus("default", "web"); ok {
				t.Fatal("a refused recorder runs")
			}
			ev := f.events()
			if len(ev) != 1 || !strings.HasPrefix(ev[0], tt.wantEvent) {
				t.Fatalf("events = %q, want one %q", ev, tt.wantEvent)
			}
			if v := tt.wantMetric(f.metrics); v != 1 {
				t.Fatalf("metric = %v, want 1", v)
			}
		})
	}
}

// A policy that times out says nothing about the pod: a running recorder stays.
func TestRecorderKeptOnPolicyTimeout(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: recording(policy.Decision{}, recorderDecision)}
	f := newPolicyCtrl(t, p, pod("web", nil))
	f.sync(t, "default/web")
	p.mu.Lock()
	p.version = "v2"
	p.decide = func(policy.Input) (policy.Result, error) {
		return policy.Result{ManualAllowed: true, Version: "v2"}, policy.ErrEvalTimeout
	}
	p.mu.Unlock()
	f.sync(t, "default/web")
	if _, ok := f.captures.RecorderStatus("default", "web"); !ok || len(f.captures.recStopped) != 0 {
		t.Fatalf("recorder stopped by a policy timeout (StopRecorder calls %v)", f.captures.recStopped)
	}
}
