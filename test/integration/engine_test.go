package integration

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
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
	s := readPcap(t, first)
	if s.linkType != layers.LinkTypeLinuxSLL2 {
		t.Errorf("link type %v, want LINUX_SLL2 (as tcpdump -i any)", s.linkType)
	}
	for ip := range s.ips {
		if ip != pod.Status.PodIP && ip != c.Gateway.String() {
			t.Errorf("packet with %s: neither the pod (%s) nor its peer (%s)", ip, pod.Status.PodIP, c.Gateway)
		}
	}
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
