// Command nativecap is capcheck.sh's stand-in for the agent's native engine: it builds the
// engine as the agent does (native.New, which probes setns and AF_PACKET in the agent's own
// namespace) and opens a capture with it in a pod's network namespace, as a capture of the
// agent does (setns by the pinned netns file, AF_PACKET TPACKET_V3, the filter compiled by
// `tcpdump -ddd`). It exits 0 once it has read -count packets from every netns file given,
// with the error otherwise.
//
//	nativecap -netns-dir DIR [-filter EXPR] [-count N] [-timeout D] NETNS_FILE...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/native"
)

func main() {
	dir := flag.String("netns-dir", "/var/run/netns", "the agent's --netns-dir")
	filter := flag.String("filter", "", "capture filter (tcpdump syntax)")
	count := flag.Int("count", 5, "packets to read from each namespace (0: only open it)")
	timeout := flag.Duration("timeout", 20*time.Second, "bound of each capture")
	flag.Parse()
	if err := run(*dir, *filter, *count, *timeout, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "nativecap:", err)
		os.Exit(1)
	}
}

func run(dir, filter string, count int, timeout time.Duration, files []string) error {
	e, err := native.New(native.Config{NetNSDir: dir, RingBytes: native.MinRingBytes})
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := capture1(e, f, filter, count, timeout); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	return nil
}

func capture1(e *native.Engine, file, filter string, count int, timeout time.Duration) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	src, err := e.Open(ctx, capture.Target{NetNSPath: file}, capture.SourceOptions{Filter: filter})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := src.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	for n := 0; n < count; n++ {
		if _, _, err := src.ReadPacket(); err != nil {
			return fmt.Errorf("%d of %d packets: %w", n, count, err)
		}
	}
	fmt.Printf("%s: %d packets (link type %s)\n", file, count, src.LinkType())
	return nil
}
