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
		target  capture.Target
		opts    capture.SourceOptions
		want    []string // nil: error
		wantErr string
	}{
		{
			name:   "pid",
			target: capture.Target{PID: 42},
			want:   slices.Concat([]string{"/n", "-t", "42", "-n"}, common, []string{"-s", "262144", "-w", "-"}),
		},
		{
			name:   "netns path, snaplen, filter",
			target: capture.Target{NetNSPath: "/var/run/netns/cni-1"},
			opts:   capture.SourceOptions{Snaplen: 128, Filter: "tcp port 80"},
			want:   slices.Concat([]string{"/n", "--net=/var/run/netns/cni-1"}, common, []string{"-s", "128", "-w", "-", "--", "tcp port 80"}),
		},
		{
			name:   "pid wins over netns path",
			target: capture.Target{PID: 7, NetNSPath: "/var/run/netns/x"},
			want:   slices.Concat([]string{"/n", "-t", "7", "-n"}, common, []string{"-s", "262144", "-w", "-"}),
		},
		{
			name:   "filter that looks like an option stays one operand",
			target: capture.Target{PID: 7},
			opts:   capture.SourceOptions{Filter: "-w /etc/passwd"},
			want:   slices.Concat([]string{"/n", "-t", "7", "-n"}, common, []string{"-s", "262144", "-w", "-", "--", "-w /etc/passwd"}),
		},
		{name: "no target", wantErr: "neither"},
		{name: "negative pid", target: capture.Target{PID: -1}, wantErr: "negative"},
		{name: "relative netns path", target: capture.Target{NetNSPath: "netns/x"}, wantErr: "absolute"},
		{name: "unclean netns path", target: capture.Target{NetNSPath: "/var/run/netns/../x"}, wantErr: "absolute"},
		{name: "snaplen too big", target: capture.Target{PID: 1}, opts: capture.SourceOptions{Snaplen: 262145}, wantErr: "snaplen"},
		{name: "negative snaplen", target: capture.Target{PID: 1}, opts: capture.SourceOptions{Snaplen: -1}, wantErr: "snaplen"},
		{name: "NUL in filter", target: capture.Target{PID: 1}, opts: capture.SourceOptions{Filter: "tcp\x00"}, wantErr: "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Args("/n", "/t", tc.target, tc.opts)
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
