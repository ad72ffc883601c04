package tcpdump

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/netns"
)

// Defaults of Config.
const (
	DefaultNsenter     = "nsenter"
	DefaultTcpdump     = "tcpdump"
	DefaultNetNSDir    = netns.DefaultDir // where containerd and CRI-O pin pods' network namespaces by default
	DefaultOpenTimeout = 10 * time.Second
	DefaultStopTimeout = 2 * time.Second
)

// Config configures the engine. Zero values mean the defaults.
type Config struct {
	// NsenterPath and TcpdumpPath are the binaries; names without '/' are looked up in
	// $PATH once, by New. tcpdump runs in the host's mount namespace (nsenter -n enters only
	// the network namespace), so the path is the host's (the agent image's) tcpdump.
	NsenterPath string
	TcpdumpPath string
	// NetNSDir is the only directory whose network namespace files (Target.NetNSPath) the
	// engine opens: where the runtime pins them, as the runtime names it (the agent's
	// container mounts it at the same path).
	NetNSDir string
	// OpenTimeout bounds Open: from starting the process to reading the pcap header.
	OpenTimeout time.Duration
	// StopTimeout is how long a stopping capture has between SIGTERM and SIGKILL.
	StopTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.NsenterPath == "" {
		c.NsenterPath = DefaultNsenter
	}
	if c.TcpdumpPath == "" {
		c.TcpdumpPath = DefaultTcpdump
	}
	if c.NetNSDir == "" {
		c.NetNSDir = DefaultNetNSDir
	}
	if c.OpenTimeout <= 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	return c
}

// Args returns the argv that captures with o in the network namespace file netns, given the
// binaries' paths:
//
//	nsenter --net=<netns> tcpdump -i any -U --immediate-mode -Z root -s <snaplen> -w - [-- <filter>]
//
// The engine passes /proc/self/fd/3: the namespace file it opened and checked, inherited by
// nsenter (see Engine.open). The filter is one argv element after "--", so it can never be
// taken for an option.
func Args(nsenter, tcpdump, netns string, o capture.SourceOptions) ([]string, error) {
	if !filepath.IsAbs(netns) || filepath.Clean(netns) != netns {
		return nil, fmt.Errorf("netns path %q: not a clean absolute path", netns)
	}
	snaplen := o.Snaplen
	if snaplen == 0 {
		snaplen = capture.DefaultSnaplen
	}
	if snaplen < 0 || snaplen > capture.MaxSnaplen {
		return nil, fmt.Errorf("snaplen %d: must be in [1, %d]", snaplen, capture.MaxSnaplen)
	}
	if strings.ContainsRune(o.Filter, 0) {
		return nil, errors.New("filter contains NUL")
	}
	args := []string{nsenter, "--net=" + netns, tcpdump, "-i", "any", "-U", "--immediate-mode", "-Z", "root",
		"-s", strconv.Itoa(snaplen), "-w", "-"}
	if o.Filter != "" {
		args = append(args, "--", o.Filter)
	}
	return args, nil
}

// ErrNetNSPath refuses a network namespace path from the runtime that is not a file directly
// or indirectly under Config.NetNSDir (package netns owns the rule).
var ErrNetNSPath = netns.ErrPath
