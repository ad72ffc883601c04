package policy

import (
	"context"
	"testing"
	"time"
)

// TestShippedDebugUntilWithinNodeLimit: a debug-until window further ahead than the node's
// --max-capture-duration is a capture of that limit that the node's own validation accepts
// (it was refused before the rule read input.limits, and captured nothing), whatever the limit;
// a window within the limit is the time left; a past one is nothing.
func TestShippedDebugUntilWithinNodeLimit(t *testing.T) {
	e := newTestEngine(t, rulesDir)
	now := testNow.UTC() // 12:00:00.0000005Z
	for _, limit := range []time.Duration{0, 24 * time.Hour, 2 * time.Hour, 90*time.Second + 500*time.Millisecond} {
		l := Limits{MaxDuration: limit}
		max := l.withDefaults().MaxDuration.Truncate(time.Second)
		for _, tt := range []struct {
			until   time.Time
			capture bool
			want    time.Duration
		}{
			{now.Add(72 * time.Hour), true, max},
			{now.Add(25 * time.Hour), true, max},
			{now.Add(max), true, max}, // 0.5 µs later than the limit, rounded up to a second: clamped
			{now.Add(60 * time.Second), true, 60 * time.Second},
			{now.Add(-time.Hour), false, 0},
		} {
			pod := testPod()
			pod.Namespace, pod.Labels = "shop", nil
			pod.Annotations = map[string]string{"podcap.io/debug-until": tt.until.Format(time.RFC3339)}
			in := BuildInput(pod, "node-1", testNow, Manual{}, nil, l)
			r, err := e.Decide(context.Background(), in)
			if err != nil {
				t.Fatalf("limit %v, until %s: %v", limit, tt.until.Format(time.RFC3339), err)
			}
			d := r.Decision
			if d.Capture != tt.capture || time.Duration(d.MaxDuration) != tt.want {
				t.Errorf("limit %v, until %s: capture %v max_duration %v, want %v %v",
					limit, tt.until.Format(time.RFC3339), d.Capture, time.Duration(d.MaxDuration), tt.capture, tt.want)
			}
			if err := d.Validate(l); err != nil {
				t.Errorf("limit %v, until %s: the node refuses the shipped rule's decision: %v", limit, tt.until.Format(time.RFC3339), err)
			}
		}
	}
}

// TestShippedAlertsWithinNodeLimits: rules/alerts.rego's decision for an alert, with its
// defaults or with annotations asking for more than the node allows, is accepted by a node
// whose limits are below the rule's defaults, and by one at the flags' defaults.
func TestShippedAlertsWithinNodeLimits(t *testing.T) {
	e := newTestEngine(t, rulesDir)
	for _, l := range []Limits{{}, {MaxFiles: 3, MaxFileSizeBytes: 500_000, MaxDuration: 30 * time.Minute}, {MaxFiles: 1, MaxFileSizeBytes: 65536, MaxDuration: time.Second}} {
		for _, ann := range []map[string]string{
			{},
			{"podcap_files": "64", "podcap_file_size_bytes": "100000000", "podcap_max_duration": "24h"},
		} {
			pod := testPod()
			pod.Namespace, pod.Labels = "shop", nil
			alert := Alert{Fingerprint: "fp1", Status: "firing", StartsAt: testNow.Add(-time.Minute),
				Labels: map[string]string{"alertname": "A", "namespace": "shop", "pod": pod.Name}, Annotations: ann}
			in := BuildInput(pod, "node-1", testNow, Manual{}, []Alert{alert}, l)
			r, err := e.Decide(context.Background(), in)
			if err != nil {
				t.Fatalf("limits %+v, annotations %v: %v", l, ann, err)
			}
			if !r.Decision.Capture {
				t.Fatalf("limits %+v, annotations %v: no capture: %+v", l, ann, r.Decision)
			}
			if err := r.Decision.Validate(l); err != nil {
				t.Errorf("limits %+v, annotations %v: the node refuses the shipped rule's decision: %v", l, ann, err)
			}
		}
	}
}
