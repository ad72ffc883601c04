package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/metrics"
	"github.com/podcap/podcap/policy"
)

// The policy benchmarks of the controller: the shipped rules (rules/*.rego, loaded with
// policy.New as the agent loads its --policy-dir) behind the controller's sync, with the
// fake capture manager and filter checker of the unit tests. test/bench/policy.sh runs them
// (part C of `make bench`) beside policy/'s engine-only benchmarks. They measure; they never
// judge a duration.

// shippedRules is the directory of the shipped policies, relative to this package.
const shippedRules = "../rules"

// nodePods is the kubelet's default maximum of pods per node (--max-pods).
const nodePods = 110

// typicalPod is a Deployment's pod as policy's BenchmarkDecide sees it (typicalInput there):
// the labels and annotations such pods carry, one pod in ten with the label the shipped rules
// capture on (pod 0 has it). It is trimmed as the informer's transform trims pods.
func typicalPod(tb testing.TB, i int) *corev1.Pod {
	tb.Helper()
	name := fmt.Sprintf("web-7d9f8c6b5-%05d", i)
	p := pod(name, map[string]string{
		"kubectl.kubernetes.io/restartedAt": "2026-02-28T10:00:00Z",
		"prometheus.io/scrape":              "true", "prometheus.io/port": "9090",
	}, func(p *corev1.Pod) {
		p.Namespace = "shop"
		p.ResourceVersion = fmt.Sprint(1000 + i)
		p.Labels = map[string]string{
			"app.kubernetes.io/name": "web", "app.kubernetes.io/instance": "web-prod",
			"app.kubernetes.io/version": "1.4.2", "pod-template-hash": "7d9f8c6b5", "team": "shop",
		}
		if i%10 == 0 {
			p.Labels["podcap.io/capture"] = "true"
		}
		p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-7d9f8c6b5", Controller: ptr.To(true)}}
		p.Status.PodIP = fmt.Sprintf("10.244.%d.%d", i/250, 2+i%250)
	})
	trimmed, err := trimPod(p)
	if err != nil {
		tb.Fatal(err)
	}
	return trimmed.(*corev1.Pod)
}

// copyShippedRules copies the policy files of rules/ (what the podcap-rules ConfigMap holds:
// not the *_test.rego files) into a new directory, for a benchmark that edits them.
func copyShippedRules(tb testing.TB) string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(shippedRules, "*.rego"))
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.rego") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			tb.Fatal(err)
		}
		n++
	}
	if n == 0 {
		tb.Fatalf("no policy files in %s", shippedRules)
	}
	return dir
}

// shippedEngine loads the policy of dir as the agent does (policy.New) and fails unless it
// compiled.
func shippedEngine(tb testing.TB, dir string, onChange func(string)) *policy.Engine {
	tb.Helper()
	e, err := policy.New(policy.Options{Dir: dir, OnChange: onChange}) // zero Logger: silent
	if err != nil {
		tb.Fatal(err)
	}
	if st := e.Status(); !st.LastReloadSuccessful || st.Version == "" {
		tb.Fatalf("shipped rules in %s did not load: %s", dir, st.LastError)
	}
	return e
}

// newBenchCtrl is the controller of the benchmarks: the real policy engine, the fake filter
// checker of the unit tests, and a recorder that drops Events (the benchmarks' pods raise
// none, and a full channel would block a worker).
func newBenchCtrl(tb testing.TB, rules Policy, captures CaptureManager, clk clock.Clock, pods ...*corev1.Pod) (*Controller, *metrics.Metrics) {
	tb.Helper()
	return newController(tb, captures, &record.FakeRecorder{}, Config{Policy: rules, Filters: fakeFilters{}, Clock: clk}, pods...)
}

func evaluations(m *metrics.Metrics, result string) int {
	return int(testutil.ToFloat64(m.PolicyEvaluations.WithLabelValues(result)))
}

// benchSync measures the controller's sync of one typical pod (pod 0: the shipped rules
// decide a capture of it, so the sync also validates the decision, checks the filter and
// ensures the capture). With miss, every sync misses the decision cache: the injected clock
// moves past the cache's TTL (PolicyResync) before each, the path of the periodic
// re-evaluation; costs the same evaluation as a new resourceVersion or policy version,
// without rebuilding the pod. Without, every sync but a first one (untimed) hits it.
func benchSync(b *testing.B, miss bool) {
	clk := testingclock.NewFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	captures := &fakeCaptures{ensured: map[string]capture.Spec{}}
	p := typicalPod(b, 0)
	c, m := newBenchCtrl(b, shippedEngine(b, shippedRules, nil), captures, clk, p)
	key := p.Namespace + "/" + p.Name
	ctx := context.Background()
	if err := c.sync(ctx, key); err != nil {
		b.Fatal(err)
	}
	if s, ok := captures.spec(key); !ok || s.Source != capture.SourcePolicy {
		b.Fatalf("the shipped rules did not capture %s: %+v", key, s)
	}
	before := evaluations(m, "capture")
	b.ReportAllocs()
	for b.Loop() {
		if miss {
			clk.Step(c.cfg.PolicyResync)
		}
		if err := c.sync(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	// what was measured is what the name says (a check of the path, not of the time)
	evaluated, cached := evaluations(m, "capture")-before, evaluations(m, "cached")
	if miss && (evaluated != b.N || cached != 0) || !miss && (evaluated != 0 || cached != b.N) {
		b.Fatalf("%d syncs: %d evaluations, %d cache hits", b.N, evaluated, cached)
	}
}

// BenchmarkPolicySyncUncached: one sync of a pod whose decision is not cached — building the
// input, the shipped rules' evaluation, validation and the capture manager's Ensure.
func BenchmarkPolicySyncUncached(b *testing.B) { benchSync(b, true) }

// BenchmarkPolicySyncCached: one sync of an unchanged pod: the decision comes from the cache.
func BenchmarkPolicySyncCached(b *testing.B) { benchSync(b, false) }

// countingCaptures is the fake capture manager, counting the syncs that reached it: every
// sync of a pod that exists ends in exactly one Ensure (capture wanted) or Stop (not).
type countingCaptures struct {
	*fakeCaptures
	synced atomic.Int64
	target atomic.Int64  // signal done when synced reaches it
	done   chan struct{} // buffered: the worker that reaches target never waits
}

var _ CaptureManager = (*countingCaptures)(nil)

func (f *countingCaptures) Ensure(s capture.Spec) (bool, error) {
	q, err := f.fakeCaptures.Ensure(s)
	f.count()
	return q, err
}

func (f *countingCaptures) Stop(ns, pod string) {
	f.fakeCaptures.Stop(ns, pod)
	f.count()
}

func (f *countingCaptures) StopAfterGrace(ns, pod, uid string) {
	f.fakeCaptures.StopAfterGrace(ns, pod, uid)
	f.count()
}

func (f *countingCaptures) count() {
	if f.synced.Add(1) == f.target.Load() {
		f.done <- struct{}{}
	}
}

// expect arms the counter for n more syncs and returns the channel that says they happened.
func (f *countingCaptures) expect(n int) <-chan struct{} {
	f.target.Store(f.synced.Load() + int64(n))
	return f.done
}

// BenchmarkPolicyReevaluate110Pods: what a policy change costs a full node through the
// controller, as the agent wires it. 110 typical pods are in the indexer, the controller's
// workers (Config.Workers, default 2) run, and the engine's OnChange calls EnqueueAll. Each
// iteration edits one policy file (untimed; a comment, so the decisions stay the same and
// only the version changes), then times Reload — read, compile, prepare, OnChange →
// EnqueueAll — until the workers have synced all 110 pods. Afterwards (untimed) every pod's
// cached decision must carry the new version. Metrics: ms/node (the whole), reload-ms (until
// Reload returned: the workers may have started meanwhile) and pods/s.
func BenchmarkPolicyReevaluate110Pods(b *testing.B) {
	dir := copyShippedRules(b)
	var c *Controller // set before anything reloads
	rules := shippedEngine(b, dir, func(string) { c.EnqueueAll() })
	pods := make([]*corev1.Pod, nodePods)
	for i := range pods {
		pods[i] = typicalPod(b, i)
	}
	captures := &countingCaptures{fakeCaptures: &fakeCaptures{ensured: map[string]capture.Spec{}}, done: make(chan struct{}, 1)}
	c, m := newBenchCtrl(b, rules, captures, clock.RealClock{}, pods...)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range c.cfg.Workers {
		wg.Go(func() { c.runWorker(ctx) })
	}
	b.Cleanup(func() { cancel(); c.queue.ShutDown(); wg.Wait() })
	await := func(done <-chan struct{}) {
		select {
		case <-done:
		case <-time.After(time.Minute): // a hang, not a slow run: syncs never end otherwise
			b.Fatalf("%d of %d syncs after a minute", captures.synced.Load(), captures.target.Load())
		}
	}
	// the node before the change: every pod evaluated once with the first version
	done := captures.expect(nodePods)
	c.EnqueueAll()
	await(done)

	edited := filepath.Join(dir, "labels.rego")
	orig, err := os.ReadFile(edited)
	if err != nil {
		b.Fatal(err)
	}
	var reload time.Duration
	changes := 0
	evaluatedBefore := evaluations(m, "capture") + evaluations(m, "no_capture")
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		old := rules.Version()
		changes++
		edit := fmt.Appendf(append([]byte(nil), orig...), "\n# policy change %d\n", changes)
		if err := os.WriteFile(edited, edit, 0o644); err != nil {
			b.Fatal(err)
		}
		done := captures.expect(nodePods)
		b.StartTimer()

		t0 := time.Now()
		if err := rules.Reload(); err != nil {
			b.Fatal(err)
		}
		reload += time.Since(t0)
		await(done)

		b.StopTimer()
		checkReevaluated(b, c, old, rules.Version())
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/node")
	b.ReportMetric(float64(reload.Microseconds())/1e3/float64(b.N), "reload-ms")
	b.ReportMetric(float64(nodePods*b.N)/b.Elapsed().Seconds(), "pods/s")
	evaluated := evaluations(m, "capture") + evaluations(m, "no_capture") - evaluatedBefore
	if evaluated != nodePods*b.N || evaluations(m, "error") != 0 {
		b.Fatalf("%d policy changes: %d evaluations, %d errors; want %d evaluations",
			b.N, evaluated, evaluations(m, "error"), nodePods*b.N)
	}
}

// checkReevaluated fails unless the policy version changed and every pod's cached decision
// was computed with the new one.
func checkReevaluated(b *testing.B, c *Controller, old, current string) {
	b.Helper()
	if current == old {
		b.Fatalf("the edit did not change the policy version %s", old)
	}
	c.decisions.mu.Lock()
	defer c.decisions.mu.Unlock()
	if len(c.decisions.entries) != nodePods {
		b.Fatalf("%d cached decisions, want %d", len(c.decisions.entries), nodePods)
	}
	for uid, e := range c.decisions.entries {
		if e.policyVersion != current || e.err != nil {
			b.Fatalf("pod %s: decision of version %s (err %v), want %s", uid, e.policyVersion, e.err, current)
		}
	}
}
