package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/metrics"
)

func TestParseRingSize(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  int
	}{
		{"1", 1}, {"3", 3}, {"64", 64}, {"03", 3},
		{"", 0}, {"0", 0}, {"-1", 0}, {"+3", 0}, {"abc", 0}, {"1e3", 0}, {" 3", 0}, {"3 ", 0},
		{"65", 0}, {"3.0", 0}, {"0x10", 0}, {"99999999999999999999", 0}, {"١", 0},
	} {
		t.Run(tc.value, func(t *testing.T) {
			n, bad := parseRingSize("tcpdump.antrea.io", tc.value, 64)
			if tc.want == 0 {
				if bad == nil {
					t.Fatalf("accepted %q as %d", tc.value, n)
				}
				if bad.reason != metrics.InvalidValue || !strings.Contains(bad.message, "from 1 to 64") {
					t.Fatalf("problem = %+v", bad)
				}
				return
			}
			if bad != nil || n != tc.want {
				t.Fatalf("parse %q = %d, %+v; want %d", tc.value, n, bad, tc.want)
			}
		})
	}
}

// A pod controls the annotation's value (up to 256 KiB): messages quote only its start.
func TestInvalidValueIsQuotedShort(t *testing.T) {
	huge := "é" + strings.Repeat("x", 256<<10)
	_, bad := parseRingSize("tcpdump.antrea.io", huge, 64)
	if bad == nil || len(bad.message) > 400 || !strings.Contains(bad.message, `tcpdump.antrea.io="éxxx`) ||
		!strings.Contains(bad.message, fmt.Sprintf(`"... (%d bytes)`, len(huge))) {
		t.Fatalf("message (%d bytes) = %.300q", len(bad.message), bad.message)
	}
	for _, v := range []string{"abc", strings.Repeat("7", 64)} {
		if _, bad := parseRingSize("k", v, 64); !strings.Contains(bad.message, strconv.Quote(v)+" is not") {
			t.Fatalf("short value %q: message %q, want it whole", v, bad.message)
		}
	}
	// cut at a character boundary: never half of a UTF-8 sequence
	if q := quoteShort(strings.Repeat("x", maxQuoted-1) + "éé"); !strings.HasPrefix(q, strconv.Quote(strings.Repeat("x", maxQuoted-1))+"...") {
		t.Fatalf("quoteShort cut a character: %s", q)
	}
}

// fakeCaptures records what the controller asks of the capture manager.
type fakeCaptures struct {
	mu      sync.Mutex
	ensured map[string]capture.Spec
	stopped []string
	// recorders are the pods' flight recorders, by key; recStopped the StopRecorder calls
	recorders  map[string]capture.Spec
	recStopped []string
	err        error // what Ensure returns
}

var _ CaptureManager = (*fakeCaptures)(nil)

func (f *fakeCaptures) Ensure(s capture.Spec) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return false, f.err
	}
	if s.Source == capture.SourceRecorder {
		if f.recorders == nil {
			f.recorders = map[string]capture.Spec{}
		}
		f.recorders[capture.Key(s.Namespace, s.Pod)] = s
		return false, nil
	}
	f.ensured[capture.Key(s.Namespace, s.Pod)] = s
	return false, nil
}

func (f *fakeCaptures) Stop(ns, pod string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ensured, capture.Key(ns, pod))
	delete(f.recorders, capture.Key(ns, pod))
	f.stopped = append(f.stopped, capture.Key(ns, pod))
}

func (f *fakeCaptures) StopRecorder(ns, pod string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.recorders, capture.Key(ns, pod))
	f.recStopped = append(f.recStopped, capture.Key(ns, pod))
}

func (f *fakeCaptures) RecorderStatus(ns, pod string) (capture.Status, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.recorders[capture.Key(ns, pod)]
	return capture.Status{Spec: s, Phase: capture.PhaseRunning}, ok
}

// StopAfterGrace records the stop as "graceful:namespace/pod" (the real manager's grace is
// its own tests').
func (f *fakeCaptures) StopAfterGrace(ns, pod, _ string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ensured, capture.Key(ns, pod))
	f.stopped = append(f.stopped, "graceful:"+capture.Key(ns, pod))
}

func (f *fakeCaptures) CleanStale(_, _ func(string, string) bool) ([]string, error) { return nil, nil }

func (f *fakeCaptures) Status(ns, pod string) (capture.Status, bool) {
	s, ok := f.spec(capture.Key(ns, pod))
	return capture.Status{Spec: s, Phase: capture.PhaseRunning}, ok
}

func (f *fakeCaptures) spec(key string) (capture.Spec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.ensured[key]
	return s, ok
}

func pod(name string, annotations map[string]string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name), Annotations: annotations},
		Spec:       corev1.PodSpec{NodeName: "node-a"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

type ctrlFixture struct {
	c        *Controller
	captures *fakeCaptures
	recorder *record.FakeRecorder
	metrics  *metrics.Metrics
}

func newCtrl(t *testing.T, cfg Config, pods ...*corev1.Pod) *ctrlFixture {
	t.Helper()
	f := &ctrlFixture{
		captures: &fakeCaptures{ensured: map[string]capture.Spec{}},
		recorder: record.NewFakeRecorder(100),
	}
	f.c, f.metrics = newController(t, f.captures, f.recorder, cfg, pods...)
	return f
}

// newController builds a controller on node-a over a fake clientset, its informer's cache
// preloaded with pods as the informer would have them; tests and benchmarks share it.
func newController(tb testing.TB, captures CaptureManager, recorder record.EventRecorder, cfg Config, pods ...*corev1.Pod) (*Controller, *metrics.Metrics) {
	tb.Helper()
	m := metrics.New(prometheus.NewRegistry())
	cfg.NodeName = "node-a"
	if cfg.MaxFiles == 0 {
		cfg.MaxFiles = 64
	}
	c, err := NewController(fake.NewClientset(), captures, recorder, m, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range pods {
		if err := c.informer.GetIndexer().Add(p); err != nil {
			tb.Fatal(err)
		}
	}
	return c, m
}

func (f *ctrlFixture) sync(t *testing.T, key string) {
	t.Helper()
	if err := f.c.sync(context.Background(), key); err != nil {
		t.Fatalf("sync %s: %v", key, err)
	}
}

func (f *ctrlFixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestSyncAnnotatedPodEnsuresCapture(t *testing.T) {
	f := newCtrl(t, Config{}, pod("web", map[string]string{"tcpdump.antrea.io": "5"}))
	f.sync(t, "default/web")
	s, ok := f.captures.spec("default/web")
	if !ok {
		t.Fatal("no capture ensured")
	}
	want := capture.Spec{Namespace: "default", Pod: "web", UID: "uid-web", Files: 5, FileSize: 1_000_000, Source: "manual", Engine: capture.EngineTcpdump}
	if s != want {
		t.Fatalf("spec = %+v, want %+v", s, want)
	}
}

// A capture no longer desired stops after its grace (the manager knows whether it has one);
// the capture of a pod that is gone, being deleted or finished stops at once.
func TestSyncStopsWhenAnnotationRemovedOrPodGone(t *testing.T) {
	annotated := map[string]string{"tcpdump.antrea.io": "2"}
	f := newCtrl(t, Config{}, pod("plain", nil), pod("pending", annotated, func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodPending
	}), pod("done", nil, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		pod("failed", nil, func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }),
		pod("terminating", annotated, func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: time.Now()} }))
	for _, name := range []string{"plain", "pending", "done", "failed", "terminating", "deleted"} {
		f.sync(t, "default/"+name)
	}
	if len(f.captures.ensured) != 0 {
		t.Fatalf("captures ensured: %v", f.captures.ensured)
	}
	want := "graceful:default/plain,graceful:default/pending,default/done,default/failed,default/terminating,default/deleted"
	if got := strings.Join(f.captures.stopped, ","); got != want {
		t.Fatalf("stopped = %s\nwant      %s", got, want)
	}
}

func TestSyncRefusesInvalidRequestOnceWithEventAndMetric(t *testing.T) {
	f := newCtrl(t, Config{}, pod("bad", map[string]string{"tcpdump.antrea.io": "abc"}))
	f.sync(t, "default/bad")
	f.sync(t, "default/bad") // a pod update with the same bad value: no second Event
	ev := f.events()
	if len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning InvalidCaptureRequest") || !strings.Contains(ev[0], `"abc"`) {
		t.Fatalf("events = %q", ev)
	}
	if got := testutil.ToFloat64(f.metrics.InvalidRequests.WithLabelValues(metrics.InvalidValue)); got != 1 {
		t.Fatalf("invalid requests metric = %v, want 1", got)
	}
	if len(f.captures.ensured) != 0 {
		t.Fatal("a capture was started for an invalid request")
	}
}

func TestSyncHostNetworkPods(t *testing.T) {
	hostNet := func(p *corev1.Pod) { p.Spec.HostNetwork = true }
	f := newCtrl(t, Config{}, pod("hn", map[string]string{"tcpdump.antrea.io": "1"}, hostNet))
	f.sync(t, "default/hn")
	if _, ok := f.captures.spec("default/hn"); ok {
		t.Fatal("hostNetwork pod captured without --allow-host-network")
	}
	if ev := f.events(); len(ev) != 1 || !strings.Contains(ev[0], "--allow-host-network") {
		t.Fatalf("events = %q", ev)
	}
	if got := testutil.ToFloat64(f.metrics.InvalidRequests.WithLabelValues(metrics.InvalidHostNetwork)); got != 1 {
		t.Fatalf("host network metric = %v", got)
	}

	f = newCtrl(t, Config{AllowHostNetwork: true}, pod("hn", map[string]string{"tcpdump.antrea.io": "1"}, hostNet))
	f.sync(t, "default/hn")
	if _, ok := f.captures.spec("default/hn"); !ok {
		t.Fatal("hostNetwork pod not captured with --allow-host-network")
	}
}

// A capture the node's byte budget can never hold is refused once, with an Event and a metric.
func TestSyncOverBudgetIsRefusedOnce(t *testing.T) {
	f := newCtrl(t, Config{}, pod("web", map[string]string{"tcpdump.antrea.io": "1"}))
	f.captures.err = fmt.Errorf("%w: a ring of ...", capture.ErrOverBudget)
	f.sync(t, "default/web")
	f.sync(t, "default/web")
	if ev := f.events(); len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning "+ReasonInvalidRequest) || !strings.Contains(ev[0], "byte budget") {
		t.Fatalf("events = %q", ev)
	}
	if got := testutil.ToFloat64(f.metrics.InvalidRequests.WithLabelValues(metrics.InvalidOverBudget)); got != 1 {
		t.Fatalf("over_budget refusals = %v, want 1", got)
	}
}

func TestCustomAnnotationKey(t *testing.T) {
	f := newCtrl(t, Config{AnnotationKey: "podcap.io/capture"},
		pod("old", map[string]string{"tcpdump.antrea.io": "1"}), pod("new", map[string]string{"podcap.io/capture": "2"}))
	f.sync(t, "default/old")
	f.sync(t, "default/new")
	if _, ok := f.captures.spec("default/old"); ok {
		t.Fatal("default key honoured under a custom --annotation-key")
	}
	if s, ok := f.captures.spec("default/new"); !ok || s.Files != 2 {
		t.Fatalf("custom key: %+v %v", s, ok)
	}
}

func TestRunSyncsFromInformer(t *testing.T) {
	client := fake.NewClientset(pod("web", map[string]string{"tcpdump.antrea.io": "2"}),
		pod("elsewhere", map[string]string{"tcpdump.antrea.io": "2"}, func(p *corev1.Pod) { p.Spec.NodeName = "node-b" }))
	captures := &fakeCaptures{ensured: map[string]capture.Spec{}}
	c, err := NewController(client, captures, record.NewFakeRecorder(10), metrics.New(prometheus.NewRegistry()),
		Config{NodeName: "node-a", MaxFiles: 64})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := captures.spec("default/web"); ok && c.Synced() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("annotated pod not synced")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// the fake clientset does not apply field selectors; the real API server does (tested
	// in test/integration), so only the trimmed cache content is checked here
	obj, ok, _ := c.informer.GetIndexer().GetByKey("default/web")
	if !ok || obj.(*corev1.Pod).Spec.NodeName != "node-a" {
		t.Fatal("pod missing from cache")
	}
}
