package cri_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2/ktesting"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/cri"
	"github.com/podcap/podcap/agent/cri/critest"
)

const (
	ready    = runtimeapi.PodSandboxState_SANDBOX_READY
	notReady = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	running  = runtimeapi.ContainerState_CONTAINER_RUNNING
	exited   = runtimeapi.ContainerState_CONTAINER_EXITED
	created  = runtimeapi.ContainerState_CONTAINER_CREATED
)

// newClient serves rt and returns a client of it.
func newClient(t *testing.T, rt *critest.Runtime) (*cri.Client, func()) {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	endpoint, stop := critest.Serve(t, rt)
	c, err := cri.New(ctx, "unix://"+endpoint, cri.WithCallTimeout(2*time.Second))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, stop
}

func fixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type pod struct{ namespace, name, uid string }

// twoWebSandboxes are two pods named web in namespaces shop and blog, each with a running
// container (twoWebContainers).
var (
	twoWebSandboxes = []critest.Sandbox{
		{ID: "sb-shop", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 100, NetNSPath: "/var/run/netns/cni-shop"},
		{ID: "sb-blog", Namespace: "blog", Name: "web", UID: "uid-blog", State: ready, CreatedAt: 2, PID: 200, NetNSPath: "/var/run/netns/cni-blog"},
	}
	twoWebContainers = []critest.Container{
		{ID: "c-shop", SandboxID: "sb-shop", Name: "nginx", State: running, CreatedAt: 3, PID: 101},
		{ID: "c-blog", SandboxID: "sb-blog", Name: "nginx", State: running, CreatedAt: 4, PID: 201},
	}
)

func TestResolve(t *testing.T) {
	web := pod{"shop", "web", "uid-web"}
	tests := []struct {
		name       string
		sandboxes  []critest.Sandbox
		containers []critest.Container
		pod        pod
		want       capture.Target
		wantErr    error  // errors.Is target; nil with wantMsg "" means success
		wantMsg    string // substring of the error
	}{
		{
			name:       "ready sandbox and running container",
			sandboxes:  []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 100, NetNSPath: "/var/run/netns/cni-1"}},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2, PID: 101}},
			pod:        web,
			want:       capture.Target{PID: 101, SandboxPID: 100, NetNSPath: "/var/run/netns/cni-1", SandboxID: "sb1", ContainerID: "c1"},
		},
		{
			name: "not-ready sandbox of an earlier attempt is skipped",
			sandboxes: []critest.Sandbox{
				{ID: "sb-old", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 100, NetNSPath: "/var/run/netns/cni-old"},
				{ID: "sb-new", Namespace: "shop", Name: "web", UID: "uid-web", State: notReady, CreatedAt: 5, NetNSPath: "/var/run/netns/cni-new"},
			},
			containers: []critest.Container{
				{ID: "c-old", SandboxID: "sb-old", Name: "nginx", State: running, CreatedAt: 2, PID: 101},
				{ID: "c-new", SandboxID: "sb-new", Name: "nginx", State: exited, CreatedAt: 6},
			},
			pod:  web,
			want: capture.Target{PID: 101, SandboxPID: 100, NetNSPath: "/var/run/netns/cni-old", SandboxID: "sb-old", ContainerID: "c-old"},
		},
		{
			name: "newest of two ready sandboxes",
			sandboxes: []critest.Sandbox{
				{ID: "sb-b", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 100, NetNSPath: "/var/run/netns/cni-b"},
				{ID: "sb-a", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 9, PID: 200, NetNSPath: "/var/run/netns/cni-a"},
			},
			containers: []critest.Container{
				{ID: "c-b", SandboxID: "sb-b", Name: "nginx", State: running, CreatedAt: 2, PID: 101},
				{ID: "c-a", SandboxID: "sb-a", Name: "nginx", State: running, CreatedAt: 10, PID: 201},
			},
			pod:  web,
			want: capture.Target{PID: 201, SandboxPID: 200, NetNSPath: "/var/run/netns/cni-a", SandboxID: "sb-a", ContainerID: "c-a"},
		},
		{
			name: "oldest running container, exited and created ones skipped",
			sandboxes: []critest.Sandbox{
				{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 100, NetNSPath: "/var/run/netns/cni-1"},
			},
			containers: []critest.Container{
				{ID: "c-init", SandboxID: "sb1", Name: "init", State: exited, CreatedAt: 2},
				{ID: "c-sidecar", SandboxID: "sb1", Name: "proxy", State: running, CreatedAt: 4, PID: 104},
				{ID: "c-app", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 3, PID: 103},
				{ID: "c-new", SandboxID: "sb1", Name: "debug", State: created, CreatedAt: 5},
			},
			pod:  web,
			want: capture.Target{PID: 103, SandboxPID: 100, NetNSPath: "/var/run/netns/cni-1", SandboxID: "sb1", ContainerID: "c-app"},
		},
		{
			name: "container that exited after the list is skipped",
			sandboxes: []critest.Sandbox{
				{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 100, NetNSPath: "/var/run/netns/cni-1"},
			},
			containers: []critest.Container{
				// listed as running, but the verbose status has pid 0 (real containerd output of an exited container)
				{ID: "c1", SandboxID: "sb1", Name: "a", State: running, CreatedAt: 2, Info: fixture(t, "containerd-1.6-container-exited.json")},
				{ID: "c2", SandboxID: "sb1", Name: "b", State: running, CreatedAt: 3, PID: 103},
			},
			pod:  web,
			want: capture.Target{PID: 103, SandboxPID: 100, NetNSPath: "/var/run/netns/cni-1", SandboxID: "sb1", ContainerID: "c2"},
		},
		{
			name:       "same name in two namespaces",
			sandboxes:  twoWebSandboxes,
			containers: twoWebContainers,
			pod:        pod{"blog", "web", "uid-blog"},
			want:       capture.Target{PID: 201, SandboxPID: 200, NetNSPath: "/var/run/netns/cni-blog", SandboxID: "sb-blog", ContainerID: "c-blog"},
		},
		{
			name:       "empty uid matches by namespace and name",
			sandboxes:  twoWebSandboxes,
			containers: twoWebContainers,
			pod:        pod{"shop", "web", ""},
			want:       capture.Target{PID: 101, SandboxPID: 100, NetNSPath: "/var/run/netns/cni-shop", SandboxID: "sb-shop", ContainerID: "c-shop"},
		},
		{
			name: "uid mismatch: a recreated pod of the same name",
			sandboxes: []critest.Sandbox{
				{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-old", State: ready, CreatedAt: 1, PID: 100, NetNSPath: "/var/run/netns/cni-1"},
			},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2, PID: 101}},
			pod:        web,
			wantErr:    capture.ErrPodNotFound,
			wantMsg:    "no ready sandbox",
		},
		{
			name:      "only a not-ready sandbox",
			sandboxes: []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: notReady, CreatedAt: 1}},
			pod:       web,
			wantErr:   capture.ErrPodNotFound,
			wantMsg:   "no ready sandbox",
		},
		{
			name:      "ready sandbox, no container yet",
			sandboxes: []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 100, NetNSPath: "/var/run/netns/cni-1"}},
			pod:       web,
			wantErr:   capture.ErrPodNotFound,
			wantMsg:   "no running container in sandbox sb1",
		},
		{
			name:      "ready sandbox, containers exited or only created",
			sandboxes: []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 100, NetNSPath: "/var/run/netns/cni-1"}},
			containers: []critest.Container{
				{ID: "c1", SandboxID: "sb1", Name: "nginx", State: exited, CreatedAt: 2},
				{ID: "c2", SandboxID: "sb1", Name: "proxy", State: created, CreatedAt: 3},
			},
			pod:     web,
			wantErr: capture.ErrPodNotFound,
			wantMsg: "no running container",
		},
		{
			name:      "running container without a pid",
			sandboxes: []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 100, NetNSPath: "/var/run/netns/cni-1"}},
			containers: []critest.Container{
				{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2, PID: 0},
			},
			pod:     web,
			wantErr: capture.ErrPodNotFound,
			wantMsg: "no container with a pid",
		},
		{
			name:    "no such pod",
			pod:     web,
			wantErr: capture.ErrPodNotFound,
		},
		{
			name: "containerd 1.6 real verbose info",
			sandboxes: []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1,
				Info: fixture(t, "containerd-1.6-sandbox-ready.json")}},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "workload", State: running, CreatedAt: 2,
				Info: fixture(t, "containerd-1.6-container-running.json")}},
			pod:  web,
			want: capture.Target{PID: 10431, SandboxPID: 10390, NetNSPath: "/var/run/netns/cni-67a80422-641f-358a-d975-3eec84c32efa", SandboxID: "sb1", ContainerID: "c1"},
		},
		{
			name: "CRI-O with its infra container dropped",
			sandboxes: []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1,
				Info: fixture(t, "crio-sandbox-dropped-infra.json")}},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2,
				Info: fixture(t, "crio-container-running.json")}},
			pod:  web,
			want: capture.Target{PID: 4311, NetNSPath: "/var/run/netns/0b9d5a3e-6c21-4f7a-9e48-2d1c7b6a5f30", SandboxID: "sb1", ContainerID: "c1"},
		},
		{
			name: "host network: the node's network, no netns path",
			sandboxes: []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1,
				Info: fixture(t, "containerd-1.6-sandbox-hostnetwork.json")}},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2, PID: 301,
				Info: `{"pid": 301, "runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}}}`}},
			pod:  web,
			want: capture.Target{PID: 301, SandboxPID: 27676, NodeNetwork: true, SandboxID: "sb1", ContainerID: "c1"},
		},
		{
			name:       "netns path from the container when the sandbox has none",
			sandboxes:  []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, Info: `{"runtimeSpec": {}}`}},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2, Info: `{"pid": 5, "runtimeSpec": {"linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/x"}]}}}`}},
			pod:        web,
			want:       capture.Target{PID: 5, NetNSPath: "/var/run/netns/x", SandboxID: "sb1", ContainerID: "c1"},
		},
		{
			name: "CRI-O with an infra container: path, and the infra's pid for the fallback",
			sandboxes: []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1,
				Info: fixture(t, "crio-sandbox-infra.json")}},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2,
				Info: fixture(t, "crio-container-running.json")}},
			pod:  web,
			want: capture.Target{PID: 4311, SandboxPID: 4242, NetNSPath: "/var/run/netns/0b9d5a3e-6c21-4f7a-9e48-2d1c7b6a5f30", SandboxID: "sb1", ContainerID: "c1"},
		},
		{
			name:       "CRI-O shape from the fake: path from the sandbox, no sandbox pid",
			sandboxes:  []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, NetNSPath: "/var/run/netns/u-1", Shape: critest.CRIO}},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2, PID: 7}},
			pod:        web,
			want:       capture.Target{PID: 7, NetNSPath: "/var/run/netns/u-1", SandboxID: "sb1", ContainerID: "c1"},
		},
		{
			name: "sandbox netns not pinned, container's is /proc/<sandbox pid>: the pid path",
			sandboxes: []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1,
				Info: `{"pid": 40, "runtimeSpec": {"linux": {"namespaces": [{"type": "network"}]}}}`}},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2,
				Info: `{"pid": 41, "runtimeSpec": {"linux": {"namespaces": [{"type": "network", "path": "/proc/40/ns/net"}]}}}`}},
			pod:  web,
			want: capture.Target{PID: 41, SandboxPID: 40, SandboxID: "sb1", ContainerID: "c1"},
		},
		{
			name: "a /proc path in the sandbox's spec is not taken for a pinned file",
			sandboxes: []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1,
				Info: `{"pid": 40, "runtimeSpec": {"linux": {"namespaces": [{"type": "network", "path": "/proc/40/ns/net"}]}}}`}},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2, PID: 41}},
			pod:        web,
			want:       capture.Target{PID: 41, SandboxPID: 40, SandboxID: "sb1", ContainerID: "c1"},
		},
		{
			name: "a path the runtime reports is passed on as it is: the engine confines it",
			sandboxes: []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 40,
				NetNSPath: "/var/run/netns/../../../etc/shadow"}},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2, PID: 41}},
			pod:        web,
			want:       capture.Target{PID: 41, SandboxPID: 40, NetNSPath: "/var/run/netns/../../../etc/shadow", SandboxID: "sb1", ContainerID: "c1"},
		},
		{
			name:       "malformed container info",
			sandboxes:  []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 100}},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2, Info: `{"pid": 101,`}},
			pod:        web,
			wantMsg:    "container status c1: decode verbose info",
		},
		{
			name:       "malformed sandbox info",
			sandboxes:  []critest.Sandbox{{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, Info: `[]`}},
			containers: []critest.Container{{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2, PID: 101}},
			pod:        web,
			wantMsg:    "pod sandbox status sb1: decode verbose info",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := critest.NewRuntime()
			for _, s := range tt.sandboxes {
				rt.AddSandbox(s)
			}
			for _, c := range tt.containers {
				rt.AddContainer(c)
			}
			c, _ := newClient(t, rt)
			_, ctx := ktesting.NewTestContext(t)

			got, err := c.Resolve(ctx, tt.pod.namespace, tt.pod.name, tt.pod.uid)
			if tt.wantErr == nil && tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				if got != tt.want {
					t.Errorf("Resolve = %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Resolve = %+v, want an error", got)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Resolve error %q is not %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && errors.Is(err, capture.ErrPodNotFound) {
				t.Errorf("Resolve error %q wraps ErrPodNotFound, want another error", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Resolve error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

// A runtime that ignores ListPodSandbox/ListContainers filters must not make Resolve pick
// another pod, a not-ready sandbox or a stopped container.
func TestResolveUnfilteredRuntime(t *testing.T) {
	rt := critest.NewRuntime()
	rt.IgnoreFilters(true)
	for _, s := range []critest.Sandbox{
		{ID: "sb-blog", Namespace: "blog", Name: "web", UID: "uid-blog", State: ready, CreatedAt: 9, PID: 200, NetNSPath: "/var/run/netns/cni-blog"},
		{ID: "sb-other-uid", Namespace: "shop", Name: "web", UID: "uid-old", State: ready, CreatedAt: 8, PID: 300, NetNSPath: "/var/run/netns/cni-old"},
		{ID: "sb-notready", Namespace: "shop", Name: "web", UID: "uid-web", State: notReady, CreatedAt: 7},
		{ID: "sb-shop", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 100, NetNSPath: "/var/run/netns/cni-shop"},
	} {
		rt.AddSandbox(s)
	}
	for _, c := range []critest.Container{
		{ID: "a-blog", SandboxID: "sb-blog", Name: "nginx", State: running, CreatedAt: 1, PID: 201},
		{ID: "b-exited", SandboxID: "sb-shop", Name: "init", State: exited, CreatedAt: 2},
		{ID: "c-shop", SandboxID: "sb-shop", Name: "nginx", State: running, CreatedAt: 3, PID: 101},
	} {
		rt.AddContainer(c)
	}
	c, _ := newClient(t, rt)
	_, ctx := ktesting.NewTestContext(t)
	got, err := c.Resolve(ctx, "shop", "web", "uid-web")
	want := capture.Target{PID: 101, SandboxPID: 100, NetNSPath: "/var/run/netns/cni-shop", SandboxID: "sb-shop", ContainerID: "c-shop"}
	if err != nil || got != want {
		t.Fatalf("Resolve = %+v, %v; want %+v", got, err, want)
	}
}

func TestResolveDeadSocket(t *testing.T) {
	rt := critest.NewRuntime()
	rt.AddSandbox(critest.Sandbox{ID: "sb1", Namespace: "shop", Name: "web", UID: "uid-web", State: ready, CreatedAt: 1, PID: 100, NetNSPath: "/var/run/netns/cni-1"})
	rt.AddContainer(critest.Container{ID: "c1", SandboxID: "sb1", Name: "nginx", State: running, CreatedAt: 2, PID: 101})
	c, stop := newClient(t, rt)
	_, ctx := ktesting.NewTestContext(t)
	if _, err := c.Resolve(ctx, "shop", "web", "uid-web"); err != nil {
		t.Fatalf("Resolve before stop: %v", err)
	}

	stop()
	start := time.Now()
	_, err := c.Resolve(ctx, "shop", "web", "uid-web")
	if err == nil {
		t.Fatal("Resolve on a dead socket succeeded")
	}
	if errors.Is(err, capture.ErrPodNotFound) {
		t.Errorf("dead socket reported as ErrPodNotFound: %v", err)
	}
	if !strings.Contains(err.Error(), "list pod sandboxes") || !strings.Contains(err.Error(), "Unavailable") {
		t.Errorf("error %q does not say which call failed and why", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Resolve on a dead socket took %v, want it to fail fast", d)
	}
}

func TestNew(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	t.Run("runtime info", func(t *testing.T) {
		c, _ := newClient(t, critest.NewRuntime())
		if name, version := c.Runtime(); name != "critest" || version != "0" {
			t.Errorf("Runtime() = %q, %q", name, version)
		}
		if !strings.HasSuffix(c.Endpoint(), "/cri.sock") {
			t.Errorf("Endpoint() = %q", c.Endpoint())
		}
	})
	t.Run("no socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "none.sock")
		_, err := cri.New(ctx, path, cri.WithCallTimeout(3*time.Second))
		if err == nil || !strings.Contains(err.Error(), "cri version at "+path) {
			t.Fatalf("New(%s) error = %v, want a cri version error", path, err)
		}
		// Dial does not talk to the runtime: the agent starts, its captures fail and retry
		c, err := cri.Dial(path, cri.WithCallTimeout(time.Second))
		if err != nil {
			t.Fatalf("Dial(%s): %v", path, err)
		}
		defer c.Close()
		if name, _ := c.Runtime(); name != "" {
			t.Errorf("Runtime() = %q before a successful Check", name)
		}
		if _, err := c.Resolve(ctx, "default", "web", ""); err == nil || errors.Is(err, capture.ErrPodNotFound) {
			t.Errorf("Resolve on a dead socket = %v, want a runtime error that is not ErrPodNotFound", err)
		}
	})
	t.Run("bad endpoint", func(t *testing.T) {
		if _, err := cri.New(ctx, "tcp://127.0.0.1:1"); err == nil {
			t.Fatal("New accepted a tcp endpoint")
		}
	})
	t.Run("server stopped before the first call", func(t *testing.T) {
		endpoint, stop := critest.Serve(t, critest.NewRuntime())
		stop()
		if _, err := cri.New(ctx, endpoint, cri.WithCallTimeout(time.Second)); err == nil {
			t.Fatal("New succeeded against a stopped server")
		}
	})
}

// Resolve must stay within the caller's deadline: a cancelled context fails every call.
func TestResolveCancelled(t *testing.T) {
	rt := critest.NewRuntime()
	c, _ := newClient(t, rt)
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := c.Resolve(ctx, "shop", "web", "uid-web")
	if err == nil || errors.Is(err, capture.ErrPodNotFound) || !strings.Contains(err.Error(), "Canceled") {
		t.Fatalf("Resolve with a cancelled context = %v, want a Canceled error", err)
	}
}
