package tcpdump

import (
	"errors"
	"strconv"
	"syscall"

	"github.com/podcap/podcap/agent/capture"
)

// ErrNodeNetwork refuses a target that turns out to be in the node's network namespace while
// the pod is not a hostNetwork pod (a reused PID, a runtime that reports the wrong process):
// the capture would record the whole node's traffic.
var ErrNodeNetwork = errors.New("the target process is in the node's network namespace, not the pod's; " +
	"refusing to capture the whole node's traffic for a pod without hostNetwork")

// inNodeNetns reports whether t's network namespace is the agent's own, which is the node's
// (the agent runs with hostNetwork). A namespace that cannot be looked at is not reported:
// nsenter fails on it with its own message.
func inNodeNetns(t capture.Target) bool {
	path := t.NetNSPath
	if t.PID > 0 {
		path = "/proc/" + strconv.Itoa(t.PID) + "/ns/net"
	}
	if path == "" {
		return false
	}
	var target, self syscall.Stat_t
	if syscall.Stat(path, &target) != nil || syscall.Stat("/proc/self/ns/net", &self) != nil {
		return false
	}
	return target.Dev == self.Dev && target.Ino == self.Ino
}
