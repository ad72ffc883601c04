package capture_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/capturetest"
)

func recorderSpec(pod string) capture.Spec {
	s := spec("default", pod, 2)
	s.Source, s.Reason = capture.SourceRecorder, "label podcap.io/recorder=true"
	return s
}

// heldSource replays packets of 100 and 200 bytes, then waits like a live capture.
func heldSource(capture.Target, capture.SourceOptions) *capturetest.Source {
	return capturetest.NewSource(layers.LinkTypeLinuxSLL2, 262144, pkt(100), pkt(200)).Hold()
}

func recorderPhase(m *capture.Manager, pod string) capture.Phase {
	st, ok := m.RecorderStatus("default", pod)
	if !ok {
		return ""
	}
	return st.Phase
}

// A flight recorder runs in a slot of its own beside the pod's policy capture; the capture
// starts with the recorder's files hard-linked into its pre-trigger/ directory (listed in
// capture.json, counted once in the byte budget), and they outlive the recorder.
func TestRecorderPreservedIntoPolicyCapture(t *testing.T) {
	f := newFixture(t, 4, heldSource)
	f.res.Set("default", "web", capture.Target{PID: 42})
	rec := recorderSpec("web")
	ensure(t, f.m, rec)
	recDir := filepath.Join(f.dir, "default", "web", capture.RecorderDir)
	recFile := filepath.Join(recDir, "capture-web.pcap0")
	const ringBytes = 24 + 2*16 + 300 // pcap header, two records of 100 and 200 bytes
	eventually(t, "the recorder's packets on disk", func() bool {
		st, ok := f.m.RecorderStatus("default", "web")
		fi, err := os.Stat(recFile)
		return ok && st.Phase == capture.PhaseRunning && st.Spec.Source == capture.SourceRecorder && err == nil && fi.Size() == ringBytes
	})
	if _, ok := f.m.Status("default", "web"); ok {
		t.Fatal("the recorder took the pod's capture slot")
	}
	if got := testutil.ToFloat64(f.metrics.CapturesRunning.WithLabelValues(capture.SourceRecorder)); got != 1 {
		t.Fatalf(`podcap_captures_running{source="recorder"} = %v, want 1`, got)
	}

	pol := policySpec("web", 0)
	ensure(t, f.m, pol)
	eventually(t, "the policy capture runs beside the recorder", func() bool {
		return phase(f.m, "default", "web") == capture.PhaseRunning && recorderPhase(f.m, "web") == capture.PhaseRunning
	})
	dir := sessionDir(t, f, "web")
	pre := filepath.Join(dir, capture.PreTriggerDir, "capture-web.pcap0")
	fi, err := os.Stat(pre)
	if err != nil || fi.Size() != ringBytes {
		t.Fatalf("pre-trigger file: %v, %v; want %d bytes", fi, err, ringBytes)
	}
	if recFi, err := os.Stat(recFile); err != nil || !os.SameFile(fi, recFi) {
		t.Fatalf("pre-trigger file is not a hard link of the recorder's (%v)", err)
	}
	// the recorder moved on to a fresh file, so the linked one is never written again
	eventually(t, "the recorder's next file", func() bool { return exists(filepath.Join(recDir, "capture-web.pcap1")) })
	var meta struct {
		PreTrigger []string `json:"pre_trigger"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "capture.json"))
	if err := json.Unmarshal(b, &meta); err != nil || !slices.Equal(meta.PreTrigger, []string{"pre-trigger/capture-web.pcap0"}) {
		t.Fatalf("capture.json pre_trigger = %v (%v):\n%s", meta.PreTrigger, err, b)
	}
	// budget: each ring's worst case, and the linked bytes once (not the recorder's worst case)
	if got, want := f.m.Reserved(), rec.WorstCase()+pol.WorstCase()+ringBytes; got != want {
		t.Fatalf("reserved %d bytes, want %d", got, want)
	}
	// the Event follows capture.json: wait for it
	eventually(t, "CaptureStarted naming the pre-trigger files", func() bool {
		return f.events.count("the flight recorder's last 1 files preserved in pre-trigger/") == 1
	})

	f.m.StopRecorder("default", "web")
	eventually(t, "the recorder's files deleted", func() bool { return !exists(recDir) })
	if _, ok := f.m.RecorderStatus("default", "web"); ok {
		t.Fatal("recorder still reported")
	}
	if fi, err := os.Stat(pre); err != nil || fi.Size() != ringBytes {
		t.Fatalf("pre-trigger file after the recorder stopped: %v, %v", fi, err)
	}
	if p := phase(f.m, "default", "web"); p != capture.PhaseRunning {
		t.Fatalf("policy capture %s after its recorder stopped", p)
	}
	// the pod's series are shared: the recorder's end must not delete the running capture's
	if n := testutil.CollectAndCount(f.metrics.Packets); n != 1 {
		t.Fatalf("%d packets series while the policy capture runs, want 1", n)
	}
	// the recorder's reservation goes when its goroutine has cleaned up, after its files
	eventually(t, "the recorder's reservation released", func() bool { return f.m.Reserved() == pol.WorstCase()+ringBytes })
	f.m.Stop("default", "web")
	eventually(t, "nothing reserved", func() bool { return f.m.Reserved() == 0 })
	eventually(t, "the pod's series deleted", func() bool { return testutil.CollectAndCount(f.metrics.Packets) == 0 })
	if !exists(pre) {
		t.Fatal("a policy capture's pre-trigger file was deleted at its stop")
	}
}

// A capture that starts while the pod has no recorder reserves nothing for one and has no
// pre-trigger directory; a manual capture never has one.
func TestNoRecorderNoPreTrigger(t *testing.T) {
	f := newFixture(t, 4, heldSource)
	f.res.Set("default", "web", capture.Target{PID: 42})
	pol := policySpec("web", 0)
	ensure(t, f.m, pol)
	eventually(t, "running", func() bool { return phase(f.m, "default", "web") == capture.PhaseRunning })
	if got := f.m.Reserved(); got != pol.WorstCase() {
		t.Fatalf("reserved %d, want %d", got, pol.WorstCase())
	}
	if exists(filepath.Join(sessionDir(t, f, "web"), capture.PreTriggerDir)) {
		t.Fatal("pre-trigger directory without a recorder")
	}
	f.res.Set("default", "db", capture.Target{PID: 43})
	ensure(t, f.m, recorderSpec("db"))
	eventually(t, "db's recorder runs", func() bool { return recorderPhase(f.m, "db") == capture.PhaseRunning })
	ensure(t, f.m, spec("default", "db", 2))
	eventually(t, "db's manual capture runs", func() bool { return phase(f.m, "default", "db") == capture.PhaseRunning })
	if ents, _ := filepath.Glob(filepath.Join(f.dir, "default", "db", "pre-trigger*")); len(ents) != 0 {
		t.Fatalf("a manual capture preserved the recorder: %v", ents)
	}
}

// A recorder holds one of --max-concurrent-captures like any capture; a pod that is gone
// loses its recorder and its files; StopRecorder on a pod without one removes what an
// earlier agent left.
func TestRecorderLimitsAndStop(t *testing.T) {
	f := newFixture(t, 1, heldSource, func(dir string) {
		stale := filepath.Join(dir, "default", "old", capture.RecorderDir, "capture-old.pcap0")
		if err := os.MkdirAll(filepath.Dir(stale), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(stale, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	f.res.Set("default", "web", capture.Target{PID: 42})
	ensure(t, f.m, recorderSpec("web"))
	eventually(t, "recorder runs", func() bool { return recorderPhase(f.m, "web") == capture.PhaseRunning })
	if queued, err := f.m.Ensure(policySpec("web", 0)); err != nil || !queued {
		t.Fatalf("Ensure = %v, %v; want queued behind the recorder (1 concurrent capture)", queued, err)
	}
	// ensuring the same recorder again changes nothing
	if queued, err := f.m.Ensure(recorderSpec("web")); err != nil || queued {
		t.Fatalf("Ensure recorder again = %v, %v", queued, err)
	}
	f.m.Stop("default", "web") // the pod is gone: both slots
	eventually(t, "the pod's directory gone", func() bool { return !exists(filepath.Join(f.dir, "default", "web")) })
	if _, ok := f.m.RecorderStatus("default", "web"); ok {
		t.Fatal("recorder of a pod that is gone still reported")
	}
	f.m.StopRecorder("default", "old")
	if exists(filepath.Join(f.dir, "default", "old")) {
		t.Fatal("StopRecorder left an earlier agent's recorder files")
	}
}
