package capture_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/capturetest"
	"github.com/podcap/podcap/agent/metrics"
)

// engineFixture is a fixture whose manager runs two fake engines, tcpdump (f.engine) and
// native, with native rings of ring bytes under a budget of budget bytes.
func engineFixture(t *testing.T, maxConcurrent int, ring, budget int64) (*fixture, *capturetest.Engine) {
	t.Helper()
	f := newParts(t, nil)
	native := capturetest.NewEngine(nil)
	cfg := f.config(maxConcurrent)
	cfg.Engines[capture.EngineNative] = native
	cfg.NativeRingBytes, cfg.NativeRingBudget = ring, budget
	f.m = runManager(t, cfg)
	return f, native
}

func engineSpec(pod, engine string) capture.Spec {
	s := policySpec(pod, 0)
	s.Engine = engine
	return s
}

// Each capture opens on the engine its Spec names, "" on the default one; capture.json,
// the status and podcap_engine_captures_running say which.
func TestManagerOpensTheEngineTheSpecNames(t *testing.T) {
	f, native := engineFixture(t, 4, 1<<20, 4<<20)
	for _, pod := range []string{"a", "b", "c"} {
		f.res.Set("default", pod, capture.Target{PID: 42})
	}
	ensure(t, f.m, engineSpec("a", ""))
	ensure(t, f.m, engineSpec("b", capture.EngineNative))
	ensure(t, f.m, engineSpec("c", capture.EngineTcpdump))
	for _, pod := range []string{"a", "b", "c"} {
		eventually(t, pod+" running", func() bool { return phase(f.m, "default", pod) == capture.PhaseRunning })
	}
	if n, m := len(f.engine.Opens()), len(native.Opens()); n != 2 || m != 1 {
		t.Fatalf("tcpdump engine opened %d captures, native %d; want 2 and 1", n, m)
	}
	if o := native.Opens()[0].Options; o.Filter != "udp port 53" || o.Snaplen != 128 {
		t.Fatalf("native engine options %+v", o)
	}
	for pod, want := range map[string]string{"a": capture.EngineTcpdump, "b": capture.EngineNative} {
		if st, _ := f.m.Status("default", pod); st.Spec.Engine != want {
			t.Errorf("status of %s: engine %q, want %q", pod, st.Spec.Engine, want)
		}
		if got := readSessionMeta(t, sessionDir(t, f, pod)).Engine; got != want {
			t.Errorf("capture.json of %s: engine %q, want %q", pod, got, want)
		}
	}
	for engine, want := range map[string]float64{capture.EngineTcpdump: 2, capture.EngineNative: 1} {
		if got := testutil.ToFloat64(f.metrics.EngineCapturesRunning.WithLabelValues(engine)); got != want {
			t.Errorf("podcap_engine_captures_running{engine=%q} = %v, want %v", engine, got, want)
		}
	}
	if f.events.count("with the native engine into a ring") != 1 {
		t.Errorf("events:\n%s", f.events)
	}

	// another engine for the same pod is another capture: restarted on it
	ensure(t, f.m, engineSpec("a", capture.EngineNative))
	eventually(t, "a restarted on the native engine", func() bool {
		st, _ := f.m.Status("default", "a")
		return len(native.Opens()) == 2 && st.Phase == capture.PhaseRunning
	})
	f.m.Stop("default", "a")
	f.m.Stop("default", "b")
	eventually(t, "native captures stopped", func() bool {
		return testutil.ToFloat64(f.metrics.EngineCapturesRunning.WithLabelValues(capture.EngineNative)) == 0
	})
}

// A Spec naming an engine the manager does not run is refused, with the reason the engine
// could not be built; it never runs on another engine.
func TestEnsureRefusesAnUnavailableEngine(t *testing.T) {
	f := newParts(t, nil)
	cfg := f.config(4)
	cfg.EngineErrors = map[string]error{capture.EngineNative: errors.New("socket: operation not permitted")}
	f.m = runManager(t, cfg)
	f.res.Set("default", "a", capture.Target{PID: 42})
	_, err := f.m.Ensure(engineSpec("a", capture.EngineNative))
	if !errors.Is(err, capture.ErrEngineUnavailable) || !strings.Contains(err.Error(), "the native engine cannot run on this node: socket: operation not permitted") {
		t.Fatalf("Ensure on an unavailable engine: %v", err)
	}
	if _, err := f.m.Ensure(engineSpec("a", "pcap")); !errors.Is(err, capture.ErrEngineUnavailable) {
		t.Fatalf("Ensure on an unknown engine: %v", err)
	}
	if _, ok := f.m.Status("default", "a"); ok || len(f.engine.Opens()) != 0 {
		t.Fatalf("a refused capture was registered or opened: %+v", f.engine.Opens())
	}
}

// Native captures reserve their kernel ring under the node's ring budget: one that does not
// fit waits (Event, podcap_captures_queued{reason="native_buffer"}) and starts when a native
// capture ends; tcpdump captures are not held back by it.
func TestNativeRingsWaitForTheRingBudget(t *testing.T) {
	const ring = 1 << 20
	f, native := engineFixture(t, 8, ring, 2*ring+ring/2) // two rings fit, a third does not
	for _, pod := range []string{"a", "b", "c", "d"} {
		f.res.Set("default", pod, capture.Target{PID: 42})
	}
	ensure(t, f.m, engineSpec("a", capture.EngineNative))
	ensure(t, f.m, engineSpec("b", capture.EngineNative))
	if q, err := f.m.Ensure(engineSpec("c", capture.EngineNative)); err != nil || !q {
		t.Fatalf("third native Ensure: queued %v, err %v; want queued for the ring budget", q, err)
	}
	ensure(t, f.m, engineSpec("d", capture.EngineTcpdump))
	for _, pod := range []string{"a", "b", "d"} {
		eventually(t, pod+" running", func() bool { return phase(f.m, "default", pod) == capture.PhaseRunning })
	}
	if n := f.events.count("CaptureQueued: capture waits: its native engine's kernel ring of 1048576 bytes (--native-buffer-bytes)"); n != 1 {
		t.Fatalf("%d CaptureQueued Events for the ring budget:\n%s", n, f.events)
	}
	queued := func() float64 {
		return testutil.ToFloat64(f.metrics.CapturesQueued.WithLabelValues(metrics.QueuedNativeBuffer))
	}
	if got := queued(); got != 1 {
		t.Fatalf("podcap_captures_queued{reason=native_buffer} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(f.metrics.NativeRingBytes); got != 2*ring {
		t.Fatalf("podcap_native_ring_reserved_bytes = %v, want %v", got, 2*ring)
	}
	f.m.Stop("default", "d") // a tcpdump capture ending frees no ring
	eventually(t, "d stopped", func() bool { _, ok := f.m.Status("default", "d"); return !ok })
	if phase(f.m, "default", "c") != capture.PhaseQueued {
		t.Fatal("c started when a tcpdump capture ended")
	}
	f.m.Stop("default", "a")
	eventually(t, "c running once a ended", func() bool { return phase(f.m, "default", "c") == capture.PhaseRunning })
	if got := queued(); got != 0 {
		t.Fatalf("podcap_captures_queued{reason=native_buffer} = %v, want 0", got)
	}
	if n := len(native.Opens()); n != 3 {
		t.Fatalf("native engine opened %d captures, want 3", n)
	}
}

// A native engine comes with its ring size and a budget that holds at least one ring.
func TestNewManagerChecksTheRingBudget(t *testing.T) {
	f := newParts(t, nil)
	for _, c := range []struct{ ring, budget int64 }{{0, 1 << 20}, {2 << 20, 1 << 20}} {
		cfg := f.config(4)
		cfg.Engines[capture.EngineNative] = capturetest.NewEngine(nil)
		cfg.NativeRingBytes, cfg.NativeRingBudget = c.ring, c.budget
		if _, err := capture.NewManager(cfg); err == nil {
			t.Errorf("NewManager with a native ring of %d bytes under a budget of %d: no error", c.ring, c.budget)
		}
	}
	cfg := f.config(4)
	cfg.DefaultEngine = capture.EngineNative // not among the engines
	if _, err := capture.NewManager(cfg); err == nil {
		t.Error("NewManager whose default engine is missing: no error")
	}
}
