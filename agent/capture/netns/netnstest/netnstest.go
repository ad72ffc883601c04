// Package netnstest makes network namespaces for the capture engines' tests: two namespaces
// joined by a veth, as a pod and its peer. Linux, root.
package netnstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// Dir is where `ip netns add` pins the namespaces.
const Dir = "/var/run/netns"

// Pair is two network namespaces, pinned in Dir, joined by a veth: A has AIP, B has BIP, in
// one /24.
type Pair struct {
	A, B     string // names in Dir
	AIP, BIP net.IP
}

// APath and BPath are the namespaces' files.
func (p *Pair) APath() string { return Dir + "/" + p.A }
func (p *Pair) BPath() string { return Dir + "/" + p.B }

var seq atomic.Int32

// NewPair creates a pair named prefix-<pid>-<n>-a/b with addresses 10.<net>.<n>.1 and .2;
// t.Cleanup deletes the namespaces, also when the test fails half-way.
func NewPair(t testing.TB, prefix string, net2 byte) *Pair {
	t.Helper()
	n := seq.Add(1)
	id := fmt.Sprintf("%d-%d", os.Getpid(), n)
	p := &Pair{
		A:   prefix + "-" + id + "-a",
		B:   prefix + "-" + id + "-b",
		AIP: net.IPv4(10, net2, byte(n), 1).To4(),
		BIP: net.IPv4(10, net2, byte(n), 2).To4(),
	}
	vethA, vethB := fmt.Sprintf("pv%da", n), fmt.Sprintf("pv%db", n) // made in A and B: no clash on the host
	for _, ns := range []string{p.A, p.B} {
		IP(t, "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	IP(t, "link", "add", vethA, "netns", p.A, "type", "veth", "peer", "name", vethB, "netns", p.B)
	for _, c := range []struct{ ns, dev, addr string }{{p.A, vethA, p.AIP.String()}, {p.B, vethB, p.BIP.String()}} {
		IP(t, "-n", c.ns, "addr", "add", c.addr+"/24", "dev", c.dev)
		IP(t, "-n", c.ns, "link", "set", c.dev, "up")
		IP(t, "-n", c.ns, "link", "set", "lo", "up")
	}
	return p
}

// IP runs ip(8) with args; its failure fails the test.
func IP(t testing.TB, args ...string) {
	t.Helper()
	if b, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, b)
	}
}
