package testbed

import (
	"net/netip"
	"os/exec"
	"slices"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestParseEnvAndFill(t *testing.T) {
	out := `export PODCAP_CLUSTER=test
export KUBECONFIG=/tmp/podcap-test/run/admin.kubeconfig
export PODCAP_ADMIN_KUBECONFIG=/tmp/podcap-test/run/admin.kubeconfig
export PODCAP_AGENT_KUBECONFIG=/tmp/podcap-test/run/agent.kubeconfig
export PODCAP_AGENT_USER=podcap-agent-under-test
export PODCAP_API_SERVER=https://127.0.0.1:27103
export PODCAP_CRI_ENDPOINT=unix:///tmp/podcap-test/cri/containerd.sock
export PODCAP_NETNS_DIR=/tmp/podcap-test/containerd/state/io.containerd.grpc.v1.cri/netns
export PODCAP_NODE_NAME=podcap-test
export PODCAP_SUBNET=10.244.101.0/24
export PODCAP_GATEWAY=10.244.101.1
export PODCAP_SINK_PORT=27108
export PODCAP_BIN=/work/with\ space/.cache/cluster/bin
export PODCAP_CLUSTER_DIR=/tmp/podcap-test
export PODCAP_RUN_DIR=/tmp/podcap-test/run
export PODCAP_LOG_DIR=/tmp/podcap-test/logs
export PODCAP_CAPTURE_DIR=/tmp/podcap-test/captures
export PODCAP_WORKLOAD_IMAGE=podcap.local/workload:1
export PODCAP_AGENT_IMAGE=ghcr.io/podcap/podcap-agent:dev
export PATH=/x:"$PATH"
alias crictl='crictl --runtime-endpoint x'
`
	env := parseEnv(out)
	if _, ok := env["PATH"]; ok {
		t.Error("a value with quotes or $ must be skipped")
	}
	var c Cluster
	if err := c.fill(env); err != nil {
		t.Fatal(err)
	}
	if c.BinDir != "/work/with space/.cache/cluster/bin" {
		t.Errorf("BinDir %q", c.BinDir)
	}
	if c.Subnet != netip.MustParsePrefix("10.244.101.0/24") || c.Gateway != netip.MustParseAddr("10.244.101.1") || c.SinkPort != 27108 {
		t.Errorf("network: %v %v %d", c.Subnet, c.Gateway, c.SinkPort)
	}
	delete(env, "PODCAP_NODE_NAME")
	if err := (&Cluster{}).fill(env); err == nil {
		t.Error("want an error for a missing variable")
	}
}

func TestFlags(t *testing.T) {
	tests := []struct {
		args      []string
		name      string
		wantValue string
		wantHas   bool
	}{
		{args: []string{"--capture-dir=/x"}, name: "capture-dir", wantValue: "/x", wantHas: true},
		{args: []string{"-capture-dir", "/y"}, name: "capture-dir", wantValue: "/y", wantHas: true},
		{args: []string{"--capture-dirs=/z"}, name: "capture-dir"},
		{args: []string{"--max-files=3"}, name: "capture-dir"},
		{args: []string{"--allow-host-network"}, name: "allow-host-network", wantHas: true},
	}
	for _, tc := range tests {
		t.Run(tc.name+" "+tc.args[0], func(t *testing.T) {
			if got := flagValue(tc.args, tc.name); got != tc.wantValue {
				t.Errorf("flagValue = %q, want %q", got, tc.wantValue)
			}
			if got := hasFlag(tc.args, tc.name); got != tc.wantHas {
				t.Errorf("hasFlag = %v, want %v", got, tc.wantHas)
			}
		})
	}
}

func TestPodRunning(t *testing.T) {
	running := corev1.ContainerStatus{Name: "w", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	pod := func(phase corev1.PodPhase, ip string, cs ...corev1.ContainerStatus) *corev1.Pod {
		return &corev1.Pod{
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "w"}}},
			Status: corev1.PodStatus{Phase: phase, PodIP: ip, ContainerStatuses: cs},
		}
	}
	tests := []struct {
		name    string
		pod     *corev1.Pod
		want    bool
		wantErr bool
	}{
		{name: "pending", pod: pod(corev1.PodPending, "")},
		{name: "running", pod: pod(corev1.PodRunning, "10.0.0.1", running), want: true},
		{name: "running without ip", pod: pod(corev1.PodRunning, "", running)},
		{name: "failed", pod: pod(corev1.PodFailed, ""), wantErr: true},
		{name: "image never pulled", pod: pod(corev1.PodPending, "", corev1.ContainerStatus{
			Name: "w", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull"}},
		}), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := podRunning(tc.pod)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("podRunning = %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestSessionPIDs(t *testing.T) {
	// a process in a session of its own, blocked reading its stdin until the test closes it
	cmd := exec.Command("cat")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pids, err := sessionPIDs(cmd.Process.Pid)
	in.Close()
	if werr := cmd.Wait(); werr != nil {
		t.Error(werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pids, []int{cmd.Process.Pid}) {
		t.Errorf("session %d: pids %v", cmd.Process.Pid, pids)
	}
}
