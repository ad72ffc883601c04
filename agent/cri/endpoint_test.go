package cri

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSocketPath(t *testing.T) {
	tests := []struct {
		endpoint string
		want     string
		wantErr  string
	}{
		{endpoint: "unix:///run/containerd/containerd.sock", want: "/run/containerd/containerd.sock"},
		{endpoint: "/var/run/crio/crio.sock", want: "/var/run/crio/crio.sock"},
		{endpoint: "unix:///run//containerd/../containerd/containerd.sock", want: "/run/containerd/containerd.sock"},
		{endpoint: "", wantErr: "want unix:///absolute/path"},
		{endpoint: "unix://", wantErr: "want unix:///absolute/path"},
		{endpoint: "run/containerd.sock", wantErr: "want unix:///absolute/path"},
		{endpoint: "unix://run/containerd.sock", wantErr: "want unix:///absolute/path"},
		{endpoint: "tcp://127.0.0.1:1234", wantErr: `unsupported scheme "tcp"`},
		{endpoint: "npipe:////./pipe/containerd-containerd", wantErr: `unsupported scheme "npipe"`},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint, func(t *testing.T) {
			got, err := SocketPath(tt.endpoint)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("SocketPath(%q) = %q, %v; want error containing %q", tt.endpoint, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("SocketPath(%q) = %q, %v; want %q", tt.endpoint, got, err, tt.want)
			}
		})
	}
}

// fakeFileInfo is the part of fs.FileInfo PickEndpoint looks at.
type fakeFileInfo struct{ mode fs.FileMode }

func (f fakeFileInfo) Name() string       { return "x" }
func (f fakeFileInfo) Size() int64        { return 0 }
func (f fakeFileInfo) Mode() fs.FileMode  { return f.mode }
func (f fakeFileInfo) ModTime() time.Time { return time.Time{} }
func (f fakeFileInfo) IsDir() bool        { return f.mode.IsDir() }
func (f fakeFileInfo) Sys() any           { return nil }

// TestDefaultEndpoints pins the default list: every entry parses, none repeats, and the order
// is the documented one (the README's table of runtime sockets).
func TestDefaultEndpoints(t *testing.T) {
	want := []string{
		"unix:///run/k3s/containerd/containerd.sock",
		"unix:///var/snap/microk8s/common/run/containerd.sock",
		"unix:///run/containerd/containerd.sock",
		"unix:///var/run/crio/crio.sock",
	}
	if !slices.Equal(DefaultEndpoints, want) {
		t.Fatalf("DefaultEndpoints = %q, want %q", DefaultEndpoints, want)
	}
	seen := map[string]bool{}
	for _, e := range DefaultEndpoints {
		p, err := SocketPath(e)
		if err != nil {
			t.Fatalf("default endpoint %q: %v", e, err)
		}
		if seen[p] {
			t.Fatalf("default endpoint %q repeats %s", e, p)
		}
		seen[p] = true
	}
}

func TestPickEndpoint(t *testing.T) {
	const (
		k3s        = "/run/k3s/containerd/containerd.sock"
		microk8s   = "/var/snap/microk8s/common/run/containerd.sock"
		containerd = "/run/containerd/containerd.sock"
		crio       = "/var/run/crio/crio.sock"
	)
	sock := func(paths ...string) map[string]fs.FileMode {
		m := map[string]fs.FileMode{}
		for _, p := range paths {
			m[p] = fs.ModeSocket
		}
		return m
	}
	tests := []struct {
		name       string
		candidates []string
		files      map[string]fs.FileMode // what exists
		want       string
	}{
		{name: "containerd before crio", candidates: DefaultEndpoints, files: sock(containerd, crio), want: "unix://" + containerd},
		{name: "only containerd", candidates: DefaultEndpoints, files: sock(containerd), want: "unix://" + containerd},
		{name: "only crio", candidates: DefaultEndpoints, files: sock(crio), want: "unix://" + crio},
		{name: "only k3s", candidates: DefaultEndpoints, files: sock(k3s), want: "unix://" + k3s},
		{name: "k3s beside a Docker containerd", candidates: DefaultEndpoints, files: sock(containerd, k3s), want: "unix://" + k3s},
		{name: "only microk8s", candidates: DefaultEndpoints, files: sock(microk8s), want: "unix://" + microk8s},
		{name: "microk8s beside a Docker containerd", candidates: DefaultEndpoints, files: sock(containerd, microk8s), want: "unix://" + microk8s},
		{name: "k3s before microk8s", candidates: DefaultEndpoints, files: sock(microk8s, k3s), want: "unix://" + k3s},
		{name: "containerd path is a directory", candidates: DefaultEndpoints, files: map[string]fs.FileMode{containerd: fs.ModeDir, crio: fs.ModeSocket}, want: "unix://" + crio},
		{name: "k3s path is a regular file", candidates: DefaultEndpoints, files: map[string]fs.FileMode{k3s: 0o644, containerd: fs.ModeSocket}, want: "unix://" + containerd},
		{name: "containerd path is a regular file", candidates: DefaultEndpoints, files: map[string]fs.FileMode{containerd: 0o644}},
		{name: "none", candidates: DefaultEndpoints},
		{name: "plain paths and bad entries", candidates: []string{"tcp://x:1", "relative.sock", crio}, files: sock(crio), want: crio},
		{name: "no candidates"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stat := func(p string) (fs.FileInfo, error) {
				if m, ok := tt.files[p]; ok {
					return fakeFileInfo{mode: m}, nil
				}
				return nil, fs.ErrNotExist
			}
			got, err := PickEndpoint(tt.candidates, stat)
			if tt.want == "" {
				if !errors.Is(err, ErrNoEndpoint) {
					t.Fatalf("PickEndpoint = %q, %v; want ErrNoEndpoint", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("PickEndpoint = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestPickEndpointRealSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	regular := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	candidates := []string{"unix://" + filepath.Join(dir, "missing.sock"), regular, "unix://" + sock}
	got, err := PickEndpoint(candidates, os.Stat)
	if err != nil || got != candidates[2] {
		t.Fatalf("PickEndpoint = %q, %v; want %q", got, err, candidates[2])
	}
}
