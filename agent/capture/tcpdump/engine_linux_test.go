package tcpdump_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/tcpdump"
)

// helperEnv makes the test binary a stand-in agent for TestAgentKilledLeavesNoTcpdump.
const helperEnv = "PODCAP_TCPDUMP_TEST_AGENT_NETNS"

func TestMain(m *testing.M) {
	if ns := os.Getenv(helperEnv); ns != "" {
		os.Exit(agentHelper(ns))
	}
	os.Exit(m.Run())
}

// agentHelper opens a capture, prints tcpdump's PID and waits to be killed. Its filter
// matches nothing: tcpdump never writes, so it cannot die of SIGPIPE once the agent is gone,
// only of its parent-death signal.
func agentHelper(nsPath string) int {
	e, err := tcpdump.New(tcpdump.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	src, err := e.Open(context.Background(), capture.Target{NetNSPath: nsPath}, capture.SourceOptions{Filter: "host 192.0.2.99"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(src.(*tcpdump.Source).PID())
	select {}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and runs tcpdump")
	}
}

func newEngine(t *testing.T) *tcpdump.Engine {
	t.Helper()
	e, err := tcpdump.New(tcpdump.Config{OpenTimeout: 10 * time.Second, StopTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func open(t *testing.T, e *tcpdump.Engine, ctx context.Context, target capture.Target, o capture.SourceOptions) *tcpdump.Source {
	t.Helper()
	src, err := e.Open(ctx, target, o)
	if err != nil {
		t.Fatal(err)
	}
	s := src.(*tcpdump.Source)
	t.Cleanup(func() { s.Close() })
	return s
}

// ping sends ICMP echo requests from namespace B to A's address until the test ends.
func ping(t *testing.T, p *netnsPair) {
	t.Helper()
	conn := icmpConnIn(t, p.BPath())
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for seq := uint16(1); ; seq++ {
			msg := &layers.ICMPv4{
				TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0),
				Id:       uint16(os.Getpid()), Seq: seq,
			}
			buf := gopacket.NewSerializeBuffer()
			_ = gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, msg, gopacket.Payload("podcap"))
			_, _ = conn.WriteTo(buf.Bytes(), &net.IPAddr{IP: p.AIP})
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
}

// awaitEcho reads packets until it has seen an echo request from B to A and the reply
// from A to B, decoded from LINUX_SLL2. It closes src on timeout to end the read.
func awaitEcho(t *testing.T, src *tcpdump.Source, p *netnsPair) {
	t.Helper()
	if src.LinkType() != layers.LinkTypeLinuxSLL2 {
		t.Fatalf("link type %v, want LINUX_SLL2 (-i any)", src.LinkType())
	}
	found := make(chan error, 1)
	go func() {
		var request, reply bool
		for !request || !reply {
			_, data, err := src.ReadPacket()
			if err != nil {
				found <- err
				return
			}
			pkt := gopacket.NewPacket(data, layers.LinkTypeLinuxSLL2, gopacket.NoCopy)
			ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			icmp, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if ip == nil || icmp == nil {
				continue
			}
			switch icmp.TypeCode.Type() {
			case layers.ICMPv4TypeEchoRequest:
				request = request || ip.SrcIP.Equal(p.BIP) && ip.DstIP.Equal(p.AIP)
			case layers.ICMPv4TypeEchoReply:
				reply = reply || ip.SrcIP.Equal(p.AIP) && ip.DstIP.Equal(p.BIP)
			}
		}
		found <- nil
	}()
	select {
	case err := <-found:
		if err != nil {
			t.Fatalf("reading packets: %v", err)
		}
	case <-time.After(10 * time.Second):
		src.Close()
		<-found
		t.Fatalf("no echo request %v→%v and reply within 10s", p.BIP, p.AIP)
	}
}

func TestCaptureInPodNetns(t *testing.T) {
	needRoot(t)
	e := newEngine(t)
	p := newNetnsPair(t)
	for _, tc := range []struct {
		name   string
		target capture.Target
	}{
		{"pid", capture.Target{PID: p.sleeperPID}},
		{"pid checked against its sandbox's", capture.Target{PID: p.sleeperPID, SandboxPID: sleeperIn(t, p.A)}},
		{"netns path", capture.Target{NetNSPath: p.APath()}},
		{"netns path wins over a pid elsewhere", capture.Target{NetNSPath: p.APath(), PID: os.Getpid()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Open returns with no traffic at all: tcpdump -U flushes the header at once.
			src := open(t, e, context.Background(), tc.target, capture.SourceOptions{Filter: "icmp"})
			if src.Snaplen() != capture.DefaultSnaplen {
				t.Errorf("snaplen %d", src.Snaplen())
			}
			ping(t, p)
			awaitEcho(t, src, p)

			var mid capture.Stats
			waitFor(t, 10*time.Second, "counters after SIGUSR1", func() bool {
				src.RequestStats()
				mid = src.Stats()
				return mid.Captured > 0 && mid.Received > 0
			})
			pid := src.PID()
			if err := src.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if st := processState(pid); st != "" {
				t.Fatalf("tcpdump %d still there after Close (state %s)", pid, st)
			}
			if final := src.Stats(); final.Captured < mid.Captured || final.Received < mid.Received {
				t.Errorf("final counters %+v below the running ones %+v", final, mid)
			}
			t.Logf("counters: running %+v, final %+v", mid, src.Stats())
			if _, _, err := src.ReadPacket(); !errors.Is(err, io.EOF) {
				t.Errorf("ReadPacket after Close: %v, want io.EOF", err)
			}
		})
	}
}

func TestOpenFails(t *testing.T) {
	needRoot(t)
	e := newEngine(t)
	p := newNetnsPair(t)
	pidMax, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(pidMax)))
	for _, tc := range []struct {
		name   string
		target capture.Target
		opts   capture.SourceOptions
		want   string
	}{
		{"bad filter", capture.Target{PID: p.sleeperPID}, capture.SourceOptions{Filter: "not-a-filter(("}, "can't parse filter expression"},
		{"no such pid", capture.Target{PID: n + 1}, capture.SourceOptions{}, fmt.Sprintf("open /proc/%d/ns/net: no such file", n+1)},
		{"no such netns", capture.Target{NetNSPath: p.APath() + "-gone"}, capture.SourceOptions{}, "open netns " + p.APath() + "-gone: "},
		{"netns path outside the netns dir", capture.Target{NetNSPath: "/proc/self/ns/net"}, capture.SourceOptions{}, "not under /var/run/netns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			src, err := e.Open(context.Background(), tc.target, tc.opts)
			if err == nil {
				src.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v\nwant the message %q", err, tc.want)
			}
			t.Logf("Open failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
		})
	}
}

func TestKilledFromOutside(t *testing.T) {
	needRoot(t)
	e := newEngine(t)
	p := newNetnsPair(t)
	src := open(t, e, context.Background(), capture.Target{PID: p.sleeperPID}, capture.SourceOptions{})
	ping(t, p)
	read := make(chan error, 1)
	go func() {
		for {
			if _, _, err := src.ReadPacket(); err != nil {
				read <- err
				return
			}
		}
	}()
	if err := syscall.Kill(src.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-read:
		t.Logf("ReadPacket after SIGKILL: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("ReadPacket did not end after tcpdump was killed")
	}
	err := src.Close()
	if err == nil || !strings.Contains(err.Error(), "signal: killed") {
		t.Fatalf("Close: %v, want the process' death reported", err)
	}
	if st := processState(src.PID()); st != "" {
		t.Errorf("tcpdump %d still there after Close (state %s)", src.PID(), st)
	}
}

func TestContextEndsCapture(t *testing.T) {
	needRoot(t)
	e := newEngine(t)
	p := newNetnsPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	src := open(t, e, ctx, capture.Target{PID: p.sleeperPID}, capture.SourceOptions{Snaplen: 128})
	if src.Snaplen() != 128 {
		t.Errorf("snaplen %d, want 128", src.Snaplen())
	}
	read := make(chan error, 1)
	go func() {
		for { // the packets tcpdump captured before it stopped, then the end
			if _, _, err := src.ReadPacket(); err != nil {
				read <- err
				return
			}
		}
	}()
	cancel()
	select {
	case err := <-read:
		if !errors.Is(err, io.EOF) {
			t.Errorf("ReadPacket after cancel: %v, want io.EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadPacket did not end after the context was cancelled")
	}
	if err := src.Close(); err != nil {
		t.Fatalf("Close after cancel: %v", err)
	}
	if st := processState(src.PID()); st != "" {
		t.Errorf("tcpdump %d still there after Close (state %s)", src.PID(), st)
	}
}

// TestAgentKilledLeavesNoTcpdump kills a stand-in agent (this test binary) with SIGKILL
// and requires its tcpdump to die too (Pdeathsig).
func TestAgentKilledLeavesNoTcpdump(t *testing.T) {
	needRoot(t)
	p := newNetnsPair(t)
	agent := exec.Command(os.Args[0], "-test.run=^$")
	agent.Env = append(os.Environ(), helperEnv+"="+p.APath())
	agent.Stderr = os.Stderr
	agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("agent helper: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("agent helper printed %q", line)
	}
	if st := processState(pid); st == "" || st == "Z" {
		t.Fatalf("tcpdump %d not running (state %q)", pid, st)
	}
	t.Cleanup(func() { // should it have survived its agent, do not leave it behind
		if processState(pid) != "" {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if err := agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = agent.Wait()
	// Dead is enough: reaping the orphan is init's job.
	waitFor(t, 10*time.Second, fmt.Sprintf("tcpdump %d to die with its agent", pid), func() bool {
		st := processState(pid)
		return st == "" || st == "Z"
	})
}

// A target in the node's network namespace (here: the test's own, like the agent's on a
// node) is refused unless the pod is a hostNetwork pod that may be captured, whichever way
// the target leads there: a PID, a pinned file, or the runtime saying so (NodeNetwork).
func TestNodeNetnsRefusedUnlessHostNetwork(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	pin(t, "/proc/self/ns/net", filepath.Join(dir, "node"))
	e, err := tcpdump.New(tcpdump.Config{NetNSDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []capture.Target{
		{PID: os.Getpid()},
		{NetNSPath: filepath.Join(dir, "node")},
		{NodeNetwork: true, PID: os.Getpid()},
	} {
		if src, err := e.Open(context.Background(), target, capture.SourceOptions{Filter: "icmp"}); !errors.Is(err, tcpdump.ErrNodeNetwork) {
			if err == nil {
				src.Close()
			}
			t.Fatalf("Open(%+v) in the node's network namespace: %v, want ErrNodeNetwork", target, err)
		}
		src := open(t, e, context.Background(), target, capture.SourceOptions{Filter: "icmp", HostNetwork: true})
		if err := src.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	// a pod's own namespace is fine
	p := newNetnsPair(t)
	src := open(t, e, context.Background(), capture.Target{PID: p.sleeperPID}, capture.SourceOptions{Filter: "icmp"})
	if err := src.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
