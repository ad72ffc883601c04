package main

import (
	"context"
	"errors"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// The back-off of the start-up reports: the first after 5 s, then each step doubles, up to
// one a minute. An outage shows at the default verbosity without flooding the log.
const (
	reportFirstStep = 5 * time.Second
	reportMaxStep   = time.Minute
)

// reportUntilReady waits one back-off step (first, doubling up to max), then calls check,
// until it returns nil or ctx ends; each failure is logged once, at the default verbosity,
// as msg with check's error, how long the agent has waited and keysAndValues (which should
// say what to check). It returns when check succeeds or ctx ends.
func reportUntilReady(ctx context.Context, log klog.Logger, clk clock.Clock, first, maxStep time.Duration, check func(context.Context) error,
	msg string, keysAndValues ...any) {
	start := clk.Now()
	step := first
	timer := clk.NewTimer(step)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		}
		err := check(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		log.Error(err, msg, append([]any{"waited", clk.Since(start).Round(time.Second).String()}, keysAndValues...)...)
		step = min(2*step, maxStep)
		timer.Reset(step)
	}
}

// errStillSyncing is the API server report when the server answers the agent's pod list but
// the pod cache has not synced yet (a large list, a slow server).
var errStillSyncing = errors.New("the API server answers a list of this node's pods, the pod cache is still syncing")

// reportAPIServer logs, while the pod cache has not synced, that the agent waits for the
// Kubernetes API server at host, with what to check and the error of probe: the informer's
// own errors are retried inside client-go and logged only at -v=2 or more, so the report
// makes one small request of its own per back-off step (see listNodePods).
func reportAPIServer(ctx context.Context, log klog.Logger, clk clock.Clock, host, kubeconfig string, synced func() bool, probe func(context.Context) error) {
	check := "--kubeconfig " + kubeconfig
	if kubeconfig == "" {
		check = "in-cluster configuration (no --kubeconfig): env KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT and the service account token"
	}
	reportUntilReady(ctx, log, clk, reportFirstStep, reportMaxStep, func(ctx context.Context) error {
		if synced() {
			return nil
		}
		if err := probe(ctx); err != nil {
			return err
		}
		if synced() {
			return nil
		}
		return errStillSyncing
	}, "Waiting for the Kubernetes API server: the pod cache has not synced, the agent is not ready (/readyz 503)",
		"server", host, "check", check+"; that the server is reachable from this node; that the agent may list and watch pods")
}

// probeTimeout bounds the API server report's own request.
const probeTimeout = 10 * time.Second

// listNodePods is the API server report's probe: the informer's request in small (one pod of
// the node), so that its error is the informer's (unreachable, TLS, Unauthorized, Forbidden).
func listNodePods(client kubernetes.Interface, node string) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		_, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node, Limit: 1})
		return err
	}
}

// reportRuntime logs, until the container runtime answers on its CRI socket, that captures
// cannot start, with the socket and what to check.
func reportRuntime(ctx context.Context, log klog.Logger, clk clock.Clock, endpoint string, check func(context.Context) error) {
	reportUntilReady(ctx, log, clk, reportFirstStep, reportMaxStep, check, runtimeMessage, "endpoint", endpoint, "check", runtimeCheck)
}

// The runtime report, at start and then once per back-off step.
const (
	runtimeMessage = "Container runtime not answering on its CRI socket: captures cannot start until it does"
	runtimeCheck   = "--cri-endpoint (the socket must exist on the node and be mounted into the agent's pod)"
)
