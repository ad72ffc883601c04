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
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/podcap/podcap/agent/capture"
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

// netnsPair is two network namespaces (pinned by `ip netns add` in /var/run/netns) joined by
// a veth.
type netnsPair struct {
	a, b     string
	aIP, bIP net.IP
}

func (p *netnsPair) aPath() string { return "/var/run/netns/" + p.a }
func (p *netnsPair) bPath() string { return "/var/run/netns/" + p.b }

var netnsSeq atomic.Int32

// newNetnsPair creates the namespaces; t.Cleanup deletes them, also when the test fails.
func newNetnsPair(t testing.TB) *netnsPair {
	t.Helper()
	n := netnsSeq.Add(1)
	id := fmt.Sprintf("%d-%d", os.Getpid(), n)
	p := &netnsPair{
		a:   "podcap-native-" + id + "-a",
		b:   "podcap-native-" + id + "-b",
		aIP: net.IPv4(10, 214, byte(n), 1).To4(),
		bIP: net.IPv4(10, 214, byte(n), 2).To4(),
	}
	vethA, vethB := fmt.Sprintf("pn%da", n), fmt.Sprintf("pn%db", n)
	for _, ns := range []string{p.a, p.b} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	ipCmd(t, "link", "add", vethA, "netns", p.a, "type", "veth", "peer", "name", vethB, "netns", p.b)
	for _, c := range []struct{ ns, dev, addr string }{{p.a, vethA, p.aIP.String()}, {p.b, vethB, p.bIP.String()}} {
		ipCmd(t, "-n", c.ns, "addr", "add", c.addr+"/24", "dev", c.dev)
		ipCmd(t, "-n", c.ns, "link", "set", c.dev, "up")
		ipCmd(t, "-n", c.ns, "link", "set", "lo", "up")
	}
	return p
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if b, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, b)
	}
}

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
	cmd  *exec.Cmd
	file string
}

// startTcpdump runs `nsenter --net=<ns> tcpdump -i any -U --immediate-mode -Z root -s N -w
// file -- filter` (the tcpdump engine's argv but the file) and returns once it listens.
func startTcpdump(t testing.TB, nsPath string, snaplen int, filter string) *tcpdumpCapture {
	t.Helper()
	if snaplen == 0 {
		snaplen = capture.DefaultSnaplen
	}
	file := t.TempDir() + "/tcpdump.pcap"
	args := []string{"--net=" + nsPath, "tcpdump", "-i", "any", "-U", "--immediate-mode", "-Z", "root",
		"-s", fmt.Sprint(snaplen), "-w", file}
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
	}()
	select {
	case msg := <-listening:
		if msg != "" {
			t.Fatalf("tcpdump: %s", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tcpdump did not start listening within 10s")
	}
	return &tcpdumpCapture{cmd: cmd, file: file}
}

// stop ends tcpdump (SIGTERM: it writes what it captured and exits) and reads its file.
func (c *tcpdumpCapture) stop(t testing.TB) []pkt {
	t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
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
