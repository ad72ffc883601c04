package capture_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/metrics"
)

// alertSpec is the capture of an alert decision with a stop grace and a cooldown.
func alertSpec(pod string, grace, cooldown time.Duration) capture.Spec {
	s := spec("default", pod, 2)
	s.Source, s.Reason, s.Alerts = capture.SourceAlert, "alert HighLatency", "fp1,fp2"
	s.Trigger = "reason: alert HighLatency\nalert: HighLatency fingerprint=fp1 generatorURL=http://prom/graph?g0.expr=up&g0.tab=1"
	s.Format, s.StopGrace, s.Cooldown = capture.FormatPcapng, grace, cooldown
	return s
}

func status(t *testing.T, m *capture.Manager, pod string) capture.Status {
	t.Helper()
	st, ok := m.Status("default", pod)
	if !ok {
		t.Fatalf("pod %s has no capture", pod)
	}
	return st
}

func gone(m *capture.Manager, pod string) bool { _, ok := m.Status("default", pod); return !ok }

func TestStopGraceRunsOnThenStops(t *testing.T) {
	f, clk := newClockFixture(t, 4)
	f.res.Set("default", "web", capture.Target{PID: 42})
	t0 := clk.Now()
	ensure(t, f.m, alertSpec("web", 2*time.Minute, 0))
	eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	// the Event follows the phase change (it flaked when read at once on a loaded machine)
	eventually(t, "CaptureStarted", func() bool { return f.events.count("CaptureStarted") == 1 })
	if f.events.count("Normal CaptureStarted: capturing in the pod's network namespace (pid 42)") != 1 ||
		f.events.count("{0..1}; trigger: alert HighLatency (2 alerts, see capture.json)") != 1 {
		t.Fatalf("the CaptureStarted Event does not name the trigger:\n%s", f.events)
	}
	f.m.StopAfterGrace("default", "web", "uid-web")
	if st := status(t, f.m, "web"); st.Phase != capture.PhaseRunning || !st.StopsAt.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("in its grace: phase %s, stops at %s; want Running, stopping at %s", st.Phase, st.StopsAt, t0.Add(2*time.Minute))
	}
	if n := f.events.count("Normal CaptureStopping: no longer decided: the capture goes on for its stop grace of 2m0s and stops at 2026-12-06T12:02:00Z"); n != 1 {
		t.Fatalf("%d CaptureStopping events:\n%s", n, f.events)
	}
	clk.awaitTimers(t, 1) // the grace's deadline
	clk.Step(time.Minute)
	f.m.StopAfterGrace("default", "web", "uid-web") // the next sync: does not extend the grace
	if st := status(t, f.m, "web"); !st.StopsAt.Equal(t0.Add(2*time.Minute)) || f.events.count("CaptureStopping") != 1 {
		t.Fatalf("a second StopAfterGrace moved the end to %s or sent another Event:\n%s", st.StopsAt, f.events)
	}
	clk.Step(time.Minute - time.Millisecond)
	if p := phase(f.m, "default", "web"); p != capture.PhaseRunning {
		t.Fatalf("phase %s before the grace ended", p)
	}
	clk.Step(time.Millisecond)
	eventually(t, "stopped after the grace", func() bool { return gone(f.m, "web") && f.events.count("CaptureStopped") == 1 })
	if !strings.Contains(f.events.String(), "capture stopped (no longer decided, after its stop grace of 2m0s); files kept") {
		t.Fatalf("events:\n%s", f.events)
	}
	dir := onlyDir(t, f, "web", "alert-*")
	meta := readSessionMeta(t, dir)
	if ran := meta.Stopped.Sub(meta.Started); ran != 2*time.Minute || len(f.engine.Opens()) != 1 {
		t.Fatalf("ran %s with %d opens; want the grace of 2m, one open", ran, len(f.engine.Opens()))
	}
}

func TestStopGraceEndsWhenDecidedAgain(t *testing.T) {
	f, clk := newClockFixture(t, 4)
	f.res.Set("default", "web", capture.Target{PID: 42})
	s := alertSpec("web", 2*time.Minute, 0)
	s.MaxDuration = time.Hour
	ensure(t, f.m, s)
	eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	clk.awaitTimers(t, 1) // max_duration
	f.m.StopAfterGrace("default", "web", "uid-web")
	clk.awaitTimers(t, 2) // the grace's end, earlier than max_duration's
	clk.Step(time.Minute)
	ensure(t, f.m, s) // the alert fires again
	if st := status(t, f.m, "web"); !st.StopsAt.IsZero() || st.Phase != capture.PhaseRunning {
		t.Fatalf("decided again: stops at %s, phase %s; want no grace, Running", st.StopsAt, st.Phase)
	}
	if f.events.count("decided again during its stop grace: the capture goes on, same ring") != 1 {
		t.Fatalf("events:\n%s", f.events)
	}
	clk.awaitTimers(t, 3)                  // the watcher took max_duration's end back
	clk.Step(59*time.Minute - time.Second) // well past the grace's end
	if p := phase(f.m, "default", "web"); p != capture.PhaseRunning || len(f.engine.Opens()) != 1 {
		t.Fatalf("phase %s, %d opens after the grace would have ended; want Running, one open", p, len(f.engine.Opens()))
	}
	clk.Step(time.Second) // max_duration still ends it, an hour after its start
	eventually(t, "expired", func() bool { return phase(f.m, "default", "web") == capture.PhaseExpired })
}

func TestStopAfterGraceStopsAtOnce(t *testing.T) {
	tests := []struct {
		name  string
		spec  func() capture.Spec
		uid   string
		after func(m *capture.Manager) // what comes after StopAfterGrace
	}{
		{name: "no grace", spec: func() capture.Spec { return alertSpec("web", 0, 0) }, uid: "uid-web"},
		{name: "manual", spec: func() capture.Spec { s := spec("default", "web", 2); s.StopGrace = time.Minute; return s }, uid: "uid-web"},
		{name: "another pod of that name", spec: func() capture.Spec { return alertSpec("web", time.Minute, 0) }, uid: "uid-new"},
		{name: "pod deleted during the grace", spec: func() capture.Spec { return alertSpec("web", time.Minute, 0) }, uid: "uid-web",
			after: func(m *capture.Manager) { m.Stop("default", "web") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := newClockFixture(t, 4)
			f.res.Set("default", "web", capture.Target{PID: 42})
			ensure(t, f.m, tt.spec())
			eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
			f.m.StopAfterGrace("default", "web", tt.uid)
			if tt.after != nil {
				tt.after(f.m)
			}
			// the fake clock never moves: only an immediate stop ends the capture
			eventually(t, "stopped", func() bool { return gone(f.m, "web") && f.events.count("CaptureStopped") == 1 })
		})
	}
}

func TestCooldownHoldsTheNextCapture(t *testing.T) {
	f, clk := newClockFixture(t, 4)
	f.res.Set("default", "web", capture.Target{PID: 42})
	s := alertSpec("web", 0, 5*time.Minute)
	ensure(t, f.m, s)
	eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	clk.Step(time.Minute)
	f.m.StopAfterGrace("default", "web", "uid-web") // resolved: no grace, stops now
	eventually(t, "stopped", func() bool { return gone(f.m, "web") && f.events.count("CaptureStopped") == 1 })
	ended := clk.Now()

	queued := func() float64 {
		return testutil.ToFloat64(f.metrics.CapturesQueued.WithLabelValues(metrics.QueuedCooldown))
	}
	for i := range 3 { // the flapping alert fires again, and again
		_, err := f.m.Ensure(s)
		var cerr *capture.CoolingDownError
		if !errors.Is(err, capture.ErrCoolingDown) || !errors.As(err, &cerr) || !cerr.Until.Equal(ended.Add(5*time.Minute)) {
			t.Fatalf("Ensure %d in the cooldown = %v; want a CoolingDownError until %s", i, err, ended.Add(5*time.Minute))
		}
		clk.Step(time.Minute)
	}
	if n := f.events.count("Normal CaptureCoolingDown: capture waits: the pod's last policy or alert capture ended at 2026-12-06T12:01:00Z and its cooldown of 5m0s lasts until 2026-12-06T12:06:00Z"); n != 1 {
		t.Fatalf("%d CaptureCoolingDown events, want one per cooldown:\n%s", n, f.events)
	}
	if q := queued(); q != 1 || len(f.engine.Opens()) != 1 {
		t.Fatalf("queued{cooldown} = %v, %d opens; want 1, 1", q, len(f.engine.Opens()))
	}
	// another capture of the pod by policy waits too, a manual one does not
	p := policySpec("web", 0)
	if _, err := f.m.Ensure(p); !errors.Is(err, capture.ErrCoolingDown) {
		t.Fatalf("policy capture in the cooldown: %v", err)
	}
	ensure(t, f.m, spec("default", "web", 2))
	eventually(t, "manual running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	f.m.StopAfterGrace("default", "web", "uid-web") // annotation removed
	eventually(t, "manual stopped", func() bool { return gone(f.m, "web") })
	if q := queued(); q != 0 {
		t.Fatalf("queued{cooldown} = %v with nothing desired", q)
	}
	if _, err := f.m.Ensure(s); !errors.Is(err, capture.ErrCoolingDown) || queued() != 1 || f.events.count("CaptureCoolingDown") != 1 {
		t.Fatalf("the alert again: %v, queued %v, events:\n%s", err, queued(), f.events)
	}

	clk.Step(2 * time.Minute) // the cooldown is over: forgotten at the next tick
	eventually(t, "cooldown forgotten", func() bool { return queued() == 0 })
	ensure(t, f.m, s)
	eventually(t, "running again", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
}

func TestCooldownStartsAfterMaxDuration(t *testing.T) {
	f, clk := newClockFixture(t, 4)
	f.res.Set("default", "web", capture.Target{PID: 42})
	s := alertSpec("web", 0, time.Minute)
	s.MaxDuration = time.Minute
	ensure(t, f.m, s)
	eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	clk.awaitTimers(t, 1)
	clk.Step(time.Minute)
	eventually(t, "expired", func() bool { return phase(f.m, "default", "web") == capture.PhaseExpired })
	f.m.StopAfterGrace("default", "web", "uid-web")
	if _, err := f.m.Ensure(s); !errors.Is(err, capture.ErrCoolingDown) {
		t.Fatalf("Ensure after max_duration within the cooldown: %v", err)
	}
}

func TestNoCooldownAfterReplacementOrPodGone(t *testing.T) {
	f, _ := newClockFixture(t, 4)
	f.res.Set("default", "web", capture.Target{PID: 42})
	s := alertSpec("web", 0, time.Hour)
	ensure(t, f.m, s)
	eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	other := s
	other.Filter = "tcp"
	ensure(t, f.m, other) // replaced: starts at once
	eventually(t, "replacement running", func() bool {
		st, ok := f.m.Status("default", "web")
		return ok && st.Phase == capture.PhaseRunning && st.Spec.Filter == "tcp"
	})
	f.m.StopAfterGrace("default", "web", "uid-web")
	eventually(t, "stopped", func() bool { return gone(f.m, "web") && f.events.count("CaptureStopped") == 2 })
	if _, err := f.m.Ensure(s); !errors.Is(err, capture.ErrCoolingDown) {
		t.Fatalf("Ensure in the cooldown: %v", err)
	}
	n := s
	n.UID = "uid-new" // a new pod of that name: no cooldown
	ensure(t, f.m, n)
	eventually(t, "new pod's capture running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	f.m.Stop("default", "web") // the pod is gone: its cooldown too
	eventually(t, "stopped", func() bool { return gone(f.m, "web") })
	ensure(t, f.m, n)
}

func TestAlertCaptureMetadata(t *testing.T) {
	f, _ := newClockFixture(t, 4)
	f.res.Set("default", "web", capture.Target{PID: 42})
	ensure(t, f.m, alertSpec("web", time.Minute, 5*time.Minute))
	eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	dir := onlyDir(t, f, "web", "alert-*")
	b, err := os.ReadFile(filepath.Join(dir, "capture.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"source": "alert"`, `"format": "pcapng"`, `"stop_grace": "1m0s"`, `"cooldown": "5m0s"`,
		`"alerts": [`, `"fp1",`, `"fp2"`, `"reason: alert HighLatency",`,
		`"alert: HighLatency fingerprint=fp1 generatorURL=http://prom/graph?g0.expr=up&g0.tab=1"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("capture.json lacks %s:\n%s", want, b)
		}
	}
	if st := status(t, f.m, "web"); st.Spec.Alerts != "fp1,fp2" || !strings.HasPrefix(st.Spec.Trigger, "reason: ") {
		t.Errorf("status spec %+v", st.Spec)
	}
}

// onlyDir is the one directory of the pod matching pattern.
func onlyDir(t *testing.T, f *fixture, pod, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(f.dir, "default", pod, pattern))
	if len(m) != 1 {
		t.Fatalf("directories %s of %s: %v", pattern, pod, m)
	}
	return m[0]
}
