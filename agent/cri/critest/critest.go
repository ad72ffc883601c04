// Package critest is an in-memory CRI runtime service for tests. It serves, over a real gRPC
// server on a unix socket, the calls podcap's CRI client makes: Version, ListPodSandbox,
// PodSandboxStatus, ListContainers and ContainerStatus, with the runtime's filtering (id,
// state, sandbox, labels) and verbose "info" documents in containerd's or CRI-O's shape
// (Sandbox.Shape) unless a test supplies its own. Everything else answers Unimplemented.
package critest

import (
	"context"
	"encoding/json"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The labels kubelet puts on sandboxes and containers (k8s.io/kubelet/pkg/types).
const (
	LabelPodName       = "io.kubernetes.pod.name"
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelPodUID        = "io.kubernetes.pod.uid"
	LabelContainerName = "io.kubernetes.container.name"
)

// Shape is the runtime whose verbose "info" documents the fake builds.
type Shape int

const (
	// Containerd (containerd 1.6+): a sandbox's spec names its pinned netns file (none for
	// a hostNetwork pod, NetNSPath ""), a container's names /proc/<sandbox pid>/ns/net.
	Containerd Shape = iota
	// CRIO (CRI-O with drop_infra_ctr, its default): a sandbox has no "pid" (unless PID is
	// set: an infra container), and its containers' specs name the sandbox's pinned netns file.
	CRIO
)

// Sandbox is a pod sandbox as the fake runtime holds it.
type Sandbox struct {
	ID                   string
	Namespace, Name, UID string
	State                runtimeapi.PodSandboxState
	CreatedAt            int64 // nanoseconds, as CRI reports it
	PID                  int
	NetNSPath            string // "": a hostNetwork sandbox (no network namespace in its spec)
	Shape                Shape
	// Info is the verbose "info" document returned as is; "" builds one in Shape's shape
	// from PID and NetNSPath.
	Info string
}

// Container is a container as the fake runtime holds it.
type Container struct {
	ID, SandboxID, Name string
	State               runtimeapi.ContainerState
	CreatedAt           int64
	PID                 int
	// Info is the verbose "info" document returned as is; "" builds one in containerd's
	// shape from PID and the sandbox's network namespace.
	Info string
}

// Runtime is the fake runtime service. Add sandboxes and containers before or while serving.
type Runtime struct {
	runtimeapi.UnimplementedRuntimeServiceServer

	// mu protects the fields below.
	mu            sync.Mutex
	sandboxes     map[string]Sandbox
	containers    map[string]Container
	ignoreFilters bool
}

var _ runtimeapi.RuntimeServiceServer = (*Runtime)(nil)

// NewRuntime returns an empty runtime.
func NewRuntime() *Runtime {
	return &Runtime{sandboxes: map[string]Sandbox{}, containers: map[string]Container{}}
}

// AddSandbox adds or replaces a sandbox.
func (r *Runtime) AddSandbox(s Sandbox) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sandboxes[s.ID] = s
}

// AddContainer adds or replaces a container.
func (r *Runtime) AddContainer(c Container) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.containers[c.ID] = c
}

// IgnoreFilters makes the List calls return everything, like a runtime that does not apply
// (some of) the filter: clients must not trust the filter alone.
func (r *Runtime) IgnoreFilters(ignore bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ignoreFilters = ignore
}

// Serve serves r on a unix socket in a new temporary directory and returns the socket path
// and a func that stops the server and removes the socket (also run at test cleanup).
func Serve(t testing.TB, r *Runtime) (endpoint string, stop func()) {
	t.Helper()
	// A short directory of its own: t.TempDir() can push a socket path past the 108-byte limit.
	dir, err := os.MkdirTemp("", "critest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	endpoint = filepath.Join(dir, "cri.sock")
	lis, err := net.Listen("unix", endpoint)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, r)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Stop()
			<-done
			os.Remove(endpoint)
		})
	}
	t.Cleanup(stop)
	return endpoint, stop
}

// Version reports a CRI v1 runtime named "critest".
func (r *Runtime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "critest", RuntimeVersion: "0", RuntimeApiVersion: "v1"}, nil
}

// ListPodSandbox lists the sandboxes that pass the filter, in id order.
func (r *Runtime) ListPodSandbox(_ context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := req.GetFilter()
	resp := &runtimeapi.ListPodSandboxResponse{}
	for _, id := range slices.Sorted(maps.Keys(r.sandboxes)) {
		s := r.sandboxes[id]
		if !r.ignoreFilters && !sandboxPasses(f, s) {
			continue
		}
		resp.Items = append(resp.Items, &runtimeapi.PodSandbox{
			Id:        s.ID,
			Metadata:  s.metadata(),
			State:     s.State,
			CreatedAt: s.CreatedAt,
			Labels:    s.labels(),
		})
	}
	return resp, nil
}

// PodSandboxStatus returns a sandbox's status, with its "info" document when verbose.
func (r *Runtime) PodSandboxStatus(_ context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sandboxes[req.GetPodSandboxId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "sandbox %q not found", req.GetPodSandboxId())
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{
		Id:        s.ID,
		Metadata:  s.metadata(),
		State:     s.State,
		CreatedAt: s.CreatedAt,
		Labels:    s.labels(),
	}}
	if req.GetVerbose() {
		info := s.Info
		if info == "" {
			info = verboseInfo(s.Shape == CRIO && s.PID == 0, s.PID, s.NetNSPath)
		}
		resp.Info = map[string]string{"info": info}
	}
	return resp, nil
}

// ListContainers lists the containers that pass the filter, in id order.
func (r *Runtime) ListContainers(_ context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := req.GetFilter()
	resp := &runtimeapi.ListContainersResponse{}
	for _, id := range slices.Sorted(maps.Keys(r.containers)) {
		c := r.containers[id]
		if !r.ignoreFilters && !containerPasses(f, c, r.containerLabelsLocked(c)) {
			continue
		}
		resp.Containers = append(resp.Containers, &runtimeapi.Container{
			Id:           c.ID,
			PodSandboxId: c.SandboxID,
			Metadata:     &runtimeapi.ContainerMetadata{Name: c.Name},
			State:        c.State,
			CreatedAt:    c.CreatedAt,
			Labels:       r.containerLabelsLocked(c),
		})
	}
	return resp, nil
}

// ContainerStatus returns a container's status, with its "info" document when verbose.
func (r *Runtime) ContainerStatus(_ context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[req.GetContainerId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "container %q not found", req.GetContainerId())
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{
		Id:        c.ID,
		Metadata:  &runtimeapi.ContainerMetadata{Name: c.Name},
		State:     c.State,
		CreatedAt: c.CreatedAt,
		Labels:    r.containerLabelsLocked(c),
	}}
	if req.GetVerbose() {
		info := c.Info
		if info == "" {
			sb := r.sandboxes[c.SandboxID]
			netns := sb.NetNSPath // CRI-O: the pinned file
			if sb.Shape == Containerd {
				netns = ""
				if sb.PID > 0 {
					netns = "/proc/" + strconv.Itoa(sb.PID) + "/ns/net"
				}
			}
			info = verboseInfo(false, c.PID, netns)
		}
		resp.Info = map[string]string{"info": info}
	}
	return resp, nil
}

func (s Sandbox) labels() map[string]string {
	return map[string]string{LabelPodName: s.Name, LabelPodNamespace: s.Namespace, LabelPodUID: s.UID}
}

func (s Sandbox) metadata() *runtimeapi.PodSandboxMetadata {
	return &runtimeapi.PodSandboxMetadata{Name: s.Name, Namespace: s.Namespace, Uid: s.UID}
}

// containerLabelsLocked returns a container's labels: its pod's and its name.
func (r *Runtime) containerLabelsLocked(c Container) map[string]string {
	l := r.sandboxes[c.SandboxID].labels()
	l[LabelContainerName] = c.Name
	return l
}

func sandboxPasses(f *runtimeapi.PodSandboxFilter, s Sandbox) bool {
	return (f.GetId() == "" || f.GetId() == s.ID) &&
		(f.GetState() == nil || f.GetState().GetState() == s.State) &&
		matches(f.GetLabelSelector(), s.labels())
}

func containerPasses(f *runtimeapi.ContainerFilter, c Container, labels map[string]string) bool {
	return (f.GetId() == "" || f.GetId() == c.ID) &&
		(f.GetPodSandboxId() == "" || f.GetPodSandboxId() == c.SandboxID) &&
		(f.GetState() == nil || f.GetState().GetState() == c.State) &&
		matches(f.GetLabelSelector(), labels)
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// verboseInfo builds the part of a runtime's verbose info that matters to podcap: "pid"
// (left out when noPID) and the spec's namespaces, with a network one when netns is set.
func verboseInfo(noPID bool, pid int, netns string) string {
	ns := []map[string]string{{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}}
	if netns != "" {
		ns = append(ns, map[string]string{"type": "network", "path": netns})
	}
	doc := map[string]any{"runtimeSpec": map[string]any{"linux": map[string]any{"namespaces": ns}}}
	if !noPID {
		doc["pid"] = pid
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err) // a map of strings and ints always marshals
	}
	return string(b)
}
