package cri

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
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

func TestPickEndpoint(t *testing.T) {
	const containerd, crio = "/run/containerd/containerd.sock", "/var/run/crio/crio.sock"
	tests := []struct {
		name       string
		candidates []string
		files      map[string]fs.FileMode // what exists
		want       string
	}{
		{name: "containerd first", candidates: DefaultEndpoints, files: map[string]fs.FileMode{containerd: fs.ModeSocket, crio: fs.ModeSocket}, want: DefaultEndpoints[0]},
		{name: "only crio", candidates: DefaultEndpoints, files: map[string]fs.FileMode{crio: fs.ModeSocket}, want: DefaultEndpoints[1]},
		{name: "containerd path is a directory", candidates: DefaultEndpoints, files: map[string]fs.FileMode{containerd: fs.ModeDir, crio: fs.ModeSocket}, want: DefaultEndpoints[1]},
		{name: "containerd path is a regular file", candidates: DefaultEndpoints, files: map[string]fs.FileMode{containerd: 0o644}},
		{name: "none", candidates: DefaultEndpoints},
		{name: "plain paths and bad entries", candidates: []string{"tcp://x:1", "relative.sock", crio}, files: map[string]fs.FileMode{crio: fs.ModeSocket}, want: crio},
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
