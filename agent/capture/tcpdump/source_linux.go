package tcpdump

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/capture"
)

var _ capture.Source = (*Source)(nil)

// Source is one running nsenter+tcpdump process and its pcap stream. ReadPacket is for one
// goroutine; the other methods may be called from any.
//
// Stopping keeps what tcpdump captured: Stop sends SIGTERM and leaves the pipe to the
// reader. tcpdump (-U, one write per packet) ends its loop, prints its final counters and
// exits, and ReadPacket returns every packet it wrote until the pipe's EOF. If tcpdump
// does not exit, exec sends SIGKILL Config.StopTimeout after the SIGTERM: what it wrote
// before is still read, a record it was killed in the middle of is the end of the stream,
// and what it had not written is lost. Close instead discards whatever is not read yet.
type Source struct {
	log         klog.Logger
	cmd         *exec.Cmd
	pid         int
	cancel      context.CancelFunc // cancels the process' context: exec sends SIGTERM
	stopAfter   func() bool        // unregisters stop from the Open context
	stopTimeout time.Duration
	stdout      *os.File // read end of tcpdump's stdout
	stderr      *os.File // read end of tcpdump's stderr
	r           *pcapgo.Reader
	exited      chan struct{} // closed when the process has been reaped
	stderrDone  chan struct{} // closed when stderr reached EOF or was closed

	counters counters
	tail     tail
	stopping atomic.Bool // stop was called: the process is asked to end
	closing  atomic.Bool // Close was called: ReadPacket returns io.EOF, the pipe is discarded
	ended    atomic.Bool // the pcap stream ended: before any stop, the process is exiting
	ready    atomic.Bool // tcpdump said "listening on": its SIGUSR1 handler is installed

	closeOnce sync.Once
	closeErr  error

	// mu protects the fields below.
	mu          sync.Mutex
	state       *os.ProcessState // set when reaped
	waitErr     error
	exitedAt    time.Time
	stoppedAt   time.Time
	stoppedByUs bool // the process was still running when the stop was asked for
}

func newSource(log klog.Logger, cmd *exec.Cmd, cancel context.CancelFunc, stdout, stderr *os.File, stopTimeout time.Duration) *Source {
	return &Source{
		log:         log,
		cmd:         cmd,
		cancel:      cancel,
		stopTimeout: stopTimeout,
		stdout:      stdout,
		stderr:      stderr,
		exited:      make(chan struct{}),
		stderrDone:  make(chan struct{}),
	}
}

// start starts the process and the goroutines that reap it and read its stderr.
//
// Pdeathsig is sent when the *thread* that forked the child exits, not the process (Go
// issue 27505), and the Go runtime ends a thread when a goroutine locked to it exits
// locked — which code entering namespaces does on purpose. So the process is started and
// waited for by one goroutine locked to its thread for the process' whole life: no other
// goroutine can run on, or end, that thread meanwhile. The thread is given back (unlocked)
// only after the process was reaped. It costs one OS thread per running capture, which the
// process' wait4 would occupy anyway.
func (s *Source) start() error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := s.cmd.Start(); err != nil {
			started <- err
			close(s.exited)
			close(s.stderrDone)
			return
		}
		s.pid = s.cmd.Process.Pid
		go s.readStderr()
		started <- nil
		err := s.cmd.Wait()
		s.mu.Lock()
		s.state, s.waitErr, s.exitedAt = s.cmd.ProcessState, err, time.Now()
		s.mu.Unlock()
		s.log.V(2).Info("Capture process ended", "pid", s.pid, "state", s.cmd.ProcessState.String())
		close(s.exited)
	}()
	return <-started
}

// readStderr parses tcpdump's counters and keeps the tail of everything else. It reads
// until EOF, so tcpdump never blocks on a full stderr pipe.
func (s *Source) readStderr() {
	defer close(s.stderrDone)
	br := bufio.NewReaderSize(s.stderr, 4096)
	for {
		b, err := br.ReadSlice('\n') // a line longer than the buffer comes in pieces
		if line := strings.TrimRight(string(b), "\r\n"); line != "" {
			switch {
			case parseCounters(line, &s.counters):
				s.log.V(5).Info("Capture process counters", "pid", s.pid, "line", line)
			default:
				if strings.Contains(line, "listening on ") {
					s.ready.Store(true)
				}
				s.tail.add(line)
				s.log.V(3).Info("Capture process stderr", "pid", s.pid, "line", line)
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// PID is the process' host PID (nsenter execs tcpdump: same process).
func (s *Source) PID() int { return s.pid }

// LinkType implements capture.Source: LINUX_SLL2 for -i any.
func (s *Source) LinkType() layers.LinkType { return s.r.LinkType() }

// Snaplen implements capture.Source.
func (s *Source) Snaplen() uint32 { return s.r.Snaplen() }

// ReadPacket implements capture.Source. data is the reader's buffer, valid until the next
// call. At the end of the stream it returns io.EOF, also after Stop (or the end of Open's
// context) once every packet tcpdump wrote was returned. A stream that ends within a record
// is an error when the process ended on its own (it died mid-write) and the end after
// Stop (SIGKILL at StopTimeout). After Close it returns io.EOF at once.
func (s *Source) ReadPacket() (gopacket.CaptureInfo, []byte, error) {
	if s.closing.Load() {
		return gopacket.CaptureInfo{}, nil, io.EOF
	}
	data, ci, err := s.r.ZeroCopyReadPacketData()
	if s.closing.Load() {
		// Close drains the pipe concurrently: what was read may be torn.
		return gopacket.CaptureInfo{}, nil, io.EOF
	}
	if err == nil {
		return ci, data, nil
	}
	s.ended.Store(true)
	if errors.Is(err, io.EOF) && ci.CaptureLength > 0 {
		err = io.ErrUnexpectedEOF // a record header without its data (pcapgo says io.EOF)
	}
	switch {
	case errors.Is(err, io.EOF):
		return gopacket.CaptureInfo{}, nil, io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF) && s.stopping.Load():
		s.log.V(2).Info("Capture process stopped within a record; the record is lost", "pid", s.pid)
		return gopacket.CaptureInfo{}, nil, io.EOF
	default:
		return gopacket.CaptureInfo{}, nil, fmt.Errorf("read pcap stream: %w", err)
	}
}

// RequestStats implements capture.Source: it sends tcpdump SIGUSR1, which makes it print
// its counters and go on. Until tcpdump has said it is listening its SIGUSR1 handler may
// not be installed yet (the signal would kill it), so then it does nothing.
func (s *Source) RequestStats() {
	if !s.ready.Load() || s.stopping.Load() {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGUSR1); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.log.V(2).Info("Requesting capture counters failed", "pid", s.pid, "err", err)
	}
}

// Stats implements capture.Source. After Close they are tcpdump's final counters.
func (s *Source) Stats() capture.Stats { return s.counters.stats() }

// Stop implements capture.Source: SIGTERM (SIGKILL after Config.StopTimeout), and the
// packets tcpdump still writes are left to ReadPacket. It does not wait. Nobody reading
// them costs the StopTimeout (tcpdump blocks on the full pipe until killed) unless Close
// follows, which drains the pipe.
func (s *Source) Stop() { s.stop() }

// Close implements capture.Source: Stop if it was not called, discard what was not read
// (tcpdump can then finish and print its final counters even though nobody reads), reap.
// It returns nil if the process was still running when Stop, Close or the end of Open's
// context stopped it; otherwise why the process ended, with the tail of its stderr. It
// may be called more than once, from any goroutine, and returns the same each time.
func (s *Source) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Source) close() error {
	s.stop()
	s.closing.Store(true)
	go func() { _, _ = io.Copy(io.Discard, s.stdout) }() // ends at EOF or when stdout is closed below
	if s.stopAfter != nil {
		s.stopAfter()
	}
	<-s.exited // bounded: exec kills the process StopTimeout after SIGTERM
	select {
	case <-s.stderrDone: // the final counters have been read
	case <-time.After(s.stopTimeout): // someone else holds the pipe open
	}
	s.stdout.Close()
	s.stderr.Close()
	<-s.stderrDone
	return s.result()
}

// stop asks the process to end: SIGTERM through the process' context, and exec's
// WaitDelay sends SIGKILL StopTimeout later. It records whether the process was still
// running, which decides Close's verdict.
func (s *Source) stop() {
	if s.stopping.Swap(true) {
		return
	}
	byUs := !s.hasExited()
	s.mu.Lock()
	s.stoppedByUs, s.stoppedAt = byUs, time.Now()
	s.mu.Unlock()
	s.cancel()
}

// hasExited reports whether the process has ended or is ending: its stdout or stderr
// reached EOF (an exiting process closes them before it becomes a zombie), or waitid with
// WNOWAIT sees a zombie (without reaping it: the reaper's Wait still gets its status).
func (s *Source) hasExited() bool {
	if s.ended.Load() {
		return true
	}
	select {
	case <-s.exited:
		return true
	case <-s.stderrDone:
		return true
	default:
	}
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, s.pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	if err != nil {
		return errors.Is(err, unix.ECHILD) // reaped meanwhile
	}
	return info.Signo != 0 // Linux zeroes info when no child is waitable
}

func (s *Source) result() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := s.state
	if s.stoppedByUs && ps != nil && s.exitedAt.Sub(s.stoppedAt) < s.stopTimeout {
		// Killed by a signal we did not send (we send SIGTERM, and SIGKILL only after
		// stopTimeout): it was dying already when we stopped it.
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() != syscall.SIGTERM {
			s.stoppedByUs = false
		}
	}
	if s.stoppedByUs {
		if ps != nil && !ps.Success() {
			s.log.V(1).Info("Capture process did not exit cleanly when stopped", "pid", s.pid, "state", ps.String())
		}
		return nil
	}
	err := s.waitErr
	if ps != nil {
		err = errExited
		if !ps.Success() {
			err = &exec.ExitError{ProcessState: ps}
		}
	}
	if t := s.tail.String(); t != "" {
		return fmt.Errorf("capture process %d ended: %w; stderr: %s", s.pid, err, t)
	}
	return fmt.Errorf("capture process %d ended: %w", s.pid, err)
}
