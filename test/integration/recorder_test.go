package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	corev1 "k8s.io/api/core/v1"

	"github.com/podcap/podcap/test/testbed"
)

// echoRequests counts the ICMP echo requests with a payload of size bytes in the pcap files
// (tolerating a last record still being written): the pod's own pings carry 56 bytes, so a
// ping of another size is a marker of when it was sent.
func echoRequests(t *testing.T, size int, paths ...string) int {
	t.Helper()
	n := 0
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // rotated away meanwhile
			}
			t.Fatal(err)
		}
		r, err := pcapgo.NewReader(bufio.NewReader(f))
		if err != nil {
			f.Close()
			continue // only part of the header written yet
		}
		for {
			data, _, err := r.ReadPacketData()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("%s: %v", path, err)
				}
				break
			}
			p := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
			if icmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok &&
				icmp.TypeCode.Type() == layers.ICMPv4TypeEchoRequest && len(icmp.Payload) == size {
				n++
			}
		}
		f.Close()
	}
	return n
}

// ping sends one echo request of size bytes from the pod to the bridge (no shell).
func ping(t *testing.T, c *testbed.Cluster, pod *corev1.Pod, size int) {
	t.Helper()
	if out, err := c.Kubectl(t.Context(), "exec", "-n", pod.Namespace, pod.Name, "--",
		"ping", "-c", "1", "-s", strconv.Itoa(size), c.Gateway.String()); err != nil {
		t.Fatalf("ping -s %d: %v\n%s", size, err, out)
	}
}

func globFiles(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRecorderPreTrigger: the flight recorder of rules/recorder.rego records a labelled pod
// all the time; a policy capture that starts later has the packets sent BEFORE it in its
// pre-trigger/ directory (and not those sent after); when the label goes the recorder stops
// and its files are deleted, while the capture's pre-trigger files stay.
func TestRecorderPreTrigger(t *testing.T) {
	const before, after = 1357, 1391 // payload sizes of the marker pings
	c := testBed(t)
	a, _ := startPolicyAgent(t, c, policyDir(t, c, nil))
	pod := runningPod(t, c, "recorder", "web", testbed.PodOptions{Labels: map[string]string{"podcap.io/recorder": "true"}})
	recDir := filepath.Join(podDir(a, pod), "recorder")
	waitPodIP(t, filepath.Join(recDir, "capture-web.pcap0"), pod.Status.PodIP)
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", "flight recorder: label podcap.io/recorder=true")
	if v := metric(t, a, `podcap_captures_running{source="recorder"}`); v != 1 {
		t.Fatalf(`podcap_captures_running{source="recorder"} = %v, want 1`, v)
	}
	if m := globFiles(t, filepath.Join(podDir(a, pod), "policy-*")); len(m) != 0 {
		t.Fatalf("a policy capture without its label: %v", m)
	}

	ping(t, c, pod, before)
	waitFor(t, 30*time.Second, "the marker sent before the trigger in the recorder's ring", func() (bool, error) {
		return echoRequests(t, before, globFiles(t, filepath.Join(recDir, "capture-web.pcap*"))...) == 1, nil
	})

	// the trigger: the shipped labels rule starts a policy capture beside the recorder
	setLabel(t, c, pod, "podcap.io/capture", ptr("true"))
	session := policySession(t, a, pod)
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", "flight recorder's last")
	pre := globFiles(t, filepath.Join(session, "pre-trigger", "capture-web.pcap*"))
	if len(pre) == 0 {
		t.Fatalf("no pre-trigger files in %s", session)
	}
	if n := echoRequests(t, before, pre...); n != 1 {
		t.Fatalf("%d marker pings sent before the trigger in pre-trigger/, want 1", n)
	}
	ping(t, c, pod, after)
	waitFor(t, 30*time.Second, "the marker sent after the trigger in the capture's ring", func() (bool, error) {
		return echoRequests(t, after, globFiles(t, filepath.Join(session, "capture-web.pcap*"))...) == 1, nil
	})
	waitFor(t, 30*time.Second, "the marker sent after the trigger in the recorder's ring", func() (bool, error) {
		return echoRequests(t, after, globFiles(t, filepath.Join(recDir, "capture-web.pcap*"))...) == 1, nil
	})
	if n := echoRequests(t, after, pre...); n != 0 {
		t.Fatalf("pre-trigger/ goes on recording: %d marker pings sent after the trigger in it", n)
	}
	var meta struct {
		PreTrigger []string `json:"pre_trigger"`
	}
	b, err := os.ReadFile(filepath.Join(session, "capture.json"))
	if err == nil {
		err = json.Unmarshal(b, &meta)
	}
	if err != nil || len(meta.PreTrigger) != len(pre) || !slices.Contains(meta.PreTrigger, "pre-trigger/"+filepath.Base(pre[0])) {
		t.Fatalf("capture.json pre_trigger = %v (%v), files %v", meta.PreTrigger, err, pre)
	}
	if n := len(sessionProcs(t, a, "tcpdump")); n != 2 {
		t.Fatalf("%d tcpdump processes, want 2 (the recorder and the policy capture)", n)
	}

	// the recorder's label goes: it stops and its files are deleted; the evidence stays
	setLabel(t, c, pod, "podcap.io/recorder", nil)
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStopped", "capture stopped and its files deleted")
	waitFor(t, 30*time.Second, "the recorder's directory deleted", func() (bool, error) { return gone(recDir), nil })
	waitFor(t, 30*time.Second, "one tcpdump left", func() (bool, error) { return len(sessionProcs(t, a, "tcpdump")) == 1, nil })
	if n := echoRequests(t, before, pre...); n != 1 {
		t.Fatalf("pre-trigger/ lost the marker when the recorder stopped (%d)", n)
	}
	if v := metric(t, a, `podcap_capture_starts_total{source="recorder"}`); v != 1 {
		t.Fatalf(`podcap_capture_starts_total{source="recorder"} = %v, want 1`, v)
	}
	if v := metric(t, a, `podcap_captures_running{source="policy"}`); v != 1 {
		t.Fatalf(`podcap_captures_running{source="policy"} = %v, want 1 (the capture goes on)`, v)
	}
}
