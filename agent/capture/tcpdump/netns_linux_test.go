package tcpdump_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netnsPair is two network namespaces joined by a veth, with a long-lived process in A.
type netnsPair struct {
	a, b       string // names under /var/run/netns
	aIP, bIP   net.IP
	sleeperPID int // a process in A
}

func (p *netnsPair) aPath() string { return "/var/run/netns/" + p.a }
func (p *netnsPair) bPath() string { return "/var/run/netns/" + p.b }

var netnsSeq atomic.Int32

// newNetnsPair creates the namespaces; t.Cleanup removes them (and the process), also when
// the test fails half-way.
func newNetnsPair(t *testing.T) *netnsPair {
	t.Helper()
	n := netnsSeq.Add(1)
	id := fmt.Sprintf("%d-%d", os.Getpid(), n)
	p := &netnsPair{
		a:   "podcap-test-" + id + "-a",
		b:   "podcap-test-" + id + "-b",
		aIP: net.IPv4(10, 213, byte(n), 1).To4(),
		bIP: net.IPv4(10, 213, byte(n), 2).To4(),
	}
	vethA, vethB := "pc"+id+"a", "pc"+id+"b" // at most 15 bytes
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

	sleeper := exec.Command("ip", "netns", "exec", p.a, "sleep", "300")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // runs before the namespaces are deleted
		_ = sleeper.Process.Kill()
		_ = sleeper.Wait()
	})
	p.sleeperPID = sleeper.Process.Pid
	// ip execs sleep after entering the namespace: wait until the process is in it.
	want, err := os.Stat(p.aPath())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "sleeper to enter "+p.a, func() bool {
		got, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", p.sleeperPID))
		return err == nil && os.SameFile(got, want)
	})
	return p
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if b, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, b)
	}
}

// icmpConnIn opens a raw ICMP socket in the network namespace at nsPath. The socket is
// created on a thread moved into that namespace; the thread is never given back to the
// runtime (the goroutine exits locked, so the thread ends with it).
func icmpConnIn(t *testing.T, nsPath string) net.PacketConn {
	t.Helper()
	type result struct {
		c   net.PacketConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(nsPath)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns %s: %w", nsPath, err)}
			return
		}
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		ch <- result{c, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processState returns the state letter of pid from /proc/<pid>/stat ("R", "S", "Z", ...)
// or "" when there is no such process.
func processState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return "?"
}
