package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
)

const (
	// DefaultTimeout bounds a helper's wait when its context has no earlier deadline.
	DefaultTimeout = 2 * time.Minute
	// PollInterval is how often helpers poll what they wait for.
	PollInterval = 100 * time.Millisecond
	// WorkloadContainer is the name of the container CreatePod creates.
	WorkloadContainer = "workload"
)

// PodOptions shape a workload pod (CreatePod).
type PodOptions struct {
	// Command of the container; default: the workload image's `traffic ping` (pings the
	// bridge every 0.2 s until SIGTERM). `traffic push BYTES [COUNT]` sends to the sink.
	Command     []string
	Image       string // default: the workload image (busybox + traffic)
	Labels      map[string]string
	Annotations map[string]string
	HostNetwork bool
	// Mutate, if set, edits the pod last (extra containers, security context, ...).
	Mutate func(*corev1.Pod)
}

// Kubectl runs the cluster's kubectl as admin and returns its stdout.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.tool(ctx, "kubectl", append([]string{"--kubeconfig", c.AdminKubeconfig}, args...)...)
}

// Helm runs the cache's helm (built by cluster.sh build) as admin and returns its stdout.
func (c *Cluster) Helm(ctx context.Context, args ...string) (string, error) {
	return c.tool(ctx, "helm", append([]string{"--kubeconfig", c.AdminKubeconfig}, args...)...)
}

// Crictl runs crictl against the cluster's containerd and returns its stdout.
func (c *Cluster) Crictl(ctx context.Context, args ...string) (string, error) {
	return c.tool(ctx, "crictl", append([]string{
		"--config", filepath.Join(c.RunDir, "crictl.yaml"), "--runtime-endpoint", c.CRIEndpoint, "--image-endpoint", c.CRIEndpoint, "--timeout", "10s",
	}, args...)...)
}

func (c *Cluster) tool(ctx context.Context, name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, name), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// EnsureNamespace creates namespace ns if needed and waits for its default ServiceAccount
// (pods are rejected until kube-controller-manager has created it).
func (c *Cluster) EnsureNamespace(ctx context.Context, ns string) error {
	_, err := c.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return poll(ctx, func(ctx context.Context) (bool, error) {
		_, err := c.admin.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	}, "namespace %s: default service account", ns)
}

// WorkloadPod returns (without creating it) the pod CreatePod would create.
func (c *Cluster) WorkloadPod(ns, name string, opts PodOptions) *corev1.Pod {
	image := opts.Image
	if image == "" {
		image = c.WorkloadImage
	}
	cmd := opts.Command
	if len(cmd) == 0 {
		cmd = []string{"traffic", "ping"}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: opts.Labels, Annotations: opts.Annotations},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:            WorkloadContainer,
				Image:           image,
				ImagePullPolicy: corev1.PullNever,
				Command:         cmd,
			}},
			HostNetwork:                   opts.HostNetwork,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
		},
	}
	if opts.Mutate != nil {
		opts.Mutate(pod)
	}
	return pod
}

// CreatePod creates a workload pod (see PodOptions); it does not wait for it to run.
func (c *Cluster) CreatePod(ctx context.Context, ns, name string, opts PodOptions) (*corev1.Pod, error) {
	pod, err := c.admin.CoreV1().Pods(ns).Create(ctx, c.WorkloadPod(ns, name, opts), metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}
	return pod, nil
}

// WaitPodRunning waits until the pod runs (phase Running, an IP, every container running)
// and returns it. It fails early when the pod cannot get there (terminated, image missing,
// crash loop, ...).
func (c *Cluster) WaitPodRunning(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	var last *corev1.Pod
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		pod, err := c.admin.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = pod
		return podRunning(pod)
	}, "pod %s/%s running", ns, name)
	if err != nil {
		if last != nil {
			err = fmt.Errorf("%w (last seen: %s)", err, podSummary(last))
		}
		return nil, err
	}
	return last, nil
}

// fatalWaiting are container waiting reasons a pod does not recover from by waiting.
var fatalWaiting = map[string]bool{
	"ErrImageNeverPull": true, "InvalidImageName": true, "CrashLoopBackOff": true,
	"CreateContainerError": true, "CreateContainerConfigError": true, "RunContainerError": true,
}

func podRunning(pod *corev1.Pod) (bool, error) {
	switch pod.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		return false, fmt.Errorf("pod %s/%s terminated: %s", pod.Namespace, pod.Name, podSummary(pod))
	case corev1.PodRunning:
	default:
		for _, cs := range pod.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && fatalWaiting[w.Reason] {
				return false, fmt.Errorf("pod %s/%s cannot start: %s", pod.Namespace, pod.Name, podSummary(pod))
			}
		}
		return false, nil
	}
	if pod.Status.PodIP == "" || len(pod.Status.ContainerStatuses) < len(pod.Spec.Containers) {
		return false, nil
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.State.Running == nil {
			return false, nil
		}
	}
	return true, nil
}

func podSummary(pod *corev1.Pod) string {
	s := fmt.Sprintf("phase %s", pod.Status.Phase)
	if pod.Status.Reason != "" {
		s += " reason " + pod.Status.Reason
	}
	for _, cs := range pod.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			s += fmt.Sprintf(", %s waiting %s: %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
		case cs.State.Terminated != nil:
			s += fmt.Sprintf(", %s terminated %s (exit %d)", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode)
		case cs.State.Running != nil:
			s += ", " + cs.Name + " running"
		}
	}
	return s
}

// DeletePod deletes the pod (grace period 1 s) and waits until it is gone.
func (c *Cluster) DeletePod(ctx context.Context, ns, name string) error {
	err := c.admin.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](1)})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete pod %s/%s: %w", ns, name, err)
	}
	return poll(ctx, func(ctx context.Context) (bool, error) {
		_, err := c.admin.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	}, "pod %s/%s gone", ns, name)
}

// AnnotatePod sets annotation key=value on the pod (merge patch, as `kubectl annotate`).
func (c *Cluster) AnnotatePod(ctx context.Context, ns, name, key, value string) error {
	return c.patchAnnotation(ctx, ns, name, key, &value)
}

// RemoveAnnotation removes annotation key from the pod (a no-op if it is not set).
func (c *Cluster) RemoveAnnotation(ctx context.Context, ns, name, key string) error {
	return c.patchAnnotation(ctx, ns, name, key, nil)
}

func (c *Cluster) patchAnnotation(ctx context.Context, ns, name, key string, value *string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]*string{key: value}}})
	if err != nil {
		return err
	}
	if _, err := c.admin.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("annotate pod %s/%s %s: %w", ns, name, key, err)
	}
	return nil
}

// ContainerPID returns the host PID of the pod's first container, found through the CRI
// (crictl: ready sandbox by pod UID -> running container -> inspect), independently of the
// agent's own lookup.
func (c *Cluster) ContainerPID(ctx context.Context, pod *corev1.Pod) (int, error) {
	if len(pod.Spec.Containers) == 0 {
		return 0, fmt.Errorf("pod %s/%s has no containers", pod.Namespace, pod.Name)
	}
	return c.ContainerPIDOf(ctx, pod, pod.Spec.Containers[0].Name)
}

// ContainerPIDOf is ContainerPID for the named container.
func (c *Cluster) ContainerPIDOf(ctx context.Context, pod *corev1.Pod, container string) (int, error) {
	out, err := c.Crictl(ctx, "pods", "-q", "--state", "ready", "--label", "io.kubernetes.pod.uid="+string(pod.UID))
	if err != nil {
		return 0, err
	}
	sandboxes := strings.Fields(out)
	if len(sandboxes) != 1 {
		return 0, fmt.Errorf("pod %s/%s: %d ready sandboxes", pod.Namespace, pod.Name, len(sandboxes))
	}
	out, err = c.Crictl(ctx, "ps", "-q", "--state", "running", "--pod", sandboxes[0], "--label", "io.kubernetes.container.name="+container)
	if err != nil {
		return 0, err
	}
	ids := strings.Fields(out)
	if len(ids) != 1 {
		return 0, fmt.Errorf("pod %s/%s: %d running containers named %s", pod.Namespace, pod.Name, len(ids), container)
	}
	out, err = c.Crictl(ctx, "inspect", "-o", "json", ids[0])
	if err != nil {
		return 0, err
	}
	var st struct {
		Info struct {
			PID int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return 0, fmt.Errorf("crictl inspect %s: %w", ids[0], err)
	}
	if st.Info.PID <= 0 {
		return 0, fmt.Errorf("crictl inspect %s: no pid", ids[0])
	}
	return st.Info.PID, nil
}

// poll calls cond every PollInterval until it returns true or an error, ctx ends, or
// DefaultTimeout passes; the error then says what was awaited.
func poll(ctx context.Context, cond wait.ConditionWithContextFunc, what string, args ...any) error {
	err := wait.PollUntilContextTimeout(ctx, PollInterval, DefaultTimeout, true, cond)
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(what, args...)
	if wait.Interrupted(err) {
		return fmt.Errorf("timed out waiting for %s: %w", msg, err)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("waiting for %s: %w", msg, err)
	}
	return fmt.Errorf("%s: %w", msg, err)
}
