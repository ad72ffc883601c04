// Command blast is the small-UDP load of test/bench: a bounded sendmmsg generator.
//
//	blast -dst 10.213.7.2:9 -l 64 -t 10s   send 64-byte datagrams for 10 s, then print one JSON
//	                                       line {"sent":N,"errors":E,"elapsed_s":S,"pps":X}
//	blast -sink 10.213.7.2:9 -t 15s        bind the port and never read it (the kernel drops the
//	                                       datagrams at the full socket: nothing is sent back)
//
// It only runs in a network namespace without a default route that is not the host's (the
// benchmark's own, joined to nothing but its peer by a veth), only to addresses in
// 10.213.0.0/16, and for at most 60 s: it cannot load anything but the benchmark's veth.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/net/ipv4"
)

// allowed is the only prefix blast sends to or binds in (test/bench/capture.sh's subnets).
var allowed = netip.MustParsePrefix("10.213.0.0/16")

const maxDuration = 60 * time.Second

func main() {
	dst := flag.String("dst", "", "destination ip:port (in "+allowed.String()+")")
	sink := flag.String("sink", "", "bind ip:port (in "+allowed.String()+") and hold it without reading")
	size := flag.Int("l", 64, "UDP payload bytes (1..1472)")
	dur := flag.Duration("t", 10*time.Second, "how long to send (sink: to hold the port), at most 60s")
	batch := flag.Int("batch", 64, "datagrams per sendmmsg (1..1024)")
	flag.Parse()
	if err := run(*dst, *sink, *size, *dur, *batch); err != nil {
		fmt.Fprintln(os.Stderr, "blast:", err)
		os.Exit(1)
	}
}

func run(dst, sink string, size int, dur time.Duration, batch int) error {
	switch {
	case dur <= 0 || dur > maxDuration:
		return fmt.Errorf("-t %v: must be in (0, %v]", dur, maxDuration)
	case size < 1 || size > 1472:
		return fmt.Errorf("-l %d: must be in [1, 1472]", size)
	case batch < 1 || batch > 1024:
		return fmt.Errorf("-batch %d: must be in [1, 1024]", batch)
	case (dst == "") == (sink == ""):
		return errors.New("give exactly one of -dst and -sink")
	}
	if err := isolated(); err != nil {
		return err
	}
	addr := dst + sink
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if !allowed.Contains(ap.Addr()) {
		return fmt.Errorf("address %s: only %s is allowed", ap.Addr(), allowed)
	}
	if sink != "" {
		return hold(ap, dur)
	}
	return send(ap, size, dur, batch)
}

// isolated refuses to run where datagrams could leave the benchmark's veth: in the network
// namespace of PID 1 (when this process may see it) or in any namespace with a default
// route. Without a default route only directly connected subnets are reachable.
func isolated() error {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return fmt.Errorf("read own network namespace: %w", err)
	}
	if host, err := os.Readlink("/proc/1/ns/net"); err == nil && host == self {
		return errors.New("refusing to run in the host's network namespace (use ip netns exec)")
	}
	// /proc/net/route is the calling thread's namespace's IPv4 routing table
	routes, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return fmt.Errorf("read routes: %w", err)
	}
	for _, line := range strings.Split(string(routes), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 7 && f[1] == "00000000" && f[7] == "00000000" {
			return fmt.Errorf("refusing to run in a network namespace with a default route (via %s)", f[0])
		}
	}
	return nil
}

func hold(ap netip.AddrPort, dur time.Duration) error {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(os.Stderr, "blast: sink ready")
	time.Sleep(dur)
	return nil
}

type result struct {
	Sent     int64   `json:"sent"`
	Errors   int64   `json:"errors"`
	Elapsed  float64 `json:"elapsed_s"`
	PPS      float64 `json:"pps"`
	Payload  int     `json:"payload_bytes"`
	LastErr  string  `json:"last_error,omitempty"`
	Deadline float64 `json:"duration_s"`
}

func send(ap netip.AddrPort, size int, dur time.Duration, batch int) error {
	c, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return err
	}
	defer c.Close()
	pc := ipv4.NewPacketConn(c)
	payload := make([]byte, size)
	to := net.UDPAddrFromAddrPort(ap)
	msgs := make([]ipv4.Message, batch)
	for i := range msgs {
		msgs[i] = ipv4.Message{Buffers: [][]byte{payload}, Addr: to}
	}
	r := result{Payload: size, Deadline: dur.Seconds()}
	start := time.Now()
	deadline := start.Add(dur)
	for time.Now().Before(deadline) {
		n, err := pc.WriteBatch(msgs, 0)
		if err != nil {
			r.Errors++
			r.LastErr = err.Error()
		}
		r.Sent += int64(n)
	}
	r.Elapsed = time.Since(start).Seconds()
	r.PPS = float64(r.Sent) / r.Elapsed
	return json.NewEncoder(os.Stdout).Encode(r)
}
