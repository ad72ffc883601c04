package tcpdump

import "github.com/podcap/podcap/agent/capture/netns"

// The engine's refusals of a target, owned by package netns (both engines apply them).
var (
	ErrNodeNetwork = netns.ErrNodeNetwork
	ErrWrongNetNS  = netns.ErrWrongNetNS
)
