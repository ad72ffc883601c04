package capture_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus/testutil"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/capturetest"
)

func policySpec(pod string, maxDuration time.Duration) capture.Spec {
	s := spec("default", pod, 2)
	s.Source, s.Reason, s.MaxDuration, s.Filter, s.Snaplen = capture.SourcePolicy, "label podcap.io/capture=true", maxDuration, "udp port 53", 128
	return s
}

// sessionDir returns the one policy capture directory of a pod.
func sessionDir(t *testing.T, f *fixture, pod string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(f.dir, "default", pod, "policy-*"))
	if len(m) != 1 {
		return ""
	}
	return m[0]
}

func TestPolicyCaptureKeepsFilesWithMetadata(t *testing.T) {
	f := newFixture(t, 4, nil)
	f.res.Set("default", "web", capture.Target{PID: 42})
	ensure(t, f.m, policySpec("web", 0))
	eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	if o := f.engine.Opens()[0].Options; o.Filter != "udp port 53" || o.Snaplen != 128 {
		t.Fatalf("engine options %+v", o)
	}
	var dir string
	eventually(t, "session dir with its ring", func() bool {
		dir = sessionDir(t, f, "web")
		return dir != "" && exists(filepath.Join(dir, "capture-web.pcap0"))
	})
	f.m.Stop("default", "web")
	eventually(t, "stopped", func() bool { return f.events.count("CaptureStopped") == 1 })
	if !exists(filepath.Join(dir, "capture-web.pcap0")) {
		t.Fatal("a policy capture's files were deleted at stop")
	}
	b, err := os.ReadFile(filepath.Join(dir, "capture.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	if meta["reason"] != "label podcap.io/capture=true" || meta["filter"] != "udp port 53" || meta["stop_reason"] != "no longer decided" || meta["stopped"] == nil {
		t.Fatalf("capture.json = %s", b)
	}
}

// capture.json's started is when the capture began. A first attempt that cannot resolve the
// pod (its container restarting) and a process that dies and is restarted do not move it:
// the rewrite at the stop keeps the started of the first write, before any packet in the files.
func TestPolicyCaptureStartedStaysAtItsBeginning(t *testing.T) {
	var opens atomic.Int32
	f := newParts(t, func(capture.Target, capture.SourceOptions) *capturetest.Source {
		if opens.Add(1) == 1 { // the first process dies after one packet
			return capturetest.NewSource(layers.LinkTypeLinuxSLL2, 262144, pkt(100)).EndWith(nil, errors.New("tcpdump: exit status 1"))
		}
		return capturetest.NewSource(layers.LinkTypeLinuxSLL2, 262144, pkt(300)).Hold()
	})
	begin := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	clk := testingclock.NewFakeClock(begin)
	cfg := f.config(4)
	cfg.Clock = clk
	f.m = runManager(t, cfg)

	ensure(t, f.m, policySpec("web", 0)) // the pod cannot be resolved yet
	eventually(t, "backoff", func() bool { return phase(f.m, "default", "web") == capture.PhaseBackoff })
	dir := sessionDir(t, f, "web")
	if got := readSessionMeta(t, dir).Started; !got.Equal(begin) {
		t.Fatalf("capture.json started %s as the capture began at %s", got, begin)
	}
	f.res.Set("default", "web", capture.Target{PID: 42})
	eventually(t, "started, died, restarted", func() bool {
		clk.Step(time.Second) // past the backoffs
		st, _ := f.m.Status("default", "web")
		return st.Restarts == 1 && st.Phase == capture.PhaseRunning
	})
	if first := f.startedAt(t, "web"); !first.After(begin) {
		t.Fatalf("the first process ran at %s, not after the capture began (%s): the test proves nothing", first, begin)
	}
	f.m.Stop("default", "web")
	eventually(t, "stopped", func() bool { return f.events.count("CaptureStopped") == 1 })
	if meta := readSessionMeta(t, dir); !meta.Started.Equal(begin) || !meta.Stopped.After(begin) {
		t.Fatalf("capture.json at the stop: started %s, stopped %s; want started %s (when the capture began)", meta.Started, meta.Stopped, begin)
	}
}

func TestPolicyCaptureExpiresAfterMaxDuration(t *testing.T) {
	f, clk := newClockFixture(t, 4)
	f.res.Set("default", "web", capture.Target{PID: 42})
	ensure(t, f.m, policySpec("web", 100*time.Millisecond))
	eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	clk.awaitTimers(t, 1)
	clk.Step(99 * time.Millisecond)
	if p := phase(f.m, "default", "web"); p != capture.PhaseRunning {
		t.Fatalf("phase %s before max_duration passed", p)
	}
	clk.Step(time.Millisecond)
	eventually(t, "expired", func() bool { return phase(f.m, "default", "web") == capture.PhaseExpired })
	if !strings.Contains(f.events.String(), "max_duration 100ms reached") {
		t.Fatalf("events:\n%s", f.events)
	}
	if ran := readSessionMeta(t, sessionDir(t, f, "web")).Stopped.Sub(f.startedAt(t, "web")); ran != 100*time.Millisecond {
		t.Fatalf("ran %s, want max_duration 100ms", ran)
	}
	// the same decision again does not restart it ...
	ensure(t, f.m, policySpec("web", 100*time.Millisecond))
	if n := len(f.engine.Opens()); n != 1 || phase(f.m, "default", "web") != capture.PhaseExpired {
		t.Fatalf("expired capture restarted: opens %d, phase %s", n, phase(f.m, "default", "web"))
	}
	// ... until the decision turned false once
	f.m.Stop("default", "web")
	ensure(t, f.m, policySpec("web", time.Hour))
	eventually(t, "running again", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
}

func TestPolicyDeadlineMovesWithoutRestart(t *testing.T) {
	f, clk := newClockFixture(t, 4)
	f.res.Set("default", "web", capture.Target{PID: 42})
	ensure(t, f.m, policySpec("web", 300*time.Millisecond))
	eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	clk.awaitTimers(t, 1)
	clk.Step(100 * time.Millisecond)
	ensure(t, f.m, policySpec("web", time.Hour)) // the policy now says: an hour from now
	clk.awaitTimers(t, 2)                        // the watcher took the new deadline
	clk.Step(time.Hour - time.Millisecond)       // well past the first deadline
	if p := phase(f.m, "default", "web"); p != capture.PhaseRunning {
		t.Fatalf("phase %s an hour after the first deadline: the moved deadline was not kept", p)
	}
	clk.Step(time.Millisecond)
	eventually(t, "expired", func() bool { return phase(f.m, "default", "web") == capture.PhaseExpired })
	meta := readSessionMeta(t, sessionDir(t, f, "web"))
	if ran := meta.Stopped.Sub(meta.Started); ran != 100*time.Millisecond+time.Hour || len(f.engine.Opens()) != 1 {
		t.Fatalf("ran %s with %d opens; want 1h100ms, one open (the deadline moved, no restart)", ran, len(f.engine.Opens()))
	}
}

func (f *fixture) startedAt(t *testing.T, pod string) time.Time {
	st, ok := f.m.Status("default", pod)
	if !ok {
		t.Fatal("no status")
	}
	return st.Started
}

func TestRetentionEvictsByAgeAndBudget(t *testing.T) {
	now := time.Now()
	var root string
	mk := func(rel string, size int, age time.Duration) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
		return filepath.Dir(p)
	}
	var ancient, older, newer, manual string
	f := newParts(t, nil)
	root = f.dir
	func() { // the files exist before the first sweep
		dir := root
		ancient = mk("default/a/policy-1/capture-a.pcap0", 10, 48*time.Hour)
		older = mk("default/b/policy-2/capture-b.pcap0", 2500, 2*time.Hour)
		newer = mk("default/b/policy-3/capture-b.pcap0", 2500, time.Hour)
		manual = mk("default/c/capture-c.pcap0", 10, 72*time.Hour)
		for _, d := range []string{"default/a/policy-1", "default/b/policy-2", "default/b/policy-3"} {
			age := map[string]time.Duration{"default/a/policy-1": 48 * time.Hour, "default/b/policy-2": 2 * time.Hour, "default/b/policy-3": time.Hour}[d]
			if err := os.Chtimes(filepath.Join(dir, d), now.Add(-age), now.Add(-age)); err != nil {
				t.Fatal(err)
			}
		}
	}()
	cfg := f.config(4)
	cfg.Retention.MaxBytes = 4000
	f.m = runManager(t, cfg)
	eventually(t, "evictions", func() bool {
		return testutil.ToFloat64(f.metrics.RetentionEvictions.WithLabelValues("age")) == 1 &&
			testutil.ToFloat64(f.metrics.RetentionEvictions.WithLabelValues("budget")) == 1
	})
	for _, d := range []string{ancient, older} {
		if exists(d) {
			t.Errorf("%s kept", d)
		}
	}
	for _, d := range []string{newer, manual} {
		if !exists(d) {
			t.Errorf("%s evicted", d)
		}
	}
	if exists(filepath.Join(f.dir, "default", "a")) {
		t.Error("empty pod directory kept")
	}
}

// A finished policy capture keeps its counters: capture.json's counts at the stop, which the
// listing of captures kept on disk reports (before, they were 0 once the capture ended).
func TestFinishedCaptureKeepsItsCounts(t *testing.T) {
	f := newFixture(t, 4, nil)
	f.res.Set("default", "web", capture.Target{PID: 42})
	ensure(t, f.m, policySpec("web", 0))
	eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	eventually(t, "source opened", func() bool { return len(f.engine.Sources()) == 1 })
	pushPackets(f.engine.Sources()[0], 0, 3)
	eventually(t, "3 packets", func() bool { return ringPackets(f, "web") == 3 })
	live, _ := f.m.Status("default", "web")
	dir := sessionDir(t, f, "web")
	f.m.Stop("default", "web")
	eventually(t, "stopped", func() bool { return f.events.count("CaptureStopped") == 1 })

	b, err := os.ReadFile(filepath.Join(dir, "capture.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Counts *capture.FinalCounts `json:"counts"`
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	want := capture.FinalCounts{Packets: 3, Bytes: live.Bytes}
	if meta.Counts == nil || *meta.Counts != want || want.Bytes == 0 {
		t.Fatalf("capture.json counts %+v, want %+v", meta.Counts, want)
	}
	ls := f.m.Captures("default")
	if len(ls) != 1 || ls[0].State != "finished" || ls[0].Final == nil || *ls[0].Final != want {
		t.Fatalf("listing %+v, want the finished capture with %+v", ls, want)
	}
}
