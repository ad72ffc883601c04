package plugin

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// probe asks one agent whether it is the one of a pod.
type probe func(ctx context.Context, c *agentClient) (bool, error)

// agentOfPod returns the agent pod on the node of pod ns/name: the node from the pod's
// spec.nodeName or, when the user may not get pods in ns (a Role may grant pods/capture
// alone), the first agent for which is answers true, asking every agent (in parallel,
// bounded).
func (e *Env) agentOfPod(ctx context.Context, ns, name string, is probe) (*corev1.Pod, error) {
	node, err := e.nodeOf(ctx, ns, name)
	if err == nil {
		return e.agentOnNode(ctx, node)
	}
	if !apierrors.IsForbidden(err) {
		return nil, err
	}
	agents, lerr := e.agentPods(ctx, "")
	if lerr != nil {
		return nil, errors.Join(err, lerr)
	}
	var (
		found *corev1.Pod
		errs  []error
	)
	eachAgent(ctx, e, agents, is, func(a *corev1.Pod, ok bool, err error) {
		if ok && found == nil {
			found = a
		}
		if err != nil {
			errs = append(errs, err)
		}
	})
	if found != nil {
		return found, nil
	}
	return nil, fmt.Errorf("pod %s/%s: no agent knows it (you may not get the pod to find its node: %w)", ns, name,
		errors.Join(append([]error{err}, errs...)...))
}

// listsCapture: the agent lists a capture of ns/pod.
func listsCapture(ns, pod string) probe {
	return func(ctx context.Context, c *agentClient) (bool, error) {
		caps, err := c.Captures(ctx, ns)
		for _, cp := range caps {
			if cp.Pod == pod {
				return true, nil
			}
		}
		return false, err
	}
}

// explains: the agent explains ns/pod (the pod is on its node).
func explains(ns, pod string) probe {
	return func(ctx context.Context, c *agentClient) (bool, error) {
		_, err := c.Decision(ctx, ns, pod)
		if IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	}
}
