package native_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/native"
)

func newEngine(t testing.TB) *native.Engine {
	t.Helper()
	e, err := native.New(native.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func open(t testing.TB, e *native.Engine, ctx context.Context, nsPath string, o capture.SourceOptions) capture.Source {
	t.Helper()
	src, err := e.Open(ctx, capture.Target{NetNSPath: nsPath}, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// netnsOf returns the network namespace of every thread of the process (by thread id).
func netnsOf(t testing.TB) map[string]string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	ns := map[string]string{}
	for _, task := range tasks {
		l, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err == nil { // a thread may end meanwhile
			ns[task.Name()] = l
		}
	}
	return ns
}

// The thread that entered a pod's namespace is never given back to the runtime: once Open
// returned (and after Close), every thread of the process is in the node's namespace, and
// goroutines locking threads afterwards all find themselves there.
func TestSetnsThreadNeverReused(t *testing.T) {
	needRoot(t)
	e := newEngine(t)
	p := newNetnsPair(t)
	host, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	inPod := func() []string {
		var bad []string
		for tid, ns := range netnsOf(t) {
			if ns != host {
				bad = append(bad, tid+" in "+ns)
			}
		}
		return bad
	}
	var srcs []capture.Source
	for range 20 {
		srcs = append(srcs, open(t, e, context.Background(), p.aPath(), capture.SourceOptions{}))
	}
	deadline := time.Now().Add(2 * time.Second)
	for bad := inPod(); len(bad) > 0; bad = inPod() {
		if time.Now().After(deadline) {
			t.Fatalf("threads not in the node's namespace %s 2s after the captures opened: %v", host, bad)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, s := range srcs {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrong []string
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			ns, err := os.Readlink("/proc/thread-self/ns/net")
			if err == nil && ns != host {
				mu.Lock()
				wrong = append(wrong, ns)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(wrong) > 0 || len(inPod()) > 0 {
		t.Fatalf("goroutines ran in %v, threads %v; want only the node's namespace %s", wrong, inPod(), host)
	}
}

// Stop keeps what was captured: a burst sent before Stop is read in full, then io.EOF;
// Received (PACKET_STATISTICS) is what ReadPacket returned.
func TestStopKeepsEveryCapturedPacket(t *testing.T) {
	needRoot(t)
	const burst = 2000
	e := newEngine(t)
	p := newNetnsPair(t)
	src := open(t, e, context.Background(), p.aPath(), capture.SourceOptions{Snaplen: 128, Filter: "udp and src host " + p.bIP.String()})
	c := udpConnIn(t, p.bPath())
	for i := range burst {
		if _, err := c.WriteToUDP([]byte{byte(i >> 8), byte(i)}, &net.UDPAddr{IP: p.aIP, Port: 9}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Millisecond) // the last datagram crosses the veth (a softirq) before Stop
	src.Stop()
	pkts, err := readAll(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := src.ReadPacket(); !errors.Is(err, io.EOF) {
		t.Errorf("ReadPacket after the end: %v, want io.EOF", err)
	}
	if err := src.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	seen := map[int]bool{}
	for _, pk := range pkts {
		udp, _ := gopacket.NewPacket(pk.data, layers.LinkTypeLinuxSLL2, gopacket.Default).Layer(layers.LayerTypeUDP).(*layers.UDP)
		if udp != nil && len(udp.Payload) == 2 {
			seen[int(udp.Payload[0])<<8|int(udp.Payload[1])] = true
		}
	}
	st := src.Stats()
	t.Logf("%d of the burst of %d read after Stop; stats %+v", len(seen), burst, st)
	if len(seen) != burst || st.Captured != burst || st.Received != burst || st.Dropped != 0 {
		t.Errorf("read %d distinct datagrams of %d, stats %+v", len(seen), burst, st)
	}
}

// Close ends a ReadPacket that waits for packets at once (io.EOF), and so does the end of
// Open's context (as Stop: after what was captured).
func TestCloseAndContextEndAReader(t *testing.T) {
	needRoot(t)
	e := newEngine(t)
	p := newNetnsPair(t)
	for _, how := range []string{"Close", "context"} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			src := open(t, e, ctx, p.aPath(), capture.SourceOptions{Filter: "udp port 7"}) // no such traffic
			done := make(chan error, 1)
			go func() {
				_, _, err := src.ReadPacket()
				done <- err
			}()
			time.Sleep(50 * time.Millisecond)
			start := time.Now()
			if how == "Close" {
				if err := src.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			} else {
				cancel()
			}
			select {
			case err := <-done:
				if !errors.Is(err, io.EOF) {
					t.Errorf("ReadPacket: %v, want io.EOF", err)
				}
				t.Logf("ReadPacket returned %v after %v", err, time.Since(start))
			case <-time.After(2 * time.Second):
				t.Fatal("ReadPacket still blocked 2s after " + how)
			}
		})
	}
}

// Opening and closing many captures leaves no file descriptor, ring mapping or thread in the
// pod's namespace behind.
func TestOpenCloseLeaksNothing(t *testing.T) {
	needRoot(t)
	e := newEngine(t)
	p := newNetnsPair(t)
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	ringMaps := func() int {
		b, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "socket:")
	}
	threads := func() int { return len(netnsOf(t)) }
	fd0, maps0, th0 := fds(), ringMaps(), threads()
	one := open(t, e, context.Background(), p.aPath(), capture.SourceOptions{})
	if got := ringMaps(); got != maps0+1 { // the counts below see a ring left behind
		t.Fatalf("%d ring mappings with one capture open, %d before", got, maps0)
	}
	if err := one.Close(); err != nil {
		t.Fatal(err)
	}
	const n = 300
	for range n {
		src, err := e.Open(context.Background(), capture.Target{NetNSPath: p.aPath()}, capture.SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Close(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	fd1, maps1, th1 := fds(), ringMaps(), threads()
	t.Logf("after %d captures: fds %d → %d, ring mappings %d → %d, threads %d → %d", n, fd0, fd1, maps0, maps1, th0, th1)
	if fd1 != fd0 || maps1 != maps0 || th1 > th0+5 {
		t.Errorf("leak after %d captures: fds %d → %d, ring mappings %d → %d, threads %d → %d", n, fd0, fd1, maps0, maps1, th0, th1)
	}
}

// A target in the node's network namespace is refused unless the pod is a hostNetwork pod
// (package netns, as the tcpdump engine).
func TestNodeNetnsRefusedUnlessHostNetwork(t *testing.T) {
	needRoot(t)
	e := newEngine(t)
	_, err := e.Open(context.Background(), capture.Target{PID: os.Getpid()}, capture.SourceOptions{})
	if err == nil || !strings.Contains(err.Error(), "node's network namespace") {
		t.Fatalf("Open in the node's namespace: %v", err)
	}
	src, err := e.Open(context.Background(), capture.Target{PID: os.Getpid()}, capture.SourceOptions{HostNetwork: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
}
