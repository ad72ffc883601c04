package cri

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// DefaultCallTimeout bounds each CRI call when no WithCallTimeout is given.
const DefaultCallTimeout = 5 * time.Second

// maxRecvMsgSize is kubelet's limit for CRI responses: ListContainers on a busy node and
// verbose statuses (whole OCI specs) outgrow gRPC's 4 MiB default.
const maxRecvMsgSize = 16 << 20

// connectBackoff replaces gRPC's default reconnect backoff (1 s base), which delays the first
// call after a runtime restart by about a second; a unix socket connects in microseconds.
var connectBackoff = backoff.Config{
	BaseDelay:  20 * time.Millisecond,
	Multiplier: 1.6,
	Jitter:     0.2,
	MaxDelay:   time.Second,
}

// Client talks to one container runtime through its CRI socket. It is safe for concurrent
// use.
type Client struct {
	endpoint string
	timeout  time.Duration
	conn     *grpc.ClientConn
	rt       runtimeapi.RuntimeServiceClient

	mu sync.Mutex
	// mu protects the field below.
	version *runtimeapi.VersionResponse // from the last successful Check; nil before
}

// Option configures a Client.
type Option func(*Client)

// WithCallTimeout bounds each CRI call (not a whole Resolve, which makes four); d <= 0 keeps
// DefaultCallTimeout.
func WithCallTimeout(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// New connects to the CRI runtime service at endpoint ("unix:///path" or "/path") and checks
// that it answers Version on CRI v1, so a wrong endpoint fails at once. Close the client when
// done.
func New(ctx context.Context, endpoint string, opts ...Option) (*Client, error) {
	c, err := Dial(endpoint, opts...)
	if err != nil {
		return nil, err
	}
	if err := c.Check(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// Dial prepares a client for the CRI runtime service at endpoint without talking to it: a
// runtime that is down (restarting) now is reached when it is back. The agent uses it so that
// a dead CRI socket fails captures (with Events and metrics), not the agent.
func Dial(endpoint string, opts ...Option) (*Client, error) {
	path, err := SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	c := &Client{endpoint: path, timeout: DefaultCallTimeout}
	for _, o := range opts {
		o(c)
	}
	conn, err := grpc.NewClient("unix://"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: connectBackoff, MinConnectTimeout: c.timeout}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
	)
	if err != nil {
		return nil, fmt.Errorf("cri client %s: %w", path, err)
	}
	c.conn = conn
	c.rt = runtimeapi.NewRuntimeServiceClient(conn)
	return c, nil
}

// Check asks the runtime for its Version on CRI v1 and remembers it (see Runtime).
func (c *Client) Check(ctx context.Context) error {
	v, err := call(ctx, c, c.rt.Version, &runtimeapi.VersionRequest{})
	if err != nil {
		return fmt.Errorf("cri version at %s: %w", c.endpoint, err)
	}
	c.mu.Lock()
	c.version = v
	c.mu.Unlock()
	klog.FromContext(ctx).Info("Connected to the container runtime", "endpoint", c.endpoint,
		"runtime", v.GetRuntimeName(), "runtimeVersion", v.GetRuntimeVersion(), "criVersion", v.GetRuntimeApiVersion())
	return nil
}

// Runtime returns the runtime's name and version as it reported them when the client
// was last checked (e.g. "containerd", "1.6.20~ds1"); empty before a successful Check.
func (c *Client) Runtime() (name, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version.GetRuntimeName(), c.version.GetRuntimeVersion()
}

// Endpoint returns the socket path the client talks to.
func (c *Client) Endpoint() string { return c.endpoint }

// Close releases the connection.
func (c *Client) Close() error {
	return c.conn.Close()
}

// call runs one CRI call under the client's per-call timeout.
func call[Req, Resp any](ctx context.Context, c *Client, f func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return f(ctx, req)
}
