package integration

import (
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

// TestAnnotationCapture is the seed flow: annotate → a ring in the pod's network namespace
// whose packets carry the pod's address, Events and metrics; remove → process stopped and
// files deleted.
func TestAnnotationCapture(t *testing.T) {
	c := testBed(t)
	a := startAgent(t, c)
	pod := runningPod(t, c, "capture", "web", testbed.PodOptions{})

	annotate(t, c, pod, "3")
	first := waitPackets(t, a, pod, "capture-web.pcap0")
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", "ring of 3 files of 1000000 bytes")

	// the pod pings the bridge every 0.2 s: every IPv4 packet is the pod's own
	waitPodIP(t, first, pod.Status.PodIP)
	checkPodTraffic(t, c, pod, first)
	if got := ringFiles(podDir(a, pod)); !slices.Equal(got, []string{"capture-web.pcap0"}) {
		t.Errorf("files = %v, want only the first of the ring", got)
	}
	if n := len(sessionProcs(t, a, "tcpdump")); n != 1 {
		t.Errorf("%d tcpdump processes, want 1", n)
	}
	waitFor(t, 30*time.Second, "packet metrics", func() (bool, error) {
		return metric(t, a, fmt.Sprintf(`podcap_capture_packets_total{namespace="%s",pod="%s"}`, pod.Namespace, pod.Name)) >= 5, nil
	})
	if v := metric(t, a, `podcap_captures_running{source="manual"}`); v != 1 {
		t.Errorf("podcap_captures_running = %v, want 1", v)
	}

	// a new N restarts the ring: tcpdump's names for 12 files, the old ring's files gone
	annotate(t, c, pod, "12")
	waitPackets(t, a, pod, "capture-web.pcap00")
	waitFor(t, 30*time.Second, "the 3-file ring's files removed", func() (bool, error) {
		return slices.Equal(ringFiles(podDir(a, pod)), []string{"capture-web.pcap00"}), nil
	})
	// the 3-file ring's stop said it already: the next stop shows as that Event's count
	restartStop := waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStopped", "deleted")

	unannotate(t, c, pod)
	waitFor(t, 30*time.Second, "files deleted", func() (bool, error) { return gone(podDir(a, pod)), nil })
	waitFor(t, 30*time.Second, "tcpdump stopped", func() (bool, error) { return len(sessionProcs(t, a, "tcpdump")) == 0, nil })
	waitEventCount(t, c, pod, corev1.EventTypeNormal, "CaptureStopped", "deleted", max(restartStop.Count, 1)+1)
	if v := metric(t, a, `podcap_captures_running{source="manual"}`); v != 0 {
		t.Errorf("podcap_captures_running = %v after stop, want 0", v)
	}
}

// TestRingRotationOnRealTraffic pushes bulk traffic through a 3-file ring until it wraps and
// checks the files on the real path against tcpdump's own -C 1 -W 3 split of the same packets.
// It pushes 1 MB at a time until the ring wrapped, since at full snaplen a loaded machine
// drops part of a bulk burst in the kernel (make bench measures how much): what counts here
// is how the captured packets are split, not how many there are.
func TestRingRotationOnRealTraffic(t *testing.T) {
	c := testBed(t)
	a := startAgent(t, c)
	pod := runningPod(t, c, "rotation", "bulk", testbed.PodOptions{})
	annotate(t, c, pod, "3")
	waitPackets(t, a, pod, "capture-bulk.pcap0")
	dir := podDir(a, pod)
	want := []string{"capture-bulk.pcap0", "capture-bulk.pcap1", "capture-bulk.pcap2"}
	wrapped := func() bool {
		f0, f2 := filepath.Join(dir, want[0]), filepath.Join(dir, want[2])
		i0, err0 := os.Stat(f0)
		i2, err2 := os.Stat(f2)
		return err0 == nil && err2 == nil && i2.Size() > 1_000_000 && !i0.ModTime().Before(i2.ModTime())
	}
	for i := 0; !wrapped(); i++ {
		if i == 60 {
			t.Fatalf("the ring did not wrap after 60 MB: files %v", ringFiles(dir))
		}
		if out, err := c.Kubectl(t.Context(), "exec", "-n", pod.Namespace, pod.Name, "--", "traffic", "push", "100000", "10"); err != nil {
			t.Fatalf("push: %v\n%s", err, out)
		}
	}
	if got := ringFiles(dir); !slices.Equal(got, want) {
		t.Fatalf("files = %v, want %v", got, want)
	}
	waitRingSettled(t, dir, want)
	// the two files before the current one are complete: each passed 1,000,000 bytes with its
	// last packet only, and tcpdump splits their packets exactly the same way
	complete := completedFiles(t, dir, want)
	for _, f := range complete {
		if size := fileSize(f); size <= 1_000_000 {
			t.Errorf("%s: %d bytes, a completed file must exceed 1,000,000", filepath.Base(f), size)
		}
	}
	compareWithTcpdump(t, complete, 3)
}

// waitRingSettled waits until the ring grows only by the pod's pings (~1.5 kB/s): after a
// burst the capture may still be writing its tail (kernel buffer, pipe, ring buffer), which
// could rotate into a file being compared.
func waitRingSettled(t *testing.T, dir string, names []string) {
	t.Helper()
	total := func() (n int64) {
		for _, name := range names {
			n += fileSize(filepath.Join(dir, name))
		}
		return n
	}
	last, lastAt := total(), time.Now()
	waitFor(t, 30*time.Second, "the ring to settle after the burst", func() (bool, error) {
		if time.Since(lastAt) < 500*time.Millisecond {
			return false, nil
		}
		now := total()
		settled := now >= last && now-last < 4096 // a rotation (now < last) is not settled
		last, lastAt = now, time.Now()
		return settled, nil
	})
}

// completedFiles returns the ring's files other than the current one, oldest first in ring
// order. The current file is the only one not over 1,000,000 bytes: a file over it rotates at
// the next packet, and the pod's pings bring one every 0.2 s. (File mtimes cannot order the
// ring: a rotation creates the next file within the same clock tick.)
func completedFiles(t *testing.T, dir string, names []string) []string {
	t.Helper()
	current := -1
	waitFor(t, 30*time.Second, "a single file still filling", func() (bool, error) {
		current = -1
		for i, n := range names {
			if fileSize(filepath.Join(dir, n)) <= 1_000_000 {
				if current >= 0 {
					return false, nil
				}
				current = i
			}
		}
		return current >= 0, nil
	})
	var out []string
	for k := 1; k < len(names); k++ {
		out = append(out, filepath.Join(dir, names[(current+k)%len(names)]))
	}
	return out
}

// compareWithTcpdump concatenates the files' packets into one pcap, lets real tcpdump split it
// with -C 1 -W files, and requires the same sizes and bytes, file by file.
func compareWithTcpdump(t *testing.T, paths []string, files int) {
	t.Helper()
	work := t.TempDir()
	merged := filepath.Join(work, "merged.pcap")
	var data []byte
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			b = b[24:] // each file repeats the same global header
		}
		data = append(data, b...)
	}
	if err := os.WriteFile(merged, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCmd("tcpdump", "-Z", "root", "-r", merged, "-C", "1", "-W", fmt.Sprint(files), "-w", filepath.Join(work, "ref.pcap"))
	if err != nil {
		t.Fatalf("tcpdump: %v\n%s", err, out)
	}
	for i, p := range paths {
		ref := filepath.Join(work, fmt.Sprintf("ref.pcap%d", i))
		got, _ := os.ReadFile(p)
		want, err := os.ReadFile(ref)
		if err != nil {
			t.Fatalf("tcpdump wrote no %s: %v", filepath.Base(ref), err)
		}
		if len(got) != len(want) || string(got) != string(want) {
			t.Errorf("%s: %d bytes, tcpdump's %s: %d bytes, equal: %v", filepath.Base(p), len(got), filepath.Base(ref), len(want), string(got) == string(want))
		}
	}
	if extra := filepath.Join(work, fmt.Sprintf("ref.pcap%d", len(paths))); !gone(extra) {
		t.Errorf("tcpdump split the packets into more files than podcap (%s exists)", filepath.Base(extra))
	}
}

// TestInvalidRequests: bad values start nothing and each gets a Warning Event and a metric.
func TestInvalidRequests(t *testing.T) {
	c := testBed(t)
	a := startAgent(t, c)
	values := []string{"", "0", "-1", "abc", "1e3", "65", "99999999999999999999", " 2"}
	pods := make([]*corev1.Pod, len(values))
	for i, v := range values {
		pods[i] = runningPod(t, c, "invalid", fmt.Sprintf("bad-%d", i), testbed.PodOptions{})
		annotate(t, c, pods[i], v)
	}
	for i, v := range values {
		e := waitEvent(t, c, pods[i], corev1.EventTypeWarning, "InvalidCaptureRequest", fmt.Sprintf("%q", v))
		if !strings.Contains(e.Message, "from 1 to 64") {
			t.Errorf("value %q: message %q does not say what is accepted", v, e.Message)
		}
	}
	if got := metric(t, a, `podcap_invalid_capture_requests_total{reason="invalid_value"}`); got != float64(len(values)) {
		t.Errorf("invalid_value requests = %v, want %d", got, len(values))
	}
	if files := ringFiles(filepath.Join(a.CaptureDir, "invalid")); len(files) != 0 {
		t.Errorf("capture files for invalid requests: %v", files)
	}
	if n := len(sessionProcs(t, a, "tcpdump")); n != 0 {
		t.Errorf("%d tcpdump processes for invalid requests", n)
	}
	// a valid value afterwards works: nothing else broke
	annotate(t, c, pods[0], "1")
	waitPackets(t, a, pods[0], "capture-bad-0.pcap")
}

// TestHostNetworkRefused: a hostNetwork pod's capture would be the node's traffic; refused
// unless --allow-host-network.
func TestHostNetworkRefused(t *testing.T) {
	c := testBed(t)
	a := startAgent(t, c)
	pod := runningPod(t, c, "hostnet", "hn", testbed.PodOptions{HostNetwork: true})
	annotate(t, c, pod, "1")
	waitEvent(t, c, pod, corev1.EventTypeWarning, "InvalidCaptureRequest", "--allow-host-network")
	if !gone(podDir(a, pod)) || len(sessionProcs(t, a, "tcpdump")) != 0 {
		t.Fatal("a hostNetwork pod was captured without --allow-host-network")
	}
	// --allow-host-network opts in: the capture runs in the node's network namespace (which
	// the engine refuses for any other pod)
	b := startAgent(t, c, "--allow-host-network")
	waitPackets(t, b, pod, "capture-hn.pcap")
}

// TestPodDeletionStopsCapture: deleting the pod stops its capture and deletes the files.
func TestPodDeletionStopsCapture(t *testing.T) {
	c := testBed(t)
	a := startAgent(t, c)
	pod := runningPod(t, c, "deletion", "short", testbed.PodOptions{})
	annotate(t, c, pod, "2")
	waitPackets(t, a, pod, "capture-short.pcap0")
	if err := c.DeletePod(t.Context(), pod.Namespace, pod.Name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "files deleted", func() (bool, error) { return gone(podDir(a, pod)), nil })
	waitFor(t, 30*time.Second, "tcpdump stopped", func() (bool, error) { return len(sessionProcs(t, a, "tcpdump")) == 0, nil })
}

// TestSameNameInTwoNamespaces: two pods named alike get two captures of their own traffic.
func TestSameNameInTwoNamespaces(t *testing.T) {
	c := testBed(t)
	a := startAgent(t, c)
	p1 := runningPod(t, c, "twin-a", "twin", testbed.PodOptions{})
	p2 := runningPod(t, c, "twin-b", "twin", testbed.PodOptions{})
	annotate(t, c, p1, "1")
	annotate(t, c, p2, "2")
	f1 := waitPackets(t, a, p1, "capture-twin.pcap")
	f2 := waitPackets(t, a, p2, "capture-twin.pcap0")
	waitPodIP(t, f1, p1.Status.PodIP)
	waitPodIP(t, f2, p2.Status.PodIP)
	for _, x := range []struct {
		file       string
		own, other *corev1.Pod
	}{{f1, p1, p2}, {f2, p2, p1}} {
		s := readPcap(t, x.file)
		if s.ips[x.own.Status.PodIP] == 0 || s.ips[x.other.Status.PodIP] != 0 {
			t.Errorf("%s: addresses %v, want %s's (%s) only", x.file, s.ips, x.own.Namespace, x.own.Status.PodIP)
		}
	}
}

func runCmd(name string, args ...string) (string, error) {
	out, err := execCommand(name, args...).CombinedOutput()
	return string(out), err
}
