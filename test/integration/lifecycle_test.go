package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podcap/podcap/test/testbed"
)

// TestContainerRestartReattaches: the pod's container restarts (new PID, same sandbox); the
// capture follows it and the ring keeps growing.
func TestContainerRestartReattaches(t *testing.T) {
	c := testBed(t)
	a := startAgent(t, c)
	pod := runningPod(t, c, "restart", "phoenix", testbed.PodOptions{})
	oldPID, err := c.ContainerPID(t.Context(), pod)
	if err != nil {
		t.Fatal(err)
	}
	annotate(t, c, pod, "2")
	file := waitPackets(t, a, pod, "capture-phoenix.pcap0")
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", fmt.Sprintf("(pid %d)", oldPID))

	// The workload traps TERM and exits 0; the kubelet restarts the container. The signal is
	// sent from the host: a `kubectl exec -- kill 1` races the container's own exit (the exec'd
	// kill is SIGKILLed with the PID namespace and kubectl reports exit code 137).
	newPID := restartContainer(t, c, pod, oldPID)
	// (the re-attach follows the pod's update; the 30 s recheck is the fallback: wait longer)
	waitFor(t, 60*time.Second, "the capture re-attached", func() (bool, error) {
		evs, err := events(t.Context(), c, pod)
		for _, e := range evs {
			if e.Reason == "CaptureStarted" && strings.Contains(e.Message, fmt.Sprintf("restarted in the pod's network namespace (pid %d)", newPID)) {
				return true, nil
			}
		}
		return false, err
	})
	before := readPcap(t, file).packets
	waitFor(t, 30*time.Second, "packets after the restart", func() (bool, error) { return readPcap(t, file).packets > before+3, nil })
	if n := len(sessionProcs(t, a, "tcpdump")); n != 1 {
		t.Errorf("%d tcpdump processes after re-attaching, want 1", n)
	}
}

// TestTcpdumpDeathRestarts: tcpdump killed from outside is restarted with a Warning Event.
func TestTcpdumpDeathRestarts(t *testing.T) {
	c := testBed(t)
	a := startAgent(t, c)
	pod := runningPod(t, c, "tcpdump-death", "victim", testbed.PodOptions{})
	annotate(t, c, pod, "1")
	file := waitPackets(t, a, pod, "capture-victim.pcap")
	procs := sessionProcs(t, a, "tcpdump")
	if len(procs) != 1 {
		t.Fatalf("tcpdump processes %v, want 1", procs)
	}
	if err := syscall.Kill(procs[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, c, pod, corev1.EventTypeWarning, "CaptureFailed", "capture process ended")
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", "restarted")
	waitFor(t, 30*time.Second, "a new tcpdump", func() (bool, error) {
		p := sessionProcs(t, a, "tcpdump")
		return len(p) == 1 && p[0] != procs[0], nil
	})
	before := readPcap(t, file).packets
	waitFor(t, 30*time.Second, "packets from the new tcpdump", func() (bool, error) { return readPcap(t, file).packets > before, nil })
	if v := metric(t, a, `podcap_capture_failures_total{reason="exited"}`); v < 1 {
		t.Errorf("exited failures = %v", v)
	}
}

// TestAgentRestartReconciles: an agent killed with SIGKILL leaves no tcpdump; the next one
// resumes the captures that should run (continuing their rings) and deletes the files of
// pods that stopped asking meanwhile.
func TestAgentRestartReconciles(t *testing.T) {
	c := testBed(t)
	dir := t.TempDir()
	a1 := startAgent(t, c, "--capture-dir="+dir)
	keep := runningPod(t, c, "agent-restart", "keep", testbed.PodOptions{})
	drop := runningPod(t, c, "agent-restart", "drop", testbed.PodOptions{})
	annotate(t, c, keep, "3")
	annotate(t, c, drop, "3")
	waitPackets(t, a1, keep, "capture-keep.pcap0")
	waitPackets(t, a1, drop, "capture-drop.pcap0")
	if n := len(sessionProcs(t, a1, "tcpdump")); n != 2 {
		t.Fatalf("%d tcpdump processes, want 2", n)
	}

	if err := a1.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "no tcpdump left by the killed agent", func() (bool, error) {
		return len(sessionProcs(t, a1, "tcpdump")) == 0, nil
	})
	unannotate(t, c, drop) // while no agent runs

	a2 := startAgent(t, c, "--capture-dir="+dir)
	waitFor(t, 30*time.Second, "files of the unannotated pod removed", func() (bool, error) {
		return gone(filepath.Join(dir, "agent-restart", "drop")), nil
	})
	// the kept ring goes on after its newest file (pcap0): pcap1
	next := filepath.Join(dir, "agent-restart", "keep", "capture-keep.pcap1")
	waitFor(t, 30*time.Second, "the ring to continue in pcap1", func() (bool, error) { return fileSize(next) > 24, nil })
	if n := len(sessionProcs(t, a2, "tcpdump")); n != 1 {
		t.Errorf("%d tcpdump processes after the restart, want 1", n)
	}
}

// TestConcurrencyCap: the excess capture waits with an Event and starts when a slot frees.
func TestConcurrencyCap(t *testing.T) {
	c := testBed(t)
	a := startAgent(t, c, "--max-concurrent-captures=1")
	first := runningPod(t, c, "cap", "first", testbed.PodOptions{})
	second := runningPod(t, c, "cap", "second", testbed.PodOptions{})
	annotate(t, c, first, "1")
	waitPackets(t, a, first, "capture-first.pcap")
	annotate(t, c, second, "1")
	waitEvent(t, c, second, corev1.EventTypeWarning, "CaptureQueued", "--max-concurrent-captures")
	if v := metric(t, a, `podcap_captures_queued{reason="concurrency"}`); v != 1 {
		t.Errorf(`podcap_captures_queued{reason="concurrency"} = %v, want 1`, v)
	}
	if !gone(podDir(a, second)) {
		t.Fatal("the queued capture already writes files")
	}
	unannotate(t, c, first)
	waitPackets(t, a, second, "capture-second.pcap")
	if v := metric(t, a, `podcap_captures_queued{reason="concurrency"}`); v != 0 {
		t.Errorf(`podcap_captures_queued{reason="concurrency"} = %v, want 0`, v)
	}
}

// TestDeadCRISocket: a runtime socket that does not answer fails captures with an Event and a
// metric; the agent itself keeps serving.
func TestDeadCRISocket(t *testing.T) {
	c := testBed(t)
	a := startAgent(t, c, "--cri-endpoint=unix://"+filepath.Join(t.TempDir(), "dead.sock"))
	pod := runningPod(t, c, "dead-cri", "orphan", testbed.PodOptions{})
	annotate(t, c, pod, "1")
	e := waitEvent(t, c, pod, corev1.EventTypeWarning, "CaptureFailed", "find the pod's network namespace")
	if !strings.Contains(e.Message, "dead.sock") {
		t.Errorf("message %q does not name the socket", e.Message)
	}
	waitFor(t, 30*time.Second, "resolve failure metric", func() (bool, error) {
		return metric(t, a, `podcap_capture_failures_total{reason="resolve"}`) >= 1, nil
	})
}

// TestAgentRBAC: the agent's credentials (exactly deploy/rbac.yaml's ClusterRole) can read
// pods and write core Events, and nothing else (not even events.k8s.io Events: unused).
func TestAgentRBAC(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	pod := runningPod(t, c, "rbac", "target", testbed.PodOptions{})
	ag := c.AgentClient()
	if _, err := ag.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + c.NodeName}); err != nil {
		t.Errorf("list pods: %v", err)
	}
	if _, err := ag.CoreV1().Pods("rbac").Get(ctx, "target", metav1.GetOptions{}); err != nil {
		t.Errorf("get pod: %v", err)
	}
	w, err := ag.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + c.NodeName})
	if err != nil {
		t.Errorf("watch pods: %v", err)
	} else {
		w.Stop()
	}
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: "target.", Namespace: "rbac"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "rbac", Name: "target", UID: pod.UID},
		Reason:         "RBACTest", Message: "agent credentials", Type: corev1.EventTypeNormal,
		Source: corev1.EventSource{Component: "podcap-agent-test"},
	}
	created, err := ag.CoreV1().Events("rbac").Create(ctx, ev, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create event: %v", err)
	}
	if _, err := ag.CoreV1().Events("rbac").Patch(ctx, created.Name, types.MergePatchType, []byte(`{"count":2}`), metav1.PatchOptions{}); err != nil {
		t.Errorf("patch event: %v", err)
	}
	forbidden := map[string]error{}
	_, forbidden["patch pod"] = ag.CoreV1().Pods("rbac").Patch(ctx, "target", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{})
	forbidden["delete pod"] = ag.CoreV1().Pods("rbac").Delete(ctx, "target", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
	_, forbidden["create pod"] = ag.CoreV1().Pods("rbac").Create(ctx, c.WorkloadPod("rbac", "intruder", testbed.PodOptions{}), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	_, forbidden["exec (pods/exec)"] = ag.CoreV1().RESTClient().Post().Namespace("rbac").Resource("pods").Name("target").SubResource("exec").DoRaw(ctx)
	_, forbidden["list secrets"] = ag.CoreV1().Secrets("rbac").List(ctx, metav1.ListOptions{})
	_, forbidden["list configmaps"] = ag.CoreV1().ConfigMaps("rbac").List(ctx, metav1.ListOptions{})
	_, forbidden["list nodes"] = ag.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	forbidden["delete event"] = ag.CoreV1().Events("rbac").Delete(ctx, created.Name, metav1.DeleteOptions{})
	_, forbidden["create events.k8s.io event"] = ag.EventsV1().Events("rbac").Create(ctx, &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "target.", Namespace: "rbac"},
		EventTime:  metav1.NowMicro(), ReportingController: "podcap.io/agent-test", ReportingInstance: "test",
		Action: "Test", Reason: "RBACTest", Type: corev1.EventTypeNormal,
		Regarding: corev1.ObjectReference{Kind: "Pod", Namespace: "rbac", Name: "target", UID: pod.UID},
	}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	for what, err := range forbidden {
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s: %v, want Forbidden", what, err)
		}
	}
}
