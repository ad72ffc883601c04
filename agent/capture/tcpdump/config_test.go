package tcpdump

import (
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
