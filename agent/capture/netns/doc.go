// Package netns finds and checks the network namespace a capture enters: the runtime's
// pinned file (confined to the directory where the runtime pins them), the node's own for a
// hostNetwork pod, or a container PID's (checked against its sandbox's). Both capture
// engines open the namespace here, so one set of rules decides where a capture may run.
package netns
