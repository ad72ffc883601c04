package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/policy"
)

// A PolicyError Event says the policy's error once, as `policy eval` prints it: the engine's
// error already names the policy version.
func TestPolicyErrorEventText(t *testing.T) {
	dir := t.TempDir()
	rule := "package podcap\n\ndecision := {\"capture\": true, \"colour\": \"red\"}\n"
	if err := os.WriteFile(filepath.Join(dir, "colour.rego"), []byte(rule), 0o600); err != nil {
		t.Fatal(err)
	}
	engine, err := policy.New(policy.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	f := newCtrl(t, Config{Policy: engine, Filters: fakeFilters{}}, pod("web", nil))
	f.sync(t, "default/web")
	want := "Warning PolicyError policy " + engine.Version() + ": decision.colour: unknown field " +
		"(known: capture, reason, files, file_size_bytes, snaplen, filter, max_duration, alert_fingerprints, stop_grace, cooldown, format, engine)"
	if ev := f.events(); len(ev) != 1 || ev[0] != want {
		t.Fatalf("events = %q\nwant [%q]", ev, want)
	}
}

// eventSink records Events through client-go's real broadcaster (with its correlator, which
// folds identical Events into one whose count grows) into a fake clientset.
type eventSink struct {
	client      *fake.Clientset
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	markers     int32 // marker Events recorded
}

func newEventSink(t *testing.T) *eventSink {
	t.Helper()
	s := &eventSink{client: fake.NewClientset(), broadcaster: record.NewBroadcaster()}
	s.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.client.CoreV1().Events("")})
	t.Cleanup(s.broadcaster.Shutdown)
	s.recorder = s.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "podcap-agent"})
	return s
}

// settled returns the Events of the pod once the broadcaster has written everything recorded
// before the call: a marker Event goes through the same ordered pipeline.
func (s *eventSink) settled(t *testing.T, p *corev1.Pod) []corev1.Event {
	t.Helper()
	s.recorder.Event(p, corev1.EventTypeNormal, "Marker", "marker")
	s.markers++ // identical: the correlator counts them on one Event
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := s.client.CoreV1().Events(p.Namespace).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out []corev1.Event
		marked := false
		for _, e := range list.Items {
			if e.Reason == "Marker" {
				marked = e.Count == s.markers
				continue
			}
			out = append(out, e)
		}
		if marked {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("the marker Event never arrived; events %+v", list.Items)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A refusal whose message would change only by a value the rule computes from input.now
// (rules/debug-until.rego's max_duration) is the same refusal at every evaluation: one
// Event, reported once while it lasts, and the same Event again (its count grows) when it
// comes back after it went away.
func TestRefusalOfComputedValueIsOneEvent(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(start)
	end := start.Add(30 * time.Hour) // beyond the node's 24h: refused
	valid := false
	p := &fakePolicy{version: "v1", decide: func(in policy.Input) (policy.Result, error) {
		d := policy.Decision{Capture: true, Reason: "debug window", Files: 2, FileSizeBytes: 1_000_000,
			MaxDuration: policy.Duration(end.Sub(in.Now))}
		if valid {
			d.MaxDuration = policy.Duration(time.Hour)
		}
		return policy.Result{Decision: d, ManualAllowed: true, Version: "v1"}, nil
	}}
	sink := newEventSink(t)
	web := pod("web", nil, func(p *corev1.Pod) { p.ResourceVersion = "1" })
	c, _ := newController(t, &fakeCaptures{ensured: map[string]capture.Spec{}}, sink.recorder,
		Config{Policy: p, Filters: fakeFilters{}, Clock: clk}, web)
	syncAt := func(rv string, step time.Duration) {
		t.Helper()
		clk.Step(step)
		w := web.DeepCopy()
		w.ResourceVersion = rv // a pod change: evaluated again, at another input.now
		if err := c.informer.GetIndexer().Update(w); err != nil {
			t.Fatal(err)
		}
		if err := c.sync(context.Background(), "default/web"); err != nil {
			t.Fatal(err)
		}
	}
	syncAt("1", 0)
	syncAt("2", 23*time.Millisecond)
	syncAt("3", 30*time.Second)
	if got := refusals(sink.settled(t, web)); len(got) != 1 || got[0].Count != 1 {
		t.Fatalf("refusal Events %s, want one with count 1", describeEvents(got))
	}
	valid = true
	syncAt("4", time.Second) // the refusal goes away
	valid = false
	syncAt("5", time.Second) // and comes back, with yet another max_duration
	got := refusals(sink.settled(t, web))
	if len(got) != 1 || got[0].Count != 2 {
		t.Fatalf("refusal Events %s, want one with count 2", describeEvents(got))
	}
	// the rule max_duration broke, without the value computed from input.now
	if want := "capture decision refused: invalid decision: max_duration: must be from 0 (no limit) to 24h0m0s on this node"; got[0].Message != want {
		t.Fatalf("message %q\nwant %q", got[0].Message, want)
	}
}

func refusals(evs []corev1.Event) []corev1.Event {
	var out []corev1.Event
	for _, e := range evs {
		if e.Reason == ReasonInvalidDecision {
			out = append(out, e)
		}
	}
	return out
}

func describeEvents(evs []corev1.Event) string {
	var b strings.Builder
	for _, e := range evs {
		b.WriteString("\n  " + e.Reason + " x" + strconv.Itoa(int(e.Count)) + ": " + e.Message)
	}
	return b.String()
}
