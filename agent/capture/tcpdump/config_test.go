package tcpdump

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/podcap/podcap/agent/capture"
)

func TestArgs(t *testing.T) {
	common := []string{"/t", "-i", "any", "-U", "--immediate-mode", "-Z", "root"}
	for _, tc := range []struct {
		name    string
		netns   string
		opts    capture.SourceOptions
		want    []string // nil: error
		wantErr string
	}{
		{
			name:  "defaults",
			netns: "/proc/self/fd/3",
			want:  slices.Concat([]string{"/n", "--net=/proc/self/fd/3"}, common, []string{"-s", "262144", "-w", "-"}),
		},
		{
			name:  "snaplen, filter",
			netns: "/var/run/netns/cni-1",
			opts:  capture.SourceOptions{Snaplen: 128, Filter: "tcp port 80"},
			want:  slices.Concat([]string{"/n", "--net=/var/run/netns/cni-1"}, common, []string{"-s", "128", "-w", "-", "--", "tcp port 80"}),
		},
		{
			name:  "filter that looks like an option stays one operand",
			netns: "/proc/self/fd/3",
			opts:  capture.SourceOptions{Filter: "-w /etc/passwd"},
			want:  slices.Concat([]string{"/n", "--net=/proc/self/fd/3"}, common, []string{"-s", "262144", "-w", "-", "--", "-w /etc/passwd"}),
		},
		{name: "no netns", wantErr: "absolute"},
		{name: "relative netns path", netns: "netns/x", wantErr: "absolute"},
		{name: "unclean netns path", netns: "/var/run/netns/../x", wantErr: "absolute"},
		{name: "snaplen too big", netns: "/x", opts: capture.SourceOptions{Snaplen: 262145}, wantErr: "snaplen"},
		{name: "negative snaplen", netns: "/x", opts: capture.SourceOptions{Snaplen: -1}, wantErr: "snaplen"},
		{name: "NUL in filter", netns: "/x", opts: capture.SourceOptions{Filter: "tcp\x00"}, wantErr: "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Args("/n", "/t", tc.netns, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Args() = %q, %v; want error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("Args() = %q, %v\nwant %q", got, err, tc.want)
			}
		})
	}
}

// The runtime's netns path is accepted only below the netns directory: hostile or broken
// paths are refused before anything is opened.
func TestNetNSName(t *testing.T) {
	const dir = "/var/run/netns"
	for _, tc := range []struct {
		path string
		want string // "": refused
	}{
		{"/var/run/netns/cni-67a80422-641f-358a-d975-3eec84c32efa", "cni-67a80422-641f-358a-d975-3eec84c32efa"},
		{"/var/run/netns/sub/x", "sub/x"},
		{"/var/run/netns/..cni", "..cni"},
		{"/var/run/netns/../../../etc/shadow", ""},
		{"/var/run/netns/../netns2/x", ""},
		{"/var/run/netns2/x", ""},
		{"/var/run/netns", ""},
		{"/var/run/netns/", ""},
		{"/var/run/netns/.", ""},
		{"/var/run/netns//x", ""},
		{"/proc/1/ns/net", ""},
		{"/proc/self/ns/net", ""},
		{"cni-1", ""},
		{"var/run/netns/cni-1", ""},
		{"", ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			got, err := netnsName(dir, tc.path)
			if tc.want == "" {
				if err == nil || !errors.Is(err, ErrNetNSPath) {
					t.Fatalf("netnsName(%q) = %q, %v; want ErrNetNSPath", tc.path, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("netnsName(%q) = %q, %v; want %q", tc.path, got, err, tc.want)
			}
		})
	}
}
