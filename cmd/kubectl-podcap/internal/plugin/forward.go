package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

// portForwarder tunnels to a pod's port the way `kubectl port-forward` does: a connection to
// the API server's pods/portforward subresource (WebSocket first, SPDY if the server or a
// proxy on the way refuses the upgrade, as kubectl), relayed by the kubelet of the pod's
// node; the local end listens on 127.0.0.1 on a port the kernel picks.
type portForwarder struct {
	cfg  *rest.Config
	rest rest.Interface // the core/v1 REST client
}

var _ Forwarder = (*portForwarder)(nil)

// NewPortForwarder returns the Forwarder of the plugin.
func NewPortForwarder(cfg *rest.Config, core rest.Interface) Forwarder {
	return &portForwarder{cfg: cfg, rest: core}
}

// Forward starts the port-forward, waits until it listens and returns its local address.
func (f *portForwarder) Forward(ctx context.Context, pod *corev1.Pod, port int) (string, func(), error) {
	rt, upgrader, err := spdy.RoundTripperFor(f.cfg)
	if err != nil {
		return "", nil, fmt.Errorf("port-forward: %w", err)
	}
	u := f.rest.Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	spdyDialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	wsDialer, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, f.cfg)
	if err != nil {
		return "", nil, fmt.Errorf("port-forward: %w", err)
	}
	// The WebSocket upgrade is a GET, authorised as "get pods/portforward"; a user granted only
	// "create" (SPDY's POST) is refused it with an upgrade failure, and then goes by SPDY.
	// The predicate must be k8s.io/streaming's: client-go's WebSocket transport returns that
	// package's UpgradeFailureError, which apimachinery's httpstream.IsUpgradeFailure does not
	// recognise (no fallback at all; seen on the test bed).
	dialer := portforward.NewFallbackDialerForStreaming(wsDialer, spdyDialer, func(err error) bool {
		return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
	})
	fctx, cancel := context.WithCancel(ctx)
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreamingWithContext(fctx, dialer, []string{"127.0.0.1"},
		[]string{fmt.Sprintf("0:%d", port)}, ready, io.Discard, io.Discard)
	if err != nil {
		cancel()
		return "", nil, fmt.Errorf("port-forward: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- pf.ForwardPorts() }()
	stop := sync.OnceFunc(func() { cancel(); <-done })
	select {
	case <-ready:
	case err := <-done:
		cancel()
		if err == nil {
			err = errors.New("ended before it was ready")
		}
		return "", nil, fmt.Errorf("port-forward to pod %s/%s: %w", pod.Namespace, pod.Name, err)
	case <-ctx.Done():
		stop()
		return "", nil, fmt.Errorf("port-forward to pod %s/%s: %w", pod.Namespace, pod.Name, context.Cause(ctx))
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		stop()
		return "", nil, fmt.Errorf("port-forward to pod %s/%s: local port: %v", pod.Namespace, pod.Name, err)
	}
	return joinHostPort("127.0.0.1", int(ports[0].Local)), stop, nil
}
