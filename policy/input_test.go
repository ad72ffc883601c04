package policy

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "shop",
			Name:      "web-0",
			UID:       "6f1c2b1e-0000-4000-8000-000000000001",
			Labels:    map[string]string{"app": "web", "podcap.io/capture": "true"},
			Annotations: map[string]string{
				"podcap.io/debug-until": "2026-03-01T12:10:00Z",
				lastApplied:             `{"apiVersion":"v1","kind":"Pod"}`,
			},
			OwnerReferences: []metav1.OwnerReference{
				{Kind: "Node", Name: "node-1"},
				{Kind: "StatefulSet", Name: "web", Controller: ptr.To(true)},
			},
		},
		Spec:   corev1.PodSpec{NodeName: "node-1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.7"},
	}
}

var testNow = time.Date(2026, 3, 1, 13, 0, 0, 500, time.FixedZone("CET", 3600))

func TestBuildInput(t *testing.T) {
	alert := Alert{
		Fingerprint: "a1b2", Status: "firing",
		Labels:   map[string]string{"alertname": "HighLatency", "pod": "web-0"},
		StartsAt: time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC),
	}
	tests := []struct {
		name   string
		pod    func(*corev1.Pod)
		manual Manual
		alerts []Alert
		check  func(t *testing.T, in Input)
	}{
		{
			name: "pod fields",
			check: func(t *testing.T, in Input) {
				want := PodInput{
					Namespace: "shop", Name: "web-0", UID: "6f1c2b1e-0000-4000-8000-000000000001",
					Labels:      map[string]string{"app": "web", "podcap.io/capture": "true"},
					Annotations: map[string]string{"podcap.io/debug-until": "2026-03-01T12:10:00Z"},
					Phase:       "Running", IP: "10.244.0.7",
					Owner: Owner{Kind: "StatefulSet", Name: "web"},
				}
				if !reflect.DeepEqual(in.Pod, want) {
					t.Errorf("pod = %+v\nwant %+v", in.Pod, want)
				}
				if in.Node != "node-1" || !in.Now.Equal(testNow) || in.Now.Location() != time.UTC {
					t.Errorf("node %q now %v: want node-1 and %v in UTC", in.Node, in.Now, testNow)
				}
				if in.Alerts == nil || len(in.Alerts) != 0 {
					t.Errorf("alerts = %#v, want an empty list", in.Alerts)
				}
			},
		},
		{
			name: "no owner, labels or annotations",
			pod: func(p *corev1.Pod) {
				p.OwnerReferences, p.Labels, p.Annotations = nil, nil, nil
				p.Spec.HostNetwork = true
				p.Status = corev1.PodStatus{Phase: corev1.PodPending}
			},
			check: func(t *testing.T, in Input) {
				if in.Pod.Owner != (Owner{}) || in.Pod.Labels == nil || in.Pod.Annotations == nil ||
					!in.Pod.HostNetwork || in.Pod.Phase != "Pending" || in.Pod.IP != "" {
					t.Errorf("pod = %+v", in.Pod)
				}
			},
		},
		{
			name: "no controller: first owner",
			pod: func(p *corev1.Pod) {
				p.OwnerReferences = []metav1.OwnerReference{{Kind: "Job", Name: "j"}, {Kind: "X", Name: "y", Controller: ptr.To(false)}}
			},
			check: func(t *testing.T, in Input) {
				if in.Pod.Owner != (Owner{Kind: "Job", Name: "j"}) {
					t.Errorf("owner = %+v", in.Pod.Owner)
				}
			},
		},
		{
			name:   "manual request and alerts",
			manual: Manual{Requested: true, Error: `annotation tcpdump.antrea.io="x" is not a valid capture request`},
			alerts: []Alert{alert},
			check: func(t *testing.T, in Input) {
				if !in.Manual.Requested || in.Manual.Files != 0 || in.Manual.Error == "" {
					t.Errorf("manual = %+v", in.Manual)
				}
				if len(in.Alerts) != 1 || in.Alerts[0].Fingerprint != "a1b2" || in.Alerts[0].Annotations == nil {
					t.Errorf("alerts = %+v", in.Alerts)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := testPod()
			if tt.pod != nil {
				tt.pod(pod)
			}
			before := pod.DeepCopy()
			in := BuildInput(pod, "node-1", testNow, tt.manual, tt.alerts, Limits{})
			tt.check(t, in)
			in.Pod.Labels["mutated"] = "yes"
			if !reflect.DeepEqual(pod, before) {
				t.Error("BuildInput shares or changed the pod's maps")
			}
		})
	}
}

// TestBuildInputLimits: input.limits is the node's limits (DefaultLimits for a zero field), the
// max_duration in whole seconds rounded down, so that a rule within it is never refused.
func TestBuildInputLimits(t *testing.T) {
	for _, tt := range []struct {
		limits Limits
		want   int64
	}{
		{Limits{}, 86400},
		{Limits{MaxDuration: 2 * time.Hour}, 7200},
		{Limits{MaxDuration: 90*time.Second + 999*time.Millisecond}, 90},
	} {
		in := BuildInput(testPod(), "node-1", testNow, Manual{}, nil, tt.limits)
		if in.Limits.MaxDurationSeconds != tt.want {
			t.Errorf("limits %v: input.limits.max_duration_seconds = %d, want %d", tt.limits.MaxDuration, in.Limits.MaxDurationSeconds, tt.want)
		}
		d := Decision{Capture: true, Files: 5, FileSizeBytes: 1_000_000, MaxDuration: Duration(time.Duration(tt.want) * time.Second)}
		if err := d.Validate(tt.limits); err != nil {
			t.Errorf("limits %v: a max_duration of input.limits.max_duration_seconds is refused: %v", tt.limits.MaxDuration, err)
		}
	}
}

// TestValueMatchesJSON holds Input.Value equal to the input's JSON, the document of CONTRACT.md.
func TestValueMatchesJSON(t *testing.T) {
	alerts := []Alert{{Fingerprint: "f", Status: "resolved", Labels: map[string]string{"a": "b"},
		StartsAt: testNow.Add(-time.Hour), EndsAt: testNow.Add(-time.Minute)}}
	for _, in := range []Input{
		BuildInput(testPod(), "node-1", testNow, Manual{Requested: true, Files: 3}, alerts, Limits{MaxDuration: 90*time.Minute + 500*time.Millisecond}),
		BuildInput(&corev1.Pod{}, "", time.Time{}, Manual{}, nil, Limits{}),
	} {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		want, err := ast.InterfaceToValue(doc)
		if err != nil {
			t.Fatal(err)
		}
		if got := in.Value(); got.Compare(want) != 0 {
			t.Errorf("Value() = %v\nJSON    = %v", got, want)
		}
	}
}
