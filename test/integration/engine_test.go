package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podcap/podcap/test/testbed"
)

// TestAnnotationCaptureNativeEngine is the seed flow with --engine native: annotate → a ring
// in the pod's network namespace whose packets carry the pod's address, captured without any
// tcpdump process, its kernel ring counted; remove → socket closed and files deleted.
func TestAnnotationCaptureNativeEngine(t *testing.T) {
	c := testBed(t)
	a := startAgent(t, c, "--engine=native")
	pod := runningPod(t, c, "native", "web", testbed.PodOptions{})

	annotate(t, c, pod, "2")
	first := waitPackets(t, a, pod, "capture-web.pcap0")
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", "with the native engine into a ring of 2 files of 1000000 bytes")

	// the pod pings the bridge every 0.2 s: every IPv4 packet is the pod's own
	waitPodIP(t, first, pod.Status.PodIP)
	checkPodTraffic(t, c, pod, first)
	if got := ringFiles(podDir(a, pod)); !slices.Equal(got, []string{"capture-web.pcap0"}) {
		t.Errorf("files = %v, want only the first of the ring", got)
	}
	if n := len(sessionProcs(t, a, "tcpdump")); n != 0 {
		t.Errorf("%d tcpdump processes, want none: the native engine captures in the agent", n)
	}
	if n := len(sessionProcs(t, a, "nsenter")); n != 0 {
		t.Errorf("%d nsenter processes, want none", n)
	}
	waitFor(t, 30*time.Second, "packet metrics", func() (bool, error) {
		return metric(t, a, fmt.Sprintf(`podcap_capture_packets_total{namespace="%s",pod="%s"}`, pod.Namespace, pod.Name)) >= 5, nil
	})
	for series, want := range map[string]float64{
		`podcap_captures_running{source="manual"}`:         1,
		`podcap_engine_captures_running{engine="native"}`:  1,
		`podcap_engine_captures_running{engine="tcpdump"}`: 0,
		`podcap_native_ring_reserved_bytes`:                32 << 20,
	} {
		if v := metric(t, a, series); v != want {
			t.Errorf("%s = %v, want %v", series, v, want)
		}
	}

	unannotate(t, c, pod)
	waitFor(t, 30*time.Second, "files deleted", func() (bool, error) { return gone(podDir(a, pod)), nil })
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStopped", "deleted")
	waitFor(t, 30*time.Second, "native capture ended", func() (bool, error) {
		return metric(t, a, `podcap_engine_captures_running{engine="native"}`) == 0 && metric(t, a, `podcap_native_ring_reserved_bytes`) == 0, nil
	})
}

// enginePolicy captures, on the native engine, the pods annotated test/filter with that filter.
const enginePolicy = `package podcap

captures contains {"priority": 100, "reason": "native", "files": 1, "file_size_bytes": 1000000, "engine": "native", "filter": input.pod.annotations["test/filter"]} if {
	input.pod.annotations["test/filter"]
}
`

// TestPolicyDecidesTheEngine: a decision's engine overrides --engine (tcpdump here): its
// capture runs in the agent, without tcpdump, and its capture.json says native. A filter the
// native engine cannot run exactly (len) is refused with an Event; nothing starts, nothing is
// run on tcpdump instead.
func TestPolicyDecidesTheEngine(t *testing.T) {
	c := testBed(t)
	a, _ := startPolicyAgent(t, c, policyDir(t, c, map[string]string{"engine.rego": enginePolicy}))
	pod := runningPod(t, c, "policy-engine", "web", testbed.PodOptions{Annotations: map[string]string{"test/filter": "icmp"}})
	dir := policySession(t, a, pod)
	waitPodIP(t, filepath.Join(dir, "capture-web.pcap"), pod.Status.PodIP)
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", "with the native engine into a ring of 1 files")
	var meta struct{ Engine, Filter string }
	b, err := os.ReadFile(filepath.Join(dir, "capture.json"))
	if err == nil {
		err = json.Unmarshal(b, &meta)
	}
	if err != nil || meta.Engine != "native" || meta.Filter != "icmp" {
		t.Fatalf("capture.json: %v %s", err, b)
	}
	if n := len(sessionProcs(t, a, "tcpdump")); n != 0 {
		t.Errorf("%d tcpdump processes, want none", n)
	}

	wide := runningPod(t, c, "policy-engine", "wide", testbed.PodOptions{Annotations: map[string]string{"test/filter": "icmp and len > 50"}})
	ev := waitEvent(t, c, wide, corev1.EventTypeWarning, "InvalidPolicyDecision", "cannot be run exactly by the native engine")
	if !strings.Contains(ev.Message, "by its engine field") {
		t.Errorf("event %q does not say why the capture would be native", ev.Message)
	}
	if !gone(podDir(a, wide)) {
		t.Error("capture files exist for a refused decision")
	}
	if n := len(sessionProcs(t, a, "tcpdump")); n != 0 {
		t.Errorf("%d tcpdump processes after the refusal, want none", n)
	}
	if v := metric(t, a, `podcap_policy_errors_total{reason="invalid_decision"}`); v != 1 {
		t.Errorf("invalid decisions = %v, want 1", v)
	}
}

// TestNativeEngineFollowsThePod: with --engine native the capture re-attaches when the pod's
// container restarts (same ring), and a new agent continues the ring of a killed one.
func TestNativeEngineFollowsThePod(t *testing.T) {
	c := testBed(t)
	dir := t.TempDir()
	a1 := startAgent(t, c, "--engine=native", "--capture-dir="+dir)
	pod := runningPod(t, c, "native-follow", "phoenix", testbed.PodOptions{})
	oldPID, err := c.ContainerPID(t.Context(), pod)
	if err != nil {
		t.Fatal(err)
	}
	annotate(t, c, pod, "3")
	file := waitPackets(t, a1, pod, "capture-phoenix.pcap0")
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", fmt.Sprintf("(pid %d) with the native engine", oldPID))

	newPID := restartContainer(t, c, pod, oldPID)
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", fmt.Sprintf("restarted in the pod's network namespace (pid %d)", newPID))
	before := readPcap(t, file).packets
	waitFor(t, 30*time.Second, "packets after the restart", func() (bool, error) { return readPcap(t, file).packets > before+3, nil })

	if err := a1.Kill(); err != nil {
		t.Fatal(err)
	}
	a2 := startAgent(t, c, "--engine=native", "--capture-dir="+dir)
	next := filepath.Join(dir, "native-follow", "phoenix", "capture-phoenix.pcap1")
	waitFor(t, 30*time.Second, "the ring to continue in pcap1", func() (bool, error) { return fileSize(next) > 24, nil })
	if v := metric(t, a2, `podcap_engine_captures_running{engine="native"}`); v != 1 {
		t.Errorf(`podcap_engine_captures_running{engine="native"} = %v after the restart, want 1`, v)
	}
	if n := len(sessionProcs(t, a2, "tcpdump")); n != 0 {
		t.Errorf("%d tcpdump processes, want none", n)
	}
}
