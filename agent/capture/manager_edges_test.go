package capture_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/utils/clock"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/capturetest"
)

// Captures of one pod replaced while the first is still being stopped run one after the
// other: A (stopping slowly) <- B (stopped before it started) <- C. C must not open while A's
// process is still there, and A's clean-up must not delete C's ring.
func TestReplacedCapturesOfAPodNeverOverlap(t *testing.T) {
	release := make(chan struct{})
	var opens, overlaps atomic.Int32
	f := newFixture(t, 4, func(capture.Target, capture.SourceOptions) *capturetest.Source {
		src := capturetest.NewSource(layers.LinkTypeLinuxSLL2, 262144, pkt(100)).Hold()
		if opens.Add(1) == 1 {
			return src.SlowClose(release) // A: its process takes its time to stop
		}
		select {
		case <-release:
		default:
			overlaps.Add(1) // opened while A is still stopping
		}
		return src
	})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	f.res.Set("default", "web", capture.Target{PID: 42})
	ring := filepath.Join(f.dir, "default/web/capture-web.pcap0")

	ensure(t, f.m, spec("default", "web", 3)) // A
	eventually(t, "A running with its first file", func() bool {
		return phase(f.m, "default", "web") == capture.PhaseRunning && exists(ring)
	})
	ensure(t, f.m, spec("default", "web", 5)) // B waits for A, whose Close blocks
	eventually(t, "A being closed", func() bool { return f.engine.Sources()[0].Closed() })
	ensure(t, f.m, spec("default", "web", 7)) // C replaces B before B started
	// C must wait for A: give a wrong implementation the time to open it (it takes well
	// under a millisecond), then let A finish
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) && opens.Load() == 1 {
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	eventually(t, "C running with its file", func() bool {
		st, ok := f.m.Status("default", "web")
		return ok && st.Phase == capture.PhaseRunning && st.Spec.Files == 7 && exists(ring)
	})
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("%d captures of default/web opened while the first was still stopping", n)
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("%d opens, want 2 (A and C; B was replaced before it started)", n)
	}
}

// A retention sweep that empties a pod's directory must not remove it under a manual ring
// that is open but has no file yet (its pod not resolvable yet): the ring would write into a
// deleted directory for good.
func TestRetentionKeepsThePodDirectoryOfAStartingCapture(t *testing.T) {
	old := time.Now().Add(-48 * time.Hour)
	session := ""
	f := newFixture(t, 4, nil, func(dir string) {
		session = filepath.Join(dir, "default/web/policy-20200101T000000.000Z")
		p := filepath.Join(session, "capture-web.pcap0")
		if err := os.MkdirAll(session, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{p, session} {
			if err := os.Chtimes(q, old, old); err != nil {
				t.Fatal(err)
			}
		}
	})
	f.res.SetErr("default", "web", capture.ErrPodNotFound) // sandbox still being created
	ensure(t, f.m, spec("default", "web", 2))
	eventually(t, "the pod resolved once", func() bool { return f.res.Calls() >= 1 })
	eventually(t, "the old session evicted", func() bool { return !exists(session) })
	f.res.Set("default", "web", capture.Target{PID: 42})
	eventually(t, "the manual ring's first file", func() bool {
		return exists(filepath.Join(f.dir, "default/web/capture-web.pcap0"))
	})
}

// A manual capture stopped while it waits for a slot has no goroutine to clean up: Stop
// deletes the ring an earlier agent left for it.
func TestStopOfAQueuedManualCaptureDeletesLeftFiles(t *testing.T) {
	left := ""
	f := newFixture(t, 1, nil, func(dir string) {
		left = filepath.Join(dir, "default/web/capture-web.pcap0")
		if err := os.MkdirAll(filepath.Dir(left), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(left, []byte("earlier agent"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	f.res.Set("default", "a", capture.Target{PID: 1})
	ensure(t, f.m, spec("default", "a", 1))
	if q, err := f.m.Ensure(spec("default", "web", 2)); err != nil || !q {
		t.Fatalf("Ensure: queued %v, err %v; want queued", q, err)
	}
	f.m.Stop("default", "web") // the annotation went away before a slot did
	if exists(left) {
		t.Fatalf("%s kept after Stop of the queued capture", left)
	}
}

// The per-pod series of an ended capture are deleted and stay deleted: an expired capture
// is still listed (Status), but the periodic stats refresh must not bring its series back.
func TestEndedCaptureSeriesStayDeleted(t *testing.T) {
	f := newFixture(t, 4, func(t capture.Target, _ capture.SourceOptions) *capturetest.Source {
		if t.PID == 42 {
			return capturetest.NewSource(layers.LinkTypeLinuxSLL2, 262144, pkt(100), pkt(100)).Hold()
		}
		return capturetest.NewSource(layers.LinkTypeLinuxSLL2, 262144).Hold()
	})
	f.res.Set("default", "web", capture.Target{PID: 42})
	f.res.Set("default", "clock", capture.Target{PID: 7})
	ensure(t, f.m, spec("default", "clock", 1)) // its stats requests count the refreshes
	eventually(t, "clock running", func() bool { return phase(f.m, "default", "clock") == capture.PhaseRunning })
	ensure(t, f.m, policySpec("web", 100*time.Millisecond))
	eventually(t, "web expired", func() bool { return phase(f.m, "default", "web") == capture.PhaseExpired })
	clock := f.engine.Sources()[0]
	seen := clock.StatsRequests()
	eventually(t, "two more stats refreshes", func() bool { return clock.StatsRequests() >= seen+2 })
	for name, c := range map[string]prometheus.Collector{"packets": f.metrics.Packets, "bytes": f.metrics.Bytes} {
		if podSeries(t, c, "web") {
			t.Errorf("a %s series of default/web is back after its capture ended", name)
		}
		if !podSeries(t, c, "clock") {
			t.Errorf("no %s series of the running capture default/clock", name)
		}
	}
}

// podSeries reports whether c has a series labelled pod=pod.
func podSeries(t *testing.T, c prometheus.Collector, pod string) bool {
	t.Helper()
	ch := make(chan prometheus.Metric)
	go func() { c.Collect(ch); close(ch) }()
	found := false
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		for _, l := range d.GetLabel() {
			found = found || l.GetName() == "pod" && l.GetValue() == pod
		}
	}
	return found
}

// max_duration counts from when the capture started: time spent queued does not count, and
// the same decision made again does not push the end further.
func TestMaxDurationCountsFromTheStart(t *testing.T) {
	f, clk := newClockFixture(t, 1)
	f.res.Set("default", "a", capture.Target{PID: 1})
	f.res.Set("default", "web", capture.Target{PID: 2})
	ensure(t, f.m, spec("default", "a", 1))
	s := policySpec("web", 300*time.Millisecond)
	if q, err := f.m.Ensure(s); err != nil || !q {
		t.Fatalf("Ensure: queued %v, err %v; want queued", q, err)
	}
	clk.Step(400 * time.Millisecond) // longer than max_duration in the queue
	f.m.Stop("default", "a")
	eventually(t, "web running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	clk.awaitTimers(t, 1)
	// the policy keeps deciding the same: the capture still ends 300 ms after it started
	for range 3 {
		ensure(t, f.m, s)
		clk.Step(100 * time.Millisecond)
	}
	eventually(t, "web expired", func() bool { return phase(f.m, "default", "web") == capture.PhaseExpired })
	meta := readSessionMeta(t, sessionDir(t, f, "web"))
	if ran := meta.Stopped.Sub(meta.Started); ran != 300*time.Millisecond || meta.StopReason != "max_duration 300ms reached" {
		t.Fatalf("ran %s, stop reason %q; want 300ms (not the time queued) and max_duration", ran, meta.StopReason)
	}
}

// sessionMeta is what a test reads of a policy capture's capture.json.
type sessionMeta struct {
	Started, Stopped time.Time
	StopReason       string `json:"stop_reason"`
	Engine           string
}

func readSessionMeta(t *testing.T, dir string) sessionMeta {
	t.Helper()
	var meta sessionMeta
	b, err := os.ReadFile(filepath.Join(dir, "capture.json"))
	if err == nil {
		err = json.Unmarshal(b, &meta)
	}
	if err != nil {
		t.Fatalf("capture.json: %v", err)
	}
	return meta
}

// frozenClock is the real clock with Now stuck at one instant.
type frozenClock struct {
	clock.RealClock
	now time.Time
}

func (c frozenClock) Now() time.Time { return c.now }

// Two policy captures of a pod started within the same millisecond get their own
// directories: the second must not overwrite the files the first keeps.
func TestPolicyCapturesOfTheSameMillisecondKeepTheirOwnFiles(t *testing.T) {
	f := newFixture(t, 4, nil)
	m := runManager(t, capture.Config{
		Dir: t.TempDir(), MaxConcurrent: 4, Engines: map[string]capture.Engine{capture.EngineTcpdump: f.engine}, Resolver: f.res, Notifier: f.events,
		Metrics: f.metrics, Clock: frozenClock{now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)},
	})
	f.res.Set("default", "web", capture.Target{PID: 42})
	first := policySpec("web", 0)
	ensure(t, m, first)
	eventually(t, "the first running", func() bool { return phase(m, "default", "web") == capture.PhaseRunning })
	st, _ := m.Status("default", "web")
	second := first
	second.Filter = "tcp port 443"
	ensure(t, m, second)
	eventually(t, "the second running", func() bool {
		s, ok := m.Status("default", "web")
		return ok && s.Phase == capture.PhaseRunning && s.Spec.Filter == second.Filter
	})
	st2, _ := m.Status("default", "web")
	if st2.Dir == st.Dir {
		t.Fatalf("both captures in %s", st.Dir)
	}
	if !exists(filepath.Join(st.Dir, "capture.json")) || !exists(filepath.Join(st.Dir, "capture-web.pcap0")) {
		t.Fatalf("the first capture's files are gone from %s", st.Dir)
	}
}

// slowStopEvents is a Notifier whose CaptureStopped Events take a while (a slow API server).
type slowStopEvents struct{ events }

func (e *slowStopEvents) Notify(s capture.Spec, eventType, reason, message string) {
	if reason == capture.ReasonStopped {
		time.Sleep(100 * time.Millisecond) // the API server is slow: widens the window, syncs nothing
	}
	e.events.Notify(s, eventType, reason, message)
}

// The sweep asked for when a policy capture ends runs once the capture no longer counts as
// live, so its files are evicted at once when due, not a retention interval later.
func TestEndedPolicyCaptureIsEvictedWithoutWaitingForTheNextSweep(t *testing.T) {
	f := newFixture(t, 4, nil)
	m := runManager(t, capture.Config{
		Dir: t.TempDir(), MaxConcurrent: 4, Engines: map[string]capture.Engine{capture.EngineTcpdump: f.engine}, Resolver: f.res, Notifier: &slowStopEvents{},
		Metrics: f.metrics, Retention: capture.Retention{MaxAge: time.Nanosecond, Interval: time.Hour},
	})
	f.res.Set("default", "web", capture.Target{PID: 42})
	ensure(t, m, policySpec("web", 0))
	eventually(t, "running", func() bool { return phase(m, "default", "web") == capture.PhaseRunning })
	st, _ := m.Status("default", "web")
	m.Stop("default", "web")
	eventually(t, "the ended capture evicted (max age 1ns)", func() bool { return !exists(st.Dir) })
}

// A policy capture stopped before its process ever ran captured nothing: its directory goes
// (it held only the capture.json of its start) instead of waiting for retention.
func TestPolicyCaptureThatNeverStartedLeavesNothing(t *testing.T) {
	f := newFixture(t, 4, nil)
	f.res.SetErr("default", "web", capture.ErrPodNotFound) // the sandbox is still being created
	ensure(t, f.m, policySpec("web", 0))
	var dir string
	eventually(t, "the capture's directory", func() bool { dir = sessionDir(t, f, "web"); return dir != "" })
	eventually(t, "the pod resolved once", func() bool { return f.res.Calls() >= 1 })
	f.m.Stop("default", "web")
	eventually(t, "the pod's directory gone", func() bool { return !exists(filepath.Join(f.dir, "default/web")) })
	if n := f.events.count("CaptureStopped"); n != 0 {
		t.Errorf("%d CaptureStopped Events for a capture that never started:\n%s", n, f.events)
	}
}

// podcap_capture_bytes_total counts captured packet bytes, as its HELP says: no pcap file or
// record headers.
func TestCaptureBytesCountPacketData(t *testing.T) {
	f := newFixture(t, 4, func(capture.Target, capture.SourceOptions) *capturetest.Source {
		return capturetest.NewSource(layers.LinkTypeLinuxSLL2, 262144, pkt(100), pkt(200)).Hold()
	})
	f.res.Set("default", "web", capture.Target{PID: 42})
	ensure(t, f.m, spec("default", "web", 2))
	eventually(t, "two packets counted", func() bool {
		return testutil.ToFloat64(f.metrics.Packets.WithLabelValues("default", "web")) == 2
	})
	if got := testutil.ToFloat64(f.metrics.Bytes.WithLabelValues("default", "web")); got != 300 {
		t.Fatalf("podcap_capture_bytes_total = %v, want 300 (the packets' bytes)", got)
	}
	if st, _ := f.m.Status("default", "web"); st.Bytes != 300 || st.DiskBytes != 24+2*16+300 {
		t.Fatalf("status bytes %d, disk bytes %d; want 300 and %d", st.Bytes, st.DiskBytes, 24+2*16+300)
	}
}
