package plugin

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// AgentSelector selects the agent pods (deploy/daemonset.yaml's pod template labels).
const AgentSelector = "app.kubernetes.io/name=podcap,app.kubernetes.io/component=agent"

// DefaultAgentNamespace is where deploy/ runs the agents.
const DefaultAgentNamespace = "podcap-system"

// AgentNamespaceEnv names the environment variable that sets the agents' namespace for every
// command, as --agent-namespace does for one (a Helm release installed elsewhere).
const AgentNamespaceEnv = "PODCAP_AGENT_NAMESPACE"

// defaultAPIPort is the agent's API port when its pod names no port "api".
const defaultAPIPort = 9696

// Forwarder opens a tunnel to a port of a pod; in the plugin, a port-forward through the
// API server (portForwarder), in tests a local server.
type Forwarder interface {
	// Forward returns the local address of the tunnel and the function that closes it.
	Forward(ctx context.Context, pod *corev1.Pod, port int) (addr string, stop func(), err error)
}

// agentPods lists the running agent pods, on node if it is not "".
func (e *Env) agentPods(ctx context.Context, node string) ([]*corev1.Pod, error) {
	opts := metav1.ListOptions{LabelSelector: AgentSelector}
	if node != "" {
		opts.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
	}
	list, err := e.Kube.CoreV1().Pods(e.AgentNamespace).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list podcap agents in namespace %s: %w", e.AgentNamespace, err)
	}
	var out []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if p.Status.Phase == corev1.PodRunning && (node == "" || p.Spec.NodeName == node) {
			out = append(out, p)
		}
	}
	return out, nil
}

// agentOnNode returns the running agent pod of node, a ready one if there is one.
func (e *Env) agentOnNode(ctx context.Context, node string) (*corev1.Pod, error) {
	pods, err := e.agentPods(ctx, node)
	if err != nil {
		return nil, err
	}
	if len(pods) == 0 {
		return nil, fmt.Errorf("no running podcap agent on node %s (pods %q in namespace %s; --agent-namespace to change)",
			node, AgentSelector, e.AgentNamespace)
	}
	for _, p := range pods {
		if podReady(p) {
			return p, nil
		}
	}
	return pods[0], nil
}

// nodeOf returns the node the pod ns/name runs on.
func (e *Env) nodeOf(ctx context.Context, ns, name string) (string, error) {
	pod, err := e.Kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("pod %s/%s not found", ns, name)
	}
	if err != nil {
		return "", fmt.Errorf("get pod %s/%s: %w", ns, name, err)
	}
	if pod.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s is not scheduled to a node yet", ns, name)
	}
	return pod.Spec.NodeName, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// apiPort is the agent pod's container port named "api", else the default 9696.
func apiPort(p *corev1.Pod) int {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "api" {
				return int(port.ContainerPort)
			}
		}
	}
	return defaultAPIPort
}

// withAgent opens a tunnel to the agent pod's API port and calls fn with a client of it; the
// tunnel is closed when fn returns.
func (e *Env) withAgent(ctx context.Context, agent *corev1.Pod, fn func(*agentClient) error) error {
	addr, stop, err := e.Forwarder.Forward(ctx, agent, apiPort(agent))
	if err != nil {
		return fmt.Errorf("reach the podcap agent on node %s: %w", agent.Spec.NodeName, err)
	}
	defer stop()
	serverName := e.AgentServerName
	if serverName == "" {
		serverName = agent.Spec.NodeName
	}
	hc, err := e.HTTPClient(serverName)
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	return fn(&agentClient{base: "https://" + addr, node: agent.Spec.NodeName, http: hc})
}

// joinHostPort is net.JoinHostPort for an int port.
func joinHostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// maxParallelAgents bounds the port-forwards eachAgent keeps open at once.
const maxParallelAgents = 8

// agentTimeout bounds one agent's port-forward and answer in eachAgent.
const agentTimeout = 30 * time.Second

// eachAgent calls fn with a client of each agent, in parallel (at most maxParallelAgents
// tunnels at once, each bounded by agentTimeout). Calls of fn are serialised, so fn may
// collect into the caller's variables; each gets the agent, what it answered and its error
// (reaching the agent, or fn's own). eachAgent returns when every call has.
func eachAgent[T any](ctx context.Context, e *Env, agents []*corev1.Pod, ask func(ctx context.Context, c *agentClient) (T, error),
	collect func(agent *corev1.Pod, answer T, err error)) {
	var (
		mu sync.Mutex // serialises collect
		g  errgroup.Group
	)
	g.SetLimit(maxParallelAgents)
	for _, a := range agents {
		g.Go(func() error {
			actx, cancel := context.WithTimeout(ctx, agentTimeout)
			defer cancel()
			var answer T
			err := e.withAgent(actx, a, func(c *agentClient) (err error) {
				answer, err = ask(actx, c)
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			collect(a, answer, err)
			return nil
		})
	}
	_ = g.Wait()
}
