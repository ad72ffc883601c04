package netns_test

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"

	"github.com/podcap/podcap/agent/capture/netns"
)

// TestDoNeverLeavesAThreadInTheNamespace: f runs in the namespace, and afterwards no thread of
// the process is in it, however many goroutines then lock threads (a thread given back to
// the runtime would show up in one of them).
func TestDoNeverLeavesAThreadInTheNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: ip netns add")
	}
	name := "podcap-do-" + strconv.Itoa(os.Getpid())
	if b, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, b)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	path := "/run/netns/" + name
	pod, err := netns.StatID(path)
	if err != nil {
		t.Fatal(err)
	}
	node, err := netns.Self()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range 20 {
		var in netns.ID
		if err := netns.Do(f, func() (err error) { in, err = netns.StatID("/proc/thread-self/ns/net"); return err }); err != nil {
			t.Fatal(err)
		}
		if in != pod {
			t.Fatal("f did not run in the namespace")
		}
	}
	// every thread the runtime hands out now is in the node's namespace
	ids := make(chan netns.ID, 200)
	release := make(chan struct{})
	for range cap(ids) {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			id, _ := netns.StatID("/proc/thread-self/ns/net")
			ids <- id
			<-release
		}()
	}
	for range cap(ids) {
		if id := <-ids; id != node {
			t.Fatal("a thread that entered the namespace was given back to the runtime")
		}
	}
	close(release)
	if self, _ := netns.Self(); self != node {
		t.Fatal("the main thread is in the namespace")
	}
}
