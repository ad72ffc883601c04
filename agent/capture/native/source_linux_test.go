package native_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

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
		srcs = append(srcs, open(t, e, context.Background(), p.APath(), capture.SourceOptions{}))
	}
	var bad []string
	if !poll(2*time.Second, func() bool { bad = inPod(); return len(bad) == 0 }) {
		t.Fatalf("threads not in the node's namespace %s 2s after the captures opened: %v", host, bad)
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
	src := open(t, e, context.Background(), p.APath(), capture.SourceOptions{Snaplen: 128, Filter: "udp and src host " + p.BIP.String()})
	c := udpConnIn(t, p.BPath())
	for i := range burst {
		if _, err := c.WriteToUDP([]byte{byte(i >> 8), byte(i)}, &net.UDPAddr{IP: p.AIP, Port: 9}); err != nil {
			t.Fatal(err)
		}
	}
	// Stop once the kernel has put the whole burst in the ring: PACKET_STATISTICS counts a
	// packet when it takes its frame, and Stop (unbinding, which waits for every CPU
	// delivering to the socket) lets a copy in progress end.
	waitFor(t, 10*time.Second, "the kernel to count the burst", func() bool {
		src.RequestStats()
		return src.Stats().Received >= burst
	})
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
			src := open(t, e, ctx, p.APath(), capture.SourceOptions{Filter: "udp port 7"}) // no such traffic
			waiting := readersWaiting(t)
			done := make(chan error, 1)
			go func() {
				_, _, err := src.ReadPacket()
				done <- err
			}()
			waitFor(t, 10*time.Second, "ReadPacket to wait for packets", func() bool { return readersWaiting(t) > waiting })
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

// readersWaiting counts the threads of the process that sleep in ppoll(2) on two
// descriptors without a timeout, as ReadPacket waiting for packets does (the socket and the
// wake-up; the Go runtime's own waits are in epoll_pwait, futex and nanosleep).
func readersWaiting(t testing.TB) int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		line, ok := sleepsInPoll(os.Getpid(), tid, 2)
		if f := strings.Fields(line); ok && len(f) > 3 && f[0] == strconv.Itoa(unix.SYS_PPOLL) && f[3] == "0x0" {
			n++
		}
	}
	return n
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
	one := open(t, e, context.Background(), p.APath(), capture.SourceOptions{})
	if got := ringMaps(); got != maps0+1 { // the counts below see a ring left behind
		t.Fatalf("%d ring mappings with one capture open, %d before", got, maps0)
	}
	if err := one.Close(); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	for range n {
		src, err := e.Open(context.Background(), capture.Target{NetNSPath: p.APath()}, capture.SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Close releases the socket and the ring before it returns; the threads that entered
	// the pod's namespace end after (their goroutines exit locked to them).
	var fd1, maps1, th1 int
	back := poll(5*time.Second, func() bool {
		fd1, maps1, th1 = fds(), ringMaps(), threads()
		return fd1 == fd0 && maps1 == maps0 && th1 <= th0+5
	})
	t.Logf("after %d captures: fds %d → %d, ring mappings %d → %d, threads %d → %d", n, fd0, fd1, maps0, maps1, th0, th1)
	if !back {
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
