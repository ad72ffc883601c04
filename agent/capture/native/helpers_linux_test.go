package native_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/netns/netnstest"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and AF_PACKET sockets")
	}
	for _, bin := range []string{"ip", "tcpdump", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s: %v", bin, err)
		}
	}
}

// netnsPair is two network namespaces joined by a veth.
type netnsPair = netnstest.Pair

func newNetnsPair(t testing.TB) *netnsPair { return netnstest.NewPair(t, "podcap-native", 214) }

func ipCmd(t testing.TB, args ...string) { t.Helper(); netnstest.IP(t, args...) }

// inNetns runs f on a goroutine whose thread entered the network namespace at nsPath; the
// thread is never given back (the goroutine exits locked). Never the main thread, which the
// runtime would keep, parked in that namespace, for the rest of the test binary.
func inNetns(t testing.TB, nsPath string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go runInNetns(nsPath, f, done)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func runInNetns(nsPath string, f func() error, done chan<- error) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		retry := make(chan error, 1)
		go runInNetns(nsPath, f, retry) // not on this thread: it is locked here
		err := <-retry
		runtime.UnlockOSThread()
		done <- err
		return
	}
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		done <- err
		return
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		done <- fmt.Errorf("setns %s: %w", nsPath, err)
		return
	}
	done <- f()
}

// udpConnIn opens a UDP socket in the namespace at nsPath.
func udpConnIn(t testing.TB, nsPath string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	inNetns(t, nsPath, func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{})
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// tcpdumpCapture is tcpdump running in a namespace with the tcpdump engine's flags, writing
// a file.
type tcpdumpCapture struct {
	cmd     *exec.Cmd
	file    string
	stderr  chan []string // its lines, once it has closed stderr (exited)
	dropped bool          // set by stop: tcpdump reported packets dropped by the kernel
}

// startTcpdump runs `nsenter --net=<ns> tcpdump -i any -U --immediate-mode -Z root -s N -B
// 16384 -w file -- filter` (the tcpdump engine's argv but the file and the buffer) and returns
// once it listens. The reference must not drop: with --immediate-mode libpcap's default 2 MiB
// holds only a few full-snaplen frames, which tcpdumps sharing a busy machine overran; -B
// changes how many packets wait, not which are captured or how.
func startTcpdump(t testing.TB, nsPath string, snaplen int, filter string) *tcpdumpCapture {
	t.Helper()
	if snaplen == 0 {
		snaplen = capture.DefaultSnaplen
	}
	file := t.TempDir() + "/tcpdump.pcap"
	args := []string{"--net=" + nsPath, "tcpdump", "-i", "any", "-U", "--immediate-mode", "-Z", "root",
		"-s", fmt.Sprint(snaplen), "-B", "16384", "-w", file}
	if filter != "" {
		args = append(args, "--", filter)
	}
	cmd := exec.Command("nsenter", args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	listening := make(chan string, 1)
	stderrLines := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		var lines []string
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if !sent && strings.Contains(sc.Text(), "listening on") {
				listening <- ""
				sent = true
			}
		}
		if !sent {
			listening <- strings.Join(lines, "; ")
		}
		stderrLines <- lines
	}()
	select {
	case msg := <-listening:
		if msg != "" {
			t.Fatalf("tcpdump: %s", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tcpdump did not start listening within 10s")
	}
	return &tcpdumpCapture{cmd: cmd, file: file, stderr: stderrLines}
}

// stop waits until tcpdump has written every packet the kernel has given it (caughtUp), ends
// it (SIGTERM: it writes what it captured and exits) and reads its file. Callers end their
// traffic with endTraffic first, so that the kernel has given tcpdump the whole traffic.
func (c *tcpdumpCapture) stop(t testing.TB) []pkt {
	t.Helper()
	c.caughtUp(t)
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select { // stderr first: Wait closes the pipe
	case lines := <-c.stderr:
		for _, l := range lines {
			// Packets tcpdump's ring had no room for are not in its file: say so, as a
			// comparison then fails.
			if strings.Contains(l, "dropped by kernel") && !strings.HasPrefix(l, "0 ") {
				t.Logf("tcpdump: %s", l)
				c.dropped = true
			}
		}
	case <-time.After(10 * time.Second):
		t.Errorf("tcpdump did not exit within 10s of SIGTERM")
	}
	_ = c.cmd.Wait()
	f, err := os.Open(c.file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.LinkType().String(); got != "Linux SLL2" && got != "LinuxSLL2" {
		t.Logf("tcpdump's link type: %v", r.LinkType())
	}
	var pkts []pkt
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return pkts
		}
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, pkt{ci, data})
	}
}

// caughtUp waits until tcpdump sleeps in poll(2) on its socket: it has then written every
// packet the kernel put in its ring. With --immediate-mode libpcap reads a TPACKET_V2 ring,
// and the socket polls readable as long as the newest frame is not handed back; libpcap hands
// a frame back after tcpdump's callback, which with -U has written and flushed the packet to
// the file. A packet delivered later wakes tcpdump at once (the delivery calls the socket's
// data-ready). tcpdump not idle within the deadline is reported, and the test goes on to
// compare what it has.
func (c *tcpdumpCapture) caughtUp(t testing.TB) {
	t.Helper()
	pid := c.cmd.Process.Pid // nsenter execs tcpdump: one process, one thread
	var last string
	if !poll(10*time.Second, func() bool {
		var ok bool
		last, ok = sleepsInPoll(pid, pid, 2)
		return ok
	}) {
		t.Errorf("tcpdump (pid %d) not waiting in poll(2) for packets within 10s; its system call: %q", pid, last)
	}
}

// sleepsInPoll reports whether thread tid of process pid sleeps in poll(2) or ppoll(2) on
// nfds descriptors; it returns /proc/<pid>/task/<tid>/syscall too: "running" while the thread
// runs, else the call's number, its six arguments, the stack and instruction pointers.
func sleepsInPoll(pid, tid, nfds int) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
	if err != nil {
		return err.Error(), false
	}
	line := strings.TrimSpace(string(b))
	f := strings.Fields(line)
	if len(f) < 3 {
		return line, false
	}
	nr, err1 := strconv.ParseInt(f[0], 10, 64)
	n, err2 := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 64)
	return line, err1 == nil && err2 == nil && (nr == unix.SYS_PPOLL || nr == sysPoll) && n == uint64(nfds)
}

// endTraffic ends a traffic from B to A: it sends a last datagram from B's socket c to a
// socket of A's and returns once that socket holds it. A packet reaches a socket after the
// kernel has passed it through the namespace's packet taps (tcpdump's sockets, the native
// engine's), and B's datagrams are processed in the order sent (each queues on the backlog of
// the CPU that sent it, whose softirq runs on the way out of the send): the captures have
// then been given the traffic.
func endTraffic(t testing.TB, p *netnsPair, c *net.UDPConn) {
	t.Helper()
	a := udpConnIn(t, p.APath())
	marker := []byte("podcap: end of the traffic")
	if _, err := c.WriteToUDP(marker, &net.UDPAddr{IP: p.AIP, Port: a.LocalAddr().(*net.UDPAddr).Port}); err != nil {
		t.Fatalf("send the end of the traffic: %v", err)
	}
	if err := a.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2*len(marker))
	for {
		n, _, err := a.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("the end of the traffic did not reach A within 10s: %v", err)
		}
		if string(buf[:n]) == string(marker) {
			return
		}
	}
}

// poll calls cond until it holds or timeout has passed, and reports whether it held. Tests
// wait for events this way, never by sleeping a guessed time.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond) // the polling period
	}
}

// waitFor polls cond (see poll) and fails the test if it does not hold within timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

type pkt struct {
	ci   gopacket.CaptureInfo
	data []byte
}

// readAll reads src until io.EOF, copying each packet.
func readAll(src capture.Source) ([]pkt, error) {
	var pkts []pkt
	for {
		ci, data, err := src.ReadPacket()
		if errors.Is(err, io.EOF) {
			return pkts, nil
		}
		if err != nil {
			return pkts, err
		}
		pkts = append(pkts, pkt{ci, append([]byte(nil), data...)})
	}
}

// readInBackground reads src on a goroutine; wait returns what it read.
func readInBackground(src capture.Source) (wait func() ([]pkt, error)) {
	type res struct {
		pkts []pkt
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		p, err := readAll(src)
		ch <- res{p, err}
	}()
	return func() ([]pkt, error) {
		select {
		case r := <-ch:
			return r.pkts, r.err
		case <-time.After(10 * time.Second):
			return nil, errors.New("ReadPacket did not reach io.EOF within 10s of Stop")
		}
	}
}
