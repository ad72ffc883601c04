package tcpdump

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/netns"
)

var _ capture.Engine = (*Engine)(nil)

// netnsFD is the network namespace file as nsenter sees it: the engine opens and checks the
// namespace, and nsenter inherits that file as its fd 3 (exec.Cmd.ExtraFiles[0]). Passing the
// open file rather than its path means nsenter enters exactly the namespace that was checked:
// a path could be unmounted and re-pinned, and a PID reused, between the check and nsenter's
// own open. Opening /proc/self/fd/3 needs no ptrace access (it is nsenter's own fd); tcpdump
// keeps the fd (nsenter does not close it), which only pins a namespace it is in anyway.
const netnsFD = "/proc/self/fd/3"

// Engine opens captures by running nsenter + tcpdump.
type Engine struct {
	cfg  Config
	node netns.ID // the node's network namespace: the agent's own (it runs with hostNetwork)
}

// New resolves the binaries' paths, reads the node's network namespace and returns an engine.
func New(cfg Config) (*Engine, error) {
	cfg = cfg.withDefaults()
	var err error
	if cfg.NsenterPath, err = exec.LookPath(cfg.NsenterPath); err != nil {
		return nil, fmt.Errorf("find nsenter: %w", err)
	}
	if cfg.TcpdumpPath, err = exec.LookPath(cfg.TcpdumpPath); err != nil {
		return nil, fmt.Errorf("find tcpdump: %w", err)
	}
	if err := netns.CheckDir(cfg.NetNSDir); err != nil {
		return nil, err
	}
	node, err := netns.Self()
	if err != nil {
		return nil, fmt.Errorf("the node's network namespace: %w", err)
	}
	return &Engine{cfg: cfg, node: node}, nil
}

// Open starts tcpdump in t's network namespace and returns once the pcap header has been
// read from its stdout (tcpdump -U flushes it at once, before any packet), or fails within
// Config.OpenTimeout with tcpdump's or nsenter's own message (bad filter, no such process).
//
// ctx bounds the whole capture, as with exec.CommandContext: when it is done the capture
// stops as if Stop had been called (what tcpdump captured can still be read). Close must be
// called in any case to reap the process and get its verdict. ctx's logger is used for the
// capture's log lines.
func (e *Engine) Open(ctx context.Context, t capture.Target, o capture.SourceOptions) (capture.Source, error) {
	return e.open(ctx, t, o)
}

func (e *Engine) open(ctx context.Context, t capture.Target, o capture.SourceOptions) (*Source, error) {
	argv, err := Args(e.cfg.NsenterPath, e.cfg.TcpdumpPath, netnsFD, o)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	nsFile, err := netns.Open(t, e.cfg.NetNSDir, e.node, o.HostNetwork)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	s, outR, err := e.start(ctx, argv, nsFile)
	nsFile.Close() // nsenter has its copy, or failed
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	klog.FromContext(ctx).V(2).Info("Capture process started", "pid", s.pid, "argv", argv, "netns", targetNetNS(t))
	if err := e.awaitHeader(ctx, s, outR); err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	return s, nil
}

// targetNetNS says which namespace a capture entered, for its log line.
func targetNetNS(t capture.Target) string {
	switch {
	case t.NetNSPath != "":
		return t.NetNSPath
	case t.NodeNetwork:
		return "node"
	default:
		return "/proc/" + strconv.Itoa(t.PID) + "/ns/net"
	}
}

// start starts argv with nsFile as its fd 3 and its stdout and stderr on pipes, and returns
// the running Source and the read end of stdout.
func (e *Engine) start(ctx context.Context, argv []string, nsFile *os.File) (*Source, *os.File, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, nil, err
	}
	// The process lives until Close or the end of ctx, not just for this call: its context
	// keeps ctx's values only, and is cancelled by stop (which also handles ctx ending).
	procCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cmd := exec.CommandContext(procCtx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = outW, errW // our own pipes: Wait never closes what we read
	cmd.ExtraFiles = []*os.File{nsFile} // fd 3: netnsFD
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // signals to the agent's process group do not reach it
		Pdeathsig: syscall.SIGKILL, // see Source.start for the thread caveat
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = e.cfg.StopTimeout

	s := newSource(klog.FromContext(ctx), cmd, cancel, outR, errR, e.cfg.StopTimeout)
	err = s.start()
	outW.Close() // the child has its copies
	errW.Close()
	if err != nil {
		cancel()
		outR.Close()
		errR.Close()
		return nil, nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	s.stopAfter = context.AfterFunc(ctx, s.stop)
	return s, outR, nil
}

// awaitHeader reads the pcap header from outR into s within Config.OpenTimeout. On failure
// it stops and reaps the process and returns what went wrong with the process' stderr.
func (e *Engine) awaitHeader(ctx context.Context, s *Source, outR *os.File) error {
	type header struct {
		r   *pcapgo.Reader
		err error
	}
	hdr := make(chan header, 1)
	go func() {
		r, err := pcapgo.NewReader(outR)
		if err != nil {
			s.ended.Store(true)
		}
		hdr <- header{r, err}
	}()
	timer := time.NewTimer(e.cfg.OpenTimeout)
	defer timer.Stop()
	var openErr error
	select {
	case h := <-hdr:
		switch {
		case h.err != nil:
			openErr = fmt.Errorf("read pcap header: %w", h.err)
		case ctx.Err() != nil:
			openErr = ctx.Err()
		default:
			s.r = h.r
			s.log.V(2).Info("Capture running", "pid", s.pid, "linkType", h.r.LinkType(), "snaplen", h.r.Snaplen())
			return nil
		}
	case <-timer.C:
		openErr = fmt.Errorf("no pcap header within %v", e.cfg.OpenTimeout)
	case <-ctx.Done():
		openErr = ctx.Err()
	}
	// The process failed (or hangs): stop it, reap it, and report what it said.
	if cerr := s.Close(); cerr != nil {
		return cerr
	}
	if t := s.tail.String(); t != "" {
		openErr = fmt.Errorf("%w; stderr: %s", openErr, t)
	}
	return openErr
}

// errExited is the error of a capture process that ended with status 0 on its own.
var errExited = errors.New("exited with status 0 on its own")
