package tcpdump

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/podcap/podcap/agent/capture"
)

// Defaults of Config.
const (
	DefaultNsenter     = "nsenter"
	DefaultTcpdump     = "tcpdump"
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
	if c.OpenTimeout <= 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	return c
}

// Args returns the argv that captures t with o, given the binaries' paths:
//
//	nsenter -t <pid> -n tcpdump -i any -U --immediate-mode -Z root -s <snaplen> -w - [-- <filter>]
//
// A Target with a PID enters that process' network namespace; one with only a NetNSPath
// uses `nsenter --net=<path>`. When both are set the PID wins: the agent runs with hostPID,
// so /proc/<pid>/ns/net is always visible to it, while a runtime's netns path (under
// /var/run/netns on the host) is visible only if that directory is mounted into the
// agent's container. The filter is one argv element after "--", so it can never be taken
// for an option.
func Args(nsenter, tcpdump string, t capture.Target, o capture.SourceOptions) ([]string, error) {
	args := []string{nsenter}
	switch {
	case t.PID < 0:
		return nil, fmt.Errorf("target pid %d: negative", t.PID)
	case t.PID > 0:
		args = append(args, "-t", strconv.Itoa(t.PID), "-n")
	case t.NetNSPath != "":
		if !filepath.IsAbs(t.NetNSPath) || filepath.Clean(t.NetNSPath) != t.NetNSPath {
			return nil, fmt.Errorf("target netns path %q: not a clean absolute path", t.NetNSPath)
		}
		args = append(args, "--net="+t.NetNSPath)
	default:
		return nil, errors.New("target has neither a pid nor a netns path")
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
	args = append(args, tcpdump, "-i", "any", "-U", "--immediate-mode", "-Z", "root",
		"-s", strconv.Itoa(snaplen), "-w", "-")
	if o.Filter != "" {
		args = append(args, "--", o.Filter)
	}
	return args, nil
}
