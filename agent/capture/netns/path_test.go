package netns

import (
	"errors"
	"testing"
)

// The runtime's netns path is accepted only below the netns directory: hostile or broken
// paths are refused before anything is opened.
func TestName(t *testing.T) {
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
			got, err := Name(dir, tc.path)
			if tc.want == "" {
				if err == nil || !errors.Is(err, ErrPath) {
					t.Fatalf("Name(%q) = %q, %v; want ErrPath", tc.path, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Name(%q) = %q, %v; want %q", tc.path, got, err, tc.want)
			}
		})
	}
}
