package cri

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseInfoFixtures(t *testing.T) {
	tests := []struct {
		file string
		want statusInfo
	}{
		{"containerd-1.6-sandbox-ready.json", statusInfo{PID: 10390, NetNSPath: "/var/run/netns/cni-67a80422-641f-358a-d975-3eec84c32efa"}},
		{"containerd-1.6-container-running.json", statusInfo{PID: 10431, NetNSPath: "/proc/10390/ns/net"}},
		{"containerd-1.6-container-exited.json", statusInfo{PID: 0, NetNSPath: "/proc/25471/ns/net"}},
		{"containerd-1.6-sandbox-notready.json", statusInfo{PID: 0, NetNSPath: "/var/run/netns/cni-ac65c135-1633-5dd1-1998-5b4229856fa7"}},
		{"containerd-1.6-sandbox-hostnetwork.json", statusInfo{PID: 27676, NodeNetwork: true}},
		{"crio-sandbox-infra.json", statusInfo{PID: 4242, NetNSPath: "/var/run/netns/0b9d5a3e-6c21-4f7a-9e48-2d1c7b6a5f30"}},
		{"crio-sandbox-dropped-infra.json", statusInfo{PID: 0, NetNSPath: "/var/run/netns/0b9d5a3e-6c21-4f7a-9e48-2d1c7b6a5f30"}},
		{"crio-container-running.json", statusInfo{PID: 4311, NetNSPath: "/var/run/netns/0b9d5a3e-6c21-4f7a-9e48-2d1c7b6a5f30"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseInfo(map[string]string{"info": string(raw)})
			if err != nil {
				t.Fatalf("parseInfo: %v", err)
			}
			if got != tt.want {
				t.Errorf("parseInfo = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseInfoErrors(t *testing.T) {
	tests := []struct {
		name    string
		info    map[string]string
		want    statusInfo
		wantErr string // "" means success
	}{
		{name: "nil map", info: nil, wantErr: `no "info" in verbose status`},
		{name: "other keys only", info: map[string]string{"pid": "1"}, wantErr: `no "info" in verbose status (keys ["pid"])`},
		{name: "not json", info: map[string]string{"info": "pid=12"}, wantErr: "decode verbose info"},
		{name: "truncated", info: map[string]string{"info": `{"pid": 12, "runtimeSpec": {`}, wantErr: "decode verbose info"},
		{name: "pid is a string", info: map[string]string{"info": `{"pid": "12"}`}, wantErr: "decode verbose info"},
		{name: "namespaces not a list", info: map[string]string{"info": `{"pid": 1, "runtimeSpec": {"linux": {"namespaces": {}}}}`}, wantErr: "decode verbose info"},
		{name: "empty object", info: map[string]string{"info": `{}`}, wantErr: `neither "pid" nor "runtimeSpec"`},
		{name: "json null", info: map[string]string{"info": `null`}, wantErr: `neither "pid" nor "runtimeSpec"`},
		{name: "negative pid", info: map[string]string{"info": `{"pid": -1}`}, wantErr: "invalid pid -1"},
		{name: "pid only", info: map[string]string{"info": `{"pid": 7}`}, want: statusInfo{PID: 7}},
		{name: "spec without linux", info: map[string]string{"info": `{"pid": 7, "runtimeSpec": {}}`}, want: statusInfo{PID: 7}},
		{
			name: "first network namespace wins",
			info: map[string]string{"info": `{"pid": 7, "runtimeSpec": {"linux": {"namespaces": [{"type": "ipc", "path": "/x"}, {"type": "network", "path": "/a"}, {"type": "network", "path": "/b"}]}}}`},
			want: statusInfo{PID: 7, NetNSPath: "/a"},
		},
		{
			name: "network namespace without a path: a new one, not pinned",
			info: map[string]string{"info": `{"pid": 7, "runtimeSpec": {"linux": {"namespaces": [{"type": "network"}]}}}`},
			want: statusInfo{PID: 7},
		},
		{
			name: "no namespaces at all: the node's network",
			info: map[string]string{"info": `{"pid": 7, "runtimeSpec": {"linux": {"namespaces": []}}}`},
			want: statusInfo{PID: 7, NodeNetwork: true},
		},
		{
			name: "namespaces not reported: unknown, not the node's",
			info: map[string]string{"info": `{"pid": 7, "runtimeSpec": {"linux": {}}}`},
			want: statusInfo{PID: 7},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseInfo(tt.info)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("parseInfo: %v", err)
				}
				if got != tt.want {
					t.Errorf("parseInfo = %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("parseInfo error = %v, want one containing %q", err, tt.wantErr)
			}
			if strings.Contains(tt.wantErr, `no "info"`) && !errors.Is(err, errNoInfo) {
				t.Errorf("error %v does not wrap errNoInfo", err)
			}
		})
	}
}
