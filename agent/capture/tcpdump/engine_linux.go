package tcpdump

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/capture"
)

var _ capture.Engine = (*Engine)(nil)

// Engine opens captures by running nsenter + tcpdump.
type Engine struct {
	cfg Config
}

// New resolves the binaries' paths and returns an engine.
func New(cfg Config) (*Engine, error) {
	cfg = cfg.withDefaults()
	var err error
	if cfg.NsenterPath, err = exec.LookPath(cfg.NsenterPath); err != nil {
		return nil, fmt.Errorf("find nsenter: %w", err)
	}
	if cfg.TcpdumpPath, err = exec.LookPath(cfg.TcpdumpPath); err != nil {
		return nil, fmt.Errorf("find tcpdump: %w", err)
	}
	return &Engine{cfg: cfg}, nil
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
	argv, err := Args(e.cfg.NsenterPath, e.cfg.TcpdumpPath, t, o)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	if !o.HostNetwork && inNodeNetns(t) {
		return nil, fmt.Errorf("open capture: %w", ErrNodeNetwork)
	}
	log := klog.FromContext(ctx)
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("open capture: %w", err)
	}

	// The process lives until Close or the end of ctx, not just for this call: its context
	// keeps ctx's values only, and is cancelled by stop (which also handles ctx ending).
	procCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cmd := exec.CommandContext(procCtx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = outW, errW // our own pipes: Wait never closes what we read
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // signals to the agent's process group do not reach it
		Pdeathsig: syscall.SIGKILL, // see Source.start for the thread caveat
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = e.cfg.StopTimeout

	s := newSource(log, cmd, cancel, outR, errR, e.cfg.StopTimeout)
	err = s.start()
	outW.Close() // the child has its copies
	errW.Close()
	if err != nil {
		cancel()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("open capture: start %s: %w", argv[0], err)
	}
	s.stopAfter = context.AfterFunc(ctx, s.stop)
	log.V(2).Info("Capture process started", "pid", s.pid, "argv", argv)

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
			log.V(2).Info("Capture running", "pid", s.pid, "linkType", h.r.LinkType(), "snaplen", h.r.Snaplen())
			return s, nil
		}
	case <-timer.C:
		openErr = fmt.Errorf("no pcap header within %v", e.cfg.OpenTimeout)
	case <-ctx.Done():
		openErr = ctx.Err()
	}
	// The process failed (or hangs): stop it, reap it, and report what it said.
	if cerr := s.Close(); cerr != nil {
		return nil, fmt.Errorf("open capture: %w", cerr)
	}
	if t := s.tail.String(); t != "" {
		openErr = fmt.Errorf("%w; stderr: %s", openErr, t)
	}
	return nil, fmt.Errorf("open capture: %w", openErr)
}

// errExited is the error of a capture process that ended with status 0 on its own.
var errExited = errors.New("exited with status 0 on its own")
