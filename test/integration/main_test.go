// Package integration tests podcap against the real thing: a single-node Kubernetes cluster
// with containerd on this machine (test/testbed), one for the whole package, brought up in
// TestMain and torn down when the package's tests end, also when they fail. If the test binary
// dies (panic, -timeout), the test bed's guard tears the cluster down. Needs root; without it
// every test is skipped.
package integration

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/podcap/podcap/test/testbed"
)

const (
	upTimeout   = 20 * time.Minute // includes building what `cluster.sh build` has not cached
	downTimeout = 5 * time.Minute
)

// bed is the package's cluster, nil when the tests are skipped (skipReason says why).
var (
	bed        *testbed.Cluster
	skipReason string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) (code int) {
	if os.Geteuid() != 0 {
		skipReason = "integration tests need root: they run a Kubernetes node (sudo make test)"
		fmt.Fprintln(os.Stderr, "SKIP:", skipReason)
		return m.Run()
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	cl, err := testbed.Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: test bed up:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "test bed %s up in %s: node %s, subnet %s, CRI %s\n",
		cl.Instance, time.Since(start).Round(time.Millisecond), cl.NodeName, cl.Subnet, cl.CRIEndpoint)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
		defer cancel()
		if err := cl.Stop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: test bed down:", err)
			code = 1
		}
	}()
	bed = cl
	return m.Run()
}

// testBed returns the package's cluster, or skips the test when there is none.
func testBed(t *testing.T) *testbed.Cluster {
	t.Helper()
	if bed == nil {
		t.Skip(skipReason)
	}
	return bed
}
