package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/podcap/podcap/agent/alerts"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/podcap/podcap/test/testbed"
)

const annotation = "tcpdump.antrea.io"

// waitFor polls cond every 50 ms until it is true, returns an error, or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alertObjects is the admin's client of the CaptureAlert objects in alertNS. It deletes every
// one of them now and again when the test ends, so that no test sees another's alerts.
func alertObjects(t *testing.T, c *testbed.Cluster) dynamic.ResourceInterface {
	t.Helper()
	admin, err := c.AdminDynamic()
	if err != nil {
		t.Fatal(err)
	}
	objects := admin.Resource(alerts.CaptureAlertGVR).Namespace(alertNS)
	deleteAll := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := objects.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Errorf("delete capturealerts: %v", err)
		}
	}
	deleteAll()
	t.Cleanup(deleteAll)
	return objects
}

// runningPod creates a workload pod in ns (created if needed), waits until it runs and
// deletes it when the test ends.
func runningPod(t *testing.T, c *testbed.Cluster, ns, name string, opts testbed.PodOptions) *corev1.Pod {
	t.Helper()
	ctx := t.Context()
	if err := c.EnsureNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreatePod(ctx, ns, name, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.DeletePod(context.Background(), ns, name); err != nil {
			t.Errorf("delete pod: %v", err)
		}
	})
	pod, err := c.WaitPodRunning(ctx, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

func annotate(t *testing.T, c *testbed.Cluster, pod *corev1.Pod, value string) {
	t.Helper()
	if err := c.AnnotatePod(t.Context(), pod.Namespace, pod.Name, annotation, value); err != nil {
		t.Fatal(err)
	}
}

func unannotate(t *testing.T, c *testbed.Cluster, pod *corev1.Pod) {
	t.Helper()
	if err := c.RemoveAnnotation(t.Context(), pod.Namespace, pod.Name, annotation); err != nil {
		t.Fatal(err)
	}
}

// podDir is where the agent keeps the pod's ring.
func podDir(a *testbed.AgentProcess, pod *corev1.Pod) string {
	return filepath.Join(a.CaptureDir, pod.Namespace, pod.Name)
}

// ringFiles lists the file names in dir, sorted; nil if dir does not exist.
func ringFiles(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func gone(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, os.ErrNotExist)
}

// pcapSummary reads a pcap file, tolerating a last record still being written, and returns
// its link type, packet count and the IPv4 addresses seen.
type pcapSummary struct {
	linkType layers.LinkType
	packets  int
	bytes    int // captured bytes of the packets (record data, as podcap_capture_bytes_total)
	ips      map[string]int
}

func readPcap(t *testing.T, path string) pcapSummary {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(bufio.NewReader(f))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	s := pcapSummary{linkType: r.LinkType(), ips: map[string]int{}}
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%s: packet %d: %v", path, s.packets+1, err)
			}
			return s
		}
		s.packets++
		s.bytes += len(data)
		p := gopacket.NewPacket(data, r.LinkType(), gopacket.DecodeOptions{Lazy: true, NoCopy: true})
		if ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
			s.ips[ip.SrcIP.String()]++
			s.ips[ip.DstIP.String()]++
		}
	}
}

// fileSize is 0 when the file does not exist.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// waitPackets waits until the pod's first ring file holds at least one packet and returns
// its path.
func waitPackets(t *testing.T, a *testbed.AgentProcess, pod *corev1.Pod, first string) string {
	t.Helper()
	p := filepath.Join(podDir(a, pod), first)
	waitFor(t, 30*time.Second, "a packet in "+p, func() (bool, error) { return fileSize(p) > 24, nil })
	return p
}

// waitFilePackets calls send until the pod's ring file first (in its pod directory) holds a
// packet, and returns its path.
func waitFilePackets(t *testing.T, a *testbed.AgentProcess, pod *corev1.Pod, first string, send func()) string {
	t.Helper()
	p := filepath.Join(podDir(a, pod), first)
	waitFor(t, 60*time.Second, "a packet in "+p, func() (bool, error) {
		send()
		return fileSize(p) > 24, nil
	})
	return p
}

// events lists the Events on a pod from podcap-agent, oldest first.
func events(ctx context.Context, c *testbed.Cluster, pod *corev1.Pod) ([]corev1.Event, error) {
	list, err := c.Admin().CoreV1().Events(pod.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + pod.Name + ",involvedObject.kind=Pod",
	})
	if err != nil {
		return nil, err
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.Source.Component == "podcap-agent" && e.InvolvedObject.UID == pod.UID {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b corev1.Event) int { return a.FirstTimestamp.Compare(b.FirstTimestamp.Time) })
	return out, nil
}

// waitEvent waits for an Event on pod with reason whose message contains substr.
func waitEvent(t *testing.T, c *testbed.Cluster, pod *corev1.Pod, eventType, reason, substr string) corev1.Event {
	t.Helper()
	return waitEventCount(t, c, pod, eventType, reason, substr, 1)
}

// waitEventCount is waitEvent for an Event seen at least count times: the same Event again
// (reason and message) only increments the Count of the first.
func waitEventCount(t *testing.T, c *testbed.Cluster, pod *corev1.Pod, eventType, reason, substr string, count int32) corev1.Event {
	t.Helper()
	var found corev1.Event
	what := fmt.Sprintf("%s Event %s %q on %s/%s (count ≥ %d)", eventType, reason, substr, pod.Namespace, pod.Name, count)
	waitFor(t, 30*time.Second, what, func() (bool, error) {
		evs, err := events(t.Context(), c, pod)
		if err != nil {
			return false, err
		}
		for _, e := range evs {
			if e.Type == eventType && e.Reason == reason && strings.Contains(e.Message, substr) && max(e.Count, 1) >= count {
				found = e
				return true, nil
			}
		}
		return false, nil
	})
	return found
}

// processes of the agent's session whose command name is comm.
func sessionProcs(t *testing.T, a *testbed.AgentProcess, comm string) []int {
	t.Helper()
	pids, err := a.SessionPIDs()
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && strings.TrimSpace(string(b)) == comm {
			out = append(out, pid)
		}
	}
	return out
}

// metric returns the value of the sample whose name and labels (a Prometheus text-format
// prefix such as `podcap_captures_running{source="manual"}`) match, from the agent's /metrics.
func metric(t *testing.T, a *testbed.AgentProcess, series string) float64 {
	t.Helper()
	resp, err := http.Get(a.MetricsURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, series)), 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return v
		}
	}
	return 0
}

// restartContainer makes the pod's container, running as oldPID, exit (SIGTERM from the host:
// the workload traps it and exits 0, and the kubelet restarts it) and returns the PID of the
// restarted container.
func restartContainer(t *testing.T, c *testbed.Cluster, pod *corev1.Pod, oldPID int) int {
	t.Helper()
	if err := syscall.Kill(oldPID, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to the container's pid %d: %v", oldPID, err)
	}
	var newPID int
	waitFor(t, 60*time.Second, "the container to restart with a new PID", func() (bool, error) {
		p, err := c.Admin().CoreV1().Pods(pod.Namespace).Get(t.Context(), pod.Name, metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].RestartCount == 0 ||
			p.Status.ContainerStatuses[0].State.Running == nil {
			return false, err
		}
		newPID, err = c.ContainerPID(t.Context(), p)
		return err == nil && newPID != oldPID, err
	})
	return newPID
}

// checkPodTraffic checks a capture file of pod: LINUX_SLL2 (as tcpdump -i any), and every IPv4
// packet between the pod and its peer, the bridge's gateway.
func checkPodTraffic(t *testing.T, c *testbed.Cluster, pod *corev1.Pod, file string) {
	t.Helper()
	s := readPcap(t, file)
	if s.linkType != layers.LinkTypeLinuxSLL2 {
		t.Errorf("link type %v, want LINUX_SLL2 (as tcpdump -i any)", s.linkType)
	}
	for ip := range s.ips {
		if ip != pod.Status.PodIP && ip != c.Gateway.String() {
			t.Errorf("packet with %s: neither the pod (%s) nor its peer (%s)", ip, pod.Status.PodIP, c.Gateway)
		}
	}
}

// lintMetrics fails the test for every problem promlint (Prometheus' own naming and
// convention checks: units in names, _total on counters, help text, …) finds in the agent's
// /metrics as they are now: call it while the metrics of interest have series.
func lintMetrics(t *testing.T, a *testbed.AgentProcess) {
	t.Helper()
	resp, err := http.Get(a.MetricsURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	problems, err := promlint.New(resp.Body).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// startAgent starts an agent and waits until it is ready.
func startAgent(t *testing.T, c *testbed.Cluster, args ...string) *testbed.AgentProcess {
	t.Helper()
	a := c.StartAgent(t, args...)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := a.WaitReady(ctx); err != nil {
		t.Fatalf("agent not ready: %v\n%s", err, a.Log())
	}
	return a
}

// apiClient is an HTTPS client of a's API that trusts the self-signed certificate a logged.
func apiClient(t *testing.T, a *testbed.AgentProcess) *http.Client {
	t.Helper()
	client, err := a.APIClient()
	if err != nil {
		t.Fatalf("API client: %v\n%s", err, a.Log())
	}
	return client
}

// waitPodIP waits until the pcap file holds a packet of ip (a pod's first packets may be IPv6
// neighbour and multicast traffic; its pings to the bridge follow every 0.2 s).
func waitPodIP(t *testing.T, file, ip string) {
	t.Helper()
	waitFor(t, 30*time.Second, "a packet of "+ip+" in "+file, func() (bool, error) {
		return fileSize(file) > 24 && readPcap(t, file).ips[ip] > 0, nil
	})
}
