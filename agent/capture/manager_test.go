package capture_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/capturetest"
	"github.com/podcap/podcap/agent/metrics"
)

// events is a capture.Notifier that records what it is told.
type events struct {
	mu  sync.Mutex
	got []string // "namespace/pod Type Reason: message"
}

var _ capture.Notifier = (*events)(nil)

func (e *events) Notify(s capture.Spec, eventType, reason, message string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, fmt.Sprintf("%s/%s %s %s: %s", s.Namespace, s.Pod, eventType, reason, message))
}

func (e *events) count(substr string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, g := range e.got {
		if strings.Contains(g, substr) {
			n++
		}
	}
	return n
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.got, "\n")
}

type fixture struct {
	m       *capture.Manager
	engine  *capturetest.Engine
	res     *capturetest.Resolver
	events  *events
	metrics *metrics.Metrics
	dir     string
}

func newFixture(t *testing.T, maxConcurrent int, newSource func(capture.Target, capture.SourceOptions) *capturetest.Source, before ...func(dir string)) *fixture {
	t.Helper()
	f := newParts(t, newSource)
	for _, b := range before {
		b(f.dir)
	}
	f.m = runManager(t, f.config(maxConcurrent))
	return f
}

// newParts is a fixture without its manager.
func newParts(t *testing.T, newSource func(capture.Target, capture.SourceOptions) *capturetest.Source) *fixture {
	return &fixture{
		engine:  capturetest.NewEngine(newSource),
		res:     capturetest.NewResolver(),
		events:  &events{},
		metrics: metrics.New(prometheus.NewRegistry()),
		dir:     t.TempDir(),
	}
}

// config is the manager configuration of the fixture's parts.
func (f *fixture) config(maxConcurrent int) capture.Config {
	return capture.Config{
		Dir:             f.dir,
		MaxConcurrent:   maxConcurrent,
		Engines:         map[string]capture.Engine{capture.EngineTcpdump: f.engine},
		Resolver:        f.res,
		Notifier:        f.events,
		Metrics:         f.metrics,
		StatsInterval:   10 * time.Millisecond,
		RecheckInterval: time.Hour, // rechecks are poked by Ensure in these tests
		MinBackoff:      5 * time.Millisecond,
		Retention:       capture.Retention{MaxAge: 24 * time.Hour, MaxBytes: 64 << 20, Interval: 10 * time.Millisecond},
		MaxBackoff:      20 * time.Millisecond,
	}
}

// timerClock is a fake clock that counts its timers. A running capture's only timers are
// its deadline's (max_duration; Pump's stop bound comes once it stops); a test waits for a
// deadline's timer before it steps the clock past it: a timer made after the step would
// count its duration from the stepped time.
type timerClock struct {
	*testingclock.FakeClock
	timers atomic.Int32
}

func (c *timerClock) NewTimer(d time.Duration) clock.Timer {
	t := c.FakeClock.NewTimer(d)
	c.timers.Add(1)
	return t
}

// awaitTimers waits until the manager made n deadline timers.
func (c *timerClock) awaitTimers(t *testing.T, n int32) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d deadline timers", n), func() bool { return c.timers.Load() >= n })
}

// newClockFixture is newFixture whose manager runs on a fake clock that the test steps.
func newClockFixture(t *testing.T, maxConcurrent int) (*fixture, *timerClock) {
	t.Helper()
	f := newParts(t, nil)
	clk := &timerClock{FakeClock: testingclock.NewFakeClock(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))}
	cfg := f.config(maxConcurrent)
	cfg.Clock = clk
	f.m = runManager(t, cfg)
	return f, clk
}

// runManager makes a manager of cfg and runs it until the test ends.
func runManager(t *testing.T, cfg capture.Config) *capture.Manager {
	t.Helper()
	m, err := capture.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager Run: %v", err)
		}
	})
	return m
}

func spec(ns, pod string, files int) capture.Spec {
	return capture.Spec{Namespace: ns, Pod: pod, UID: "uid-" + pod, Files: files, FileSize: capture.DefaultFileSize, Source: "manual"}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what) // see the test's log for events
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func phase(m *capture.Manager, ns, pod string) capture.Phase {
	st, ok := m.Status(ns, pod)
	if !ok {
		return ""
	}
	return st.Phase
}

func TestEnsureStartsAndStopDeletesFiles(t *testing.T) {
	f := newFixture(t, 4, nil)
	f.res.Set("default", "web", capture.Target{PID: 42, SandboxID: "sb1"})
	if queued, err := f.m.Ensure(spec("default", "web", 3)); err != nil || queued {
		t.Fatalf("Ensure = %v, %v", queued, err)
	}
	eventually(t, "capture running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	if opens := f.engine.Opens(); len(opens) != 1 || opens[0].Target.PID != 42 {
		t.Fatalf("engine opens = %+v, want one at pid 42", opens)
	}
	first := filepath.Join(f.dir, "default", "web", "capture-web.pcap0")
	eventually(t, "first ring file", func() bool { return exists(first) })
	if f.events.count("Normal CaptureStarted") != 1 {
		t.Fatalf("events:\n%s", f.events)
	}
	if got := testutil.ToFloat64(f.metrics.CapturesRunning.WithLabelValues("manual")); got != 1 {
		t.Fatalf("podcap_captures_running = %v, want 1", got)
	}

	// the same spec again is a no-op
	if _, err := f.m.Ensure(spec("default", "web", 3)); err != nil {
		t.Fatal(err)
	}
	f.m.Stop("default", "web")
	eventually(t, "files deleted", func() bool {
		_, err := os.Stat(filepath.Join(f.dir, "default"))
		return errors.Is(err, os.ErrNotExist)
	})
	if !f.engine.Sources()[0].Closed() {
		t.Fatal("source not closed after Stop")
	}
	eventually(t, "stopped event", func() bool { return f.events.count("Normal CaptureStopped") == 1 })
	if len(f.engine.Opens()) != 1 {
		t.Fatalf("engine opened %d times, want 1", len(f.engine.Opens()))
	}
	eventually(t, "running gauge back to 0", func() bool {
		return testutil.ToFloat64(f.metrics.CapturesRunning.WithLabelValues("manual")) == 0
	})
}

func TestSpecChangeRestartsRingWithNewSize(t *testing.T) {
	f := newFixture(t, 4, nil)
	f.res.Set("default", "web", capture.Target{PID: 42})
	ensure(t, f.m, spec("default", "web", 3))
	eventually(t, "3-file ring", func() bool { return exists(filepath.Join(f.dir, "default/web/capture-web.pcap0")) })
	ensure(t, f.m, spec("default", "web", 12))
	eventually(t, "12-file ring", func() bool { return exists(filepath.Join(f.dir, "default/web/capture-web.pcap00")) })
	if exists(filepath.Join(f.dir, "default/web/capture-web.pcap0")) {
		t.Fatal("file of the old ring survived the change of N")
	}
	if n := len(f.engine.Sources()); n != 2 || !f.engine.Sources()[0].Closed() {
		t.Fatalf("sources = %d (first closed: %v), want the old one closed and a new one", n, n > 0 && f.engine.Sources()[0].Closed())
	}
}

func TestConcurrencyCapQueuesAndStartsWhenASlotFrees(t *testing.T) {
	f := newFixture(t, 1, nil)
	f.res.Set("default", "a", capture.Target{PID: 1})
	f.res.Set("default", "b", capture.Target{PID: 2})
	ensure(t, f.m, spec("default", "a", 1))
	queued, err := f.m.Ensure(spec("default", "b", 1))
	if err != nil || !queued {
		t.Fatalf("second Ensure = %v, %v; want queued", queued, err)
	}
	if got := testutil.ToFloat64(f.metrics.CapturesQueued.WithLabelValues(metrics.QueuedConcurrency)); got != 1 {
		t.Fatalf("podcap_captures_queued = %v, want 1", got)
	}
	eventually(t, "a running", func() bool { return phase(f.m, "default", "a") == capture.PhaseRunning })
	if p := phase(f.m, "default", "b"); p != capture.PhaseQueued {
		t.Fatalf("b phase = %q, want Queued", p)
	}
	f.m.Stop("default", "a")
	eventually(t, "b running", func() bool { return phase(f.m, "default", "b") == capture.PhaseRunning })
	if got := testutil.ToFloat64(f.metrics.CapturesQueued.WithLabelValues(metrics.QueuedConcurrency)); got != 0 {
		t.Fatalf("podcap_captures_queued = %v, want 0", got)
	}
}

func TestResolveFailureRetriesWithEventAndMetric(t *testing.T) {
	f := newFixture(t, 4, nil)
	f.res.SetErr("default", "web", fmt.Errorf("dial: %w", capture.ErrPodNotFound))
	ensure(t, f.m, spec("default", "web", 2))
	eventually(t, "failed event", func() bool { return f.events.count("Warning CaptureFailed") > 0 })
	eventually(t, "resolve retried", func() bool { return f.res.Calls() >= 3 })
	if got := testutil.ToFloat64(f.metrics.CaptureFailures.WithLabelValues(metrics.FailureResolve)); got < 1 {
		t.Fatalf("resolve failures = %v", got)
	}
	f.res.Set("default", "web", capture.Target{PID: 7})
	eventually(t, "running after the pod appears", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	if st, _ := f.m.Status("default", "web"); st.LastError != "" {
		t.Fatalf("LastError = %q after success", st.LastError)
	}
}

func TestProcessDeathRestartsSameRing(t *testing.T) {
	var mu sync.Mutex
	opened := 0
	f := newFixture(t, 4, func(_ capture.Target, _ capture.SourceOptions) *capturetest.Source {
		mu.Lock()
		defer mu.Unlock()
		opened++
		if opened == 1 { // the first process dies after two packets
			return capturetest.NewSource(layers.LinkTypeLinuxSLL2, 262144, pkt(100), pkt(200)).EndWith(nil, errors.New("tcpdump: exit status 1"))
		}
		return capturetest.NewSource(layers.LinkTypeLinuxSLL2, 262144, pkt(300)).Hold()
	})
	f.res.Set("default", "web", capture.Target{PID: 42})
	ensure(t, f.m, spec("default", "web", 2))
	eventually(t, "restarted", func() bool { return len(f.engine.Opens()) == 2 && phase(f.m, "default", "web") == capture.PhaseRunning })
	if f.events.count("Warning CaptureFailed: capture process ended: tcpdump: exit status 1") != 1 {
		t.Fatalf("events:\n%s", f.events)
	}
	eventually(t, "three packets in the ring", func() bool { st, _ := f.m.Status("default", "web"); return st.Packets == 3 })
	st, _ := f.m.Status("default", "web")
	if st.Restarts != 1 {
		t.Fatalf("restarts = %d, want 1", st.Restarts)
	}
	if got := testutil.ToFloat64(f.metrics.CaptureRestarts); got != 1 {
		t.Fatalf("restarts metric = %v", got)
	}
	eventually(t, "packets metric", func() bool {
		return testutil.ToFloat64(f.metrics.Packets.WithLabelValues("default", "web")) == 3
	})
}

func TestReattachesWhenThePodsContainerChanges(t *testing.T) {
	f := newFixture(t, 4, nil)
	f.res.Set("default", "web", capture.Target{PID: 42, SandboxID: "sb"})
	ensure(t, f.m, spec("default", "web", 2))
	eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	// the container restarted: a new PID in the same sandbox; the pod update pokes the capture
	f.res.Set("default", "web", capture.Target{PID: 43, SandboxID: "sb"})
	ensure(t, f.m, spec("default", "web", 2))
	eventually(t, "re-attached", func() bool {
		st, _ := f.m.Status("default", "web")
		return st.PID == 43 && st.Phase == capture.PhaseRunning
	})
	opens := f.engine.Opens()
	if len(opens) != 2 || opens[1].Target.PID != 43 || !f.engine.Sources()[0].Closed() {
		t.Fatalf("opens = %+v", opens)
	}
	// while the container is restarting the pod cannot be resolved: the capture stays put
	f.res.SetErr("default", "web", capture.ErrPodNotFound)
	ensure(t, f.m, spec("default", "web", 2))
	eventually(t, "the recheck ran", func() bool { return f.res.Calls() >= 4 })
	if n := len(f.engine.Opens()); n != 2 {
		t.Fatalf("engine opened %d times while the pod was unresolvable, want 2", n)
	}
}

func TestAdoptsFilesOfAnEarlierAgent(t *testing.T) {
	f := newFixture(t, 4, nil)
	dir := filepath.Join(f.dir, "default", "web")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	for i, name := range []string{"capture-web.pcap0", "capture-web.pcap1", "capture-web.pcap00"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old.Add(time.Duration(i)*time.Minute), old.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	f.res.Set("default", "web", capture.Target{PID: 42})
	ensure(t, f.m, spec("default", "web", 3))
	// pcap1 was the newest file of the 3-file ring: the ring goes on with pcap2
	eventually(t, "ring continued at pcap2", func() bool { return exists(filepath.Join(dir, "capture-web.pcap2")) })
	if b, _ := os.ReadFile(filepath.Join(dir, "capture-web.pcap0")); string(b) != "old" {
		t.Fatal("pcap0 of the earlier ring was overwritten out of order")
	}
	if exists(filepath.Join(dir, "capture-web.pcap00")) {
		t.Fatal("a file of another ring size was kept")
	}
}

func TestCleanStaleKeepsOnlyWantedPods(t *testing.T) {
	f := newFixture(t, 4, nil)
	for _, file := range []string{
		"default/keep/capture-keep.pcap0", "default/gone/capture-gone.pcap0", "other/gone/capture-gone.pcap1",
		"other/gone/policy-20261128T000000.000Z/capture-gone.pcap0", "not_a_valid_name/x/capture-x.pcap0",
		"default/gone/recorder/capture-gone.pcap0", "default/keep/recorder/capture-keep.pcap1",
	} {
		p := filepath.Join(f.dir, file)
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.res.Set("default", "running", capture.Target{PID: 1})
	ensure(t, f.m, spec("default", "running", 1))
	// the capture's goroutine creates its directory as it starts: wait until it runs
	eventually(t, "the capture of default/running runs", func() bool { return phase(f.m, "default", "running") == capture.PhaseRunning })
	removed, err := f.m.CleanStale(func(ns, pod string) bool { return ns == "default" && pod == "keep" },
		func(ns, pod string) bool { return ns == "default" && (pod == "keep" || pod == "running") })
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{"default/gone", "default/gone#recorder", "other/gone"}; !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	for _, p := range []string{"default/keep/capture-keep.pcap0", "default/keep/recorder/capture-keep.pcap1", "default/running", "not_a_valid_name/x",
		"other/gone/policy-20261128T000000.000Z/capture-gone.pcap0"} {
		if !exists(filepath.Join(f.dir, p)) {
			t.Errorf("%s was removed", p)
		}
	}
	for _, p := range []string{"default/gone", "other/gone/capture-gone.pcap1"} {
		if exists(filepath.Join(f.dir, p)) {
			t.Errorf("%s was kept", p)
		}
	}
}

func TestEnsureRefusesNamesThatAreNotPathElements(t *testing.T) {
	f := newFixture(t, 4, nil)
	for _, s := range []capture.Spec{spec("..", "web", 1), spec("default", "../../etc", 1), spec("default", "a/b", 1), spec("default", "", 1)} {
		if _, err := f.m.Ensure(s); err == nil {
			t.Errorf("Ensure(%s/%s) accepted", s.Namespace, s.Pod)
		}
	}
	if len(f.engine.Opens()) != 0 {
		t.Fatal("engine opened for an invalid name")
	}
}

func pkt(n int) capturetest.Packet {
	return capturetest.NewPacket(gopacket.CaptureInfo{Timestamp: time.Unix(1700000000, 0), CaptureLength: n, Length: n}, make([]byte, n))
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func ensure(t *testing.T, m *capture.Manager, s capture.Spec) {
	t.Helper()
	if _, err := m.Ensure(s); err != nil {
		t.Fatal(err)
	}
}
