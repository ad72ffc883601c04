package native

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/netns"
)

var _ capture.Engine = (*Engine)(nil)

// Engine opens AF_PACKET captures inside pods' network namespaces.
type Engine struct {
	cfg  Config
	node netns.ID // the node's network namespace: the agent's own (it runs with hostNetwork)
}

// New checks cfg, reads the node's network namespace and returns an engine. tcpdump is
// looked up only when a filter needs it (Open), so that an agent without tcpdump can still
// capture everything.
func New(cfg Config) (*Engine, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := netns.CheckDir(cfg.NetNSDir); err != nil {
		return nil, err
	}
	node, err := netns.Self()
	if err != nil {
		return nil, fmt.Errorf("the node's network namespace: %w", err)
	}
	if err := probe(); err != nil {
		return nil, fmt.Errorf("the native engine cannot capture on this node: %w", err)
	}
	return &Engine{cfg: cfg, node: node}, nil
}

// probe does, in the agent's own network namespace, what every capture needs the privileges
// for: setns into a network namespace (CAP_SYS_ADMIN) and an AF_PACKET socket (CAP_NET_RAW).
// Without them the engine is refused when the agent starts, rather than each capture failing
// at open and retrying.
func probe() error {
	self, err := os.Open("/proc/self/ns/net")
	if err != nil {
		return err
	}
	defer self.Close()
	var sock error
	err = netns.Do(self, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			sock = fmt.Errorf("open an AF_PACKET socket (needs CAP_NET_RAW): %w", err)
			return sock
		}
		return unix.Close(fd)
	})
	if err != nil && sock == nil {
		return fmt.Errorf("%w (setns needs CAP_SYS_ADMIN)", err)
	}
	return err
}

// Open opens a capture of every interface of t's network namespace and returns once the
// socket is bound: packets are captured from then on. The filter is compiled by tcpdump and
// adjusted for the socket first (a filter that cannot be adjusted exactly is refused with
// ErrUntranslatableFilter).
//
// ctx bounds the whole capture: when it is done the capture stops as if Stop had been
// called. Close must be called in any case. ctx's logger is used for the capture's log lines.
func (e *Engine) Open(ctx context.Context, t capture.Target, o capture.SourceOptions) (capture.Source, error) {
	s, err := e.open(ctx, t, o)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	return s, nil
}

func (e *Engine) open(ctx context.Context, t capture.Target, o capture.SourceOptions) (*Source, error) {
	snaplen := o.Snaplen
	if snaplen == 0 {
		snaplen = capture.DefaultSnaplen
	}
	if snaplen < 0 || snaplen > capture.MaxSnaplen {
		return nil, fmt.Errorf("snaplen %d: must be in [1, %d]", snaplen, capture.MaxSnaplen)
	}
	prog := snapProgram(snaplen)
	if o.Filter != "" {
		tcpdump, err := exec.LookPath(e.cfg.TcpdumpPath)
		if err != nil {
			return nil, fmt.Errorf("find tcpdump to compile the filter: %w", err)
		}
		if prog, err = compileFilter(ctx, tcpdump, o.Filter, snaplen); err != nil {
			return nil, err
		}
	}
	nsFile, err := netns.Open(t, e.cfg.NetNSDir, e.node, o.HostNetwork)
	if err != nil {
		return nil, err
	}
	r, err := ringIn(nsFile, e.cfg.RingBytes, snaplen, e.cfg.BlockTimeout, prog)
	nsFile.Close()
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	log := klog.FromContext(ctx)
	s := newSource(log, r, snaplen, wake)
	s.stopAfter = context.AfterFunc(ctx, s.Stop)
	log.V(2).Info("Capture socket open", "netns", nsFile.Name(), "snaplen", snaplen,
		"blocks", r.blocks, "blockSize", r.blockSize, "filterInstructions", len(prog))
	return s, nil
}

// ringIn makes the capture socket in the network namespace nsFile, on a thread that enters it
// and is never reused (netns.Do). The socket keeps the namespace it was made in; reading it
// needs no particular thread.
func ringIn(nsFile *os.File, ringBytes, snaplen int, tov time.Duration, prog []bpf.RawInstruction) (*ring, error) {
	var r *ring
	err := netns.Do(nsFile, func() (err error) {
		r, err = newRing(ringBytes, snaplen, tov, prog)
		return err
	})
	return r, err
}
