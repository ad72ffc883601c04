package tcpdump_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/netns"
	"github.com/podcap/podcap/agent/capture/netns/netnstest"
	"github.com/podcap/podcap/agent/capture/tcpdump"
)

// netnsPair is two network namespaces joined by a veth, with a long-lived process in A.
type netnsPair struct {
	*netnstest.Pair
	sleeperPID int // a process in A
}

// newNetnsPair creates the namespaces; t.Cleanup removes them (and the process), also when
// the test fails half-way.
func newNetnsPair(t *testing.T) *netnsPair {
	t.Helper()
	p := &netnsPair{Pair: netnstest.NewPair(t, "podcap-test", 213)}
	p.sleeperPID = sleeperIn(t, p.A)
	return p
}

// sleeperIn starts a long-lived process in the named network namespace and returns its PID
// once it is in there; t.Cleanup kills it (before the namespaces are deleted). It is started
// from a goroutine locked to its thread until then: Pdeathsig follows the forking thread, and
// the runtime ends threads (icmpConnIn's goroutines exit locked), which would kill it early.
func sleeperIn(t *testing.T, ns string) int {
	t.Helper()
	started, done := make(chan error, 1), make(chan struct{})
	sleeper := exec.Command("ip", "netns", "exec", ns, "sleep", "300")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := sleeper.Start()
		started <- err
		if err == nil {
			_ = sleeper.Wait()
		}
		<-done
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sleeper.Process.Kill()
		close(done)
	})
	pid := sleeper.Process.Pid
	// ip execs sleep after entering the namespace: wait until the process is in it.
	want, err := os.Stat("/var/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "sleeper to enter "+ns, func() bool {
		got, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
		return err == nil && os.SameFile(got, want)
	})
	return pid
}

// pin bind-mounts the namespace file src onto a new file dst, as runtimes pin namespaces;
// t.Cleanup unmounts it.
func pin(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s on %s: %v", src, dst, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dst, unix.MNT_DETACH) })
}

func ipCmd(t *testing.T, args ...string) { t.Helper(); netnstest.IP(t, args...) }

// icmpConnIn opens a raw ICMP socket in the network namespace at nsPath (netns.Do: on a
// thread that is never reused).
func icmpConnIn(t *testing.T, nsPath string) net.PacketConn {
	t.Helper()
	f, err := os.Open(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var c net.PacketConn
	if err := netns.Do(f, func() (err error) {
		c, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
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

// A PID target is entered only if its network namespace is its sandbox's: a container PID
// reused by a process of another pod (here: a process in B, the sandbox's in A) is refused.
func TestPIDInAnotherNetnsThanItsSandboxRefused(t *testing.T) {
	needRoot(t)
	e := newEngine(t)
	p := newNetnsPair(t)
	reused := sleeperIn(t, p.B)
	src, err := e.Open(context.Background(), capture.Target{PID: reused, SandboxPID: p.sleeperPID}, capture.SourceOptions{})
	if !errors.Is(err, tcpdump.ErrWrongNetNS) {
		if err == nil {
			src.Close()
		}
		t.Fatalf("Open of a pid outside its sandbox's netns: %v, want ErrWrongNetNS", err)
	}
	// the same pid with its own sandbox is fine
	s := open(t, e, context.Background(), capture.Target{PID: reused, SandboxPID: sleeperIn(t, p.B)}, capture.SourceOptions{})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// A runtime's netns path is entered only if it is a network namespace file inside the netns
// directory: nothing leads out of it (.., symbolic links), and a file there that is not a
// network namespace (a pin that did not propagate into the agent's mount namespace is an
// empty file; another namespace type) is refused before nsenter runs.
func TestNetNSPathChecked(t *testing.T) {
	needRoot(t)
	p := newNetnsPair(t)
	dir := t.TempDir()
	e, err := tcpdump.New(tcpdump.Config{NetNSDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	pin(t, p.APath(), filepath.Join(dir, "sub", "a"))
	pin(t, "/proc/self/ns/uts", filepath.Join(dir, "uts"))
	if err := os.WriteFile(filepath.Join(dir, "unpinned"), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(p.BPath(), filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "escape"), "escapes"},
		{dir + "/sub/../../" + filepath.Base(dir) + "/sub/a", "not a clean absolute path"},
		{p.APath(), "not under " + dir},
		{filepath.Join(dir, "unpinned"), "not a namespace file"},
		{filepath.Join(dir, "uts"), "not a network namespace"},
		{filepath.Join(dir, "gone"), "no such file"},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			src, err := e.Open(context.Background(), capture.Target{NetNSPath: tc.path}, capture.SourceOptions{})
			if err == nil {
				src.Close()
				t.Fatalf("Open(%s) succeeded", tc.path)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open(%s): %v, want %q", tc.path, err, tc.want)
			}
		})
	}
	t.Run("pinned netns inside the dir", func(t *testing.T) {
		src := open(t, e, context.Background(), capture.Target{NetNSPath: filepath.Join(dir, "sub", "a")}, capture.SourceOptions{Filter: "icmp"})
		ping(t, p)
		awaitEcho(t, src, p)
	})
}
